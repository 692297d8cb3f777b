//! Scenario 4, node loss: the node running the most `web` replicas has its
//! underlay link cut (it loses its peers and etcd at once). Its lease ends,
//! and its replicas must leave every other node's DNS and balancer within
//! the lease TTL + 1 s of the cut, while request loops through the other
//! nodes' published ports keep being answered. Its replica slots are then
//! taken over by the surviving nodes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use shoal_tests::cluster::wait_for;

use crate::common::{busiest, deploy_web, mesh_traffic, ms, placement, serial, start, NET, TTL};

#[test]
fn s4_node_loss_its_replicas_leave_within_the_lease_ttl() {
    let _one = serial();
    let mut c = start();
    let (_, tasks) = deploy_web(&c, 4);
    let dead = busiest(&c, &tasks);
    let dead_name = c.node(dead).name.clone();
    let others: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    let lost: BTreeSet<Ipv4Addr> = tasks
        .iter()
        .filter(|t| t.node == dead_name)
        .map(|t| t.ip)
        .collect();
    println!("cutting {dead_name}, which runs {lost:?}");

    let loops: Vec<_> = others
        .iter()
        .map(|i| mesh_traffic(&c, *i, Duration::from_secs(60)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let cut = Instant::now();
    c.cut(dead);
    // For each other node: when its DNS and its balancer stopped naming
    // any of the lost replicas.
    let mut dns_gone: Vec<Option<Duration>> = vec![None; others.len()];
    let mut lb_gone: Vec<Option<Duration>> = vec![None; others.len()];
    let limit = TTL + Duration::from_secs(10);
    while cut.elapsed() < limit
        && (dns_gone.iter().any(Option::is_none) || lb_gone.iter().any(Option::is_none))
    {
        for (k, i) in others.iter().enumerate() {
            if dns_gone[k].is_none() {
                let now = cut.elapsed();
                if c.dns(*i, NET, "tasks.web")
                    .is_some_and(|ips| ips.iter().all(|ip| !lost.contains(ip)))
                {
                    dns_gone[k] = Some(now);
                }
            }
            if lb_gone[k].is_none() {
                let now = cut.elapsed();
                if c.balanced(*i).is_some_and(|b| {
                    b.iter().all(|(_, backend)| {
                        backend
                            .split(':')
                            .next()
                            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                            .is_none_or(|ip| !lost.contains(&ip))
                    })
                }) {
                    lb_gone[k] = Some(now);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let bound = TTL + Duration::from_secs(1);
    let mut excluded = Duration::ZERO;
    for (k, i) in others.iter().enumerate() {
        let name = &c.node(*i).name;
        let (d, l) = (
            dns_gone[k].unwrap_or_else(|| panic!("{name}'s DNS still names {lost:?}")),
            lb_gone[k].unwrap_or_else(|| panic!("{name}'s balancer still has {lost:?}")),
        );
        println!(
            "{name}: the lost replicas left its DNS after {}, its balancer after {} (bound: lease TTL + 1 s = {})",
            ms(d),
            ms(l),
            ms(bound)
        );
        assert!(d <= bound && l <= bound, "{name} excluded them too late");
        excluded = excluded.max(d).max(l);
    }

    // The surviving nodes take the lost slots over.
    let back = c.wait_healthy(others[0], "web", 4, Duration::from_secs(30));
    let took = cut.elapsed();
    let now = crate::common::tasks(&back);
    assert!(now.iter().all(|t| t.node != dead_name));
    println!(
        "four healthy replicas again {} after the cut: {:?}",
        ms(took),
        placement(&now)
    );
    // The loops reach every replica now running, replacements included.
    let survivors: BTreeSet<String> = now.iter().map(|t| t.answer()).collect();
    let settled = cut + took;
    let all_seen = wait_for(
        "the loops to reach every replica",
        Duration::from_secs(20),
        || {
            loops.iter().all(|l| {
                let seen: BTreeSet<String> = l
                    .samples()
                    .into_iter()
                    .filter(|s| s.at >= settled)
                    .filter_map(|s| s.result.ok())
                    .collect();
                survivors.is_subset(&seen)
            })
        },
    );
    println!(
        "the request loops reached all four (replacements included) {} later",
        ms(all_seen)
    );

    // Traffic through the other nodes never stopped: the balancers retry
    // a connect that times out on another replica.
    let after = cut + excluded;
    for (k, l) in loops.into_iter().enumerate() {
        let r = l.stop();
        println!("{}", r.summary());
        let window: Vec<_> = r
            .samples
            .iter()
            .filter(|s| s.at >= cut && s.at < after)
            .collect();
        println!(
            "  sent between the cut and the exclusion: {} requests, {} failed, slowest {}",
            window.len(),
            window.iter().filter(|s| s.result.is_err()).count(),
            ms(window.iter().map(|s| s.took).max().unwrap_or_default())
        );
        // A request already in flight to a replica on the cut node when the
        // link went down dies with that node's TCP connection (in TCP mode
        // nothing can replay it); every request sent from the cut on must
        // succeed.
        let in_flight = r
            .failures()
            .iter()
            .filter(|s| s.at < cut && s.at + s.took >= cut)
            .count();
        let failed: Vec<_> = r
            .failures()
            .into_iter()
            .filter(|s| !(s.at < cut && s.at + s.took >= cut))
            .map(|s| &s.result)
            .collect();
        println!("  in flight to the cut node at the cut and lost with it: {in_flight}");
        assert!(
            failed.is_empty(),
            "requests through node {} failed: {failed:?}",
            others[k]
        );
        let late: Vec<_> = r
            .answers_between(after, Instant::now())
            .into_keys()
            .filter(|a| !survivors.contains(a))
            .collect();
        assert!(late.is_empty(), "answers from lost replicas: {late:?}");
    }
}
