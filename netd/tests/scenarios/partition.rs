//! Scenario 8, one node partitioned: the node running the most `web`
//! replicas has its underlay link cut. etcd's three members are all on the
//! other side, so the cut node cannot allocate anything: its client
//! commands fail with a clear error instead. The majority keeps working:
//! it takes the cut node's replica slots over and, during the partition,
//! gets a new container and a new service (a new VIP). After healing:
//! the healed node is listed again and its DNS is the others'; the store
//! and the kernel agree on every replica (each runs once, where and at the
//! address the store says, and every service has its count); no address
//! or VIP is held twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{wait_for, wait_until};
use shoal_tests::Cluster;

use crate::common::{
    assert_each_address_once, busiest, deploy, deploy_web, ms, placement, ps, serial, start,
    task_addresses, vip, NET,
};

/// What node `i`'s DNS answers for each of `names`.
fn dns_view(c: &Cluster, i: usize, names: &[String]) -> BTreeMap<String, Option<Vec<Ipv4Addr>>> {
    names
        .iter()
        .map(|n| (n.clone(), c.dns(i, NET, n)))
        .collect()
}

#[test]
fn s8_partitioned_node_no_split_brain_allocation() {
    let _one = serial();
    let mut c = start();
    let (web_vip_before, tasks) = deploy_web(&c, 4);
    let p = busiest(&c, &tasks);
    let p_name = c.node(p).name.clone();
    let majority: Vec<usize> = (0..3).filter(|i| *i != p).collect();
    let (m0, m1) = (majority[0], majority[1]);

    let cut = Instant::now();
    c.cut(p);
    println!(
        "cut {p_name} (running {:?})",
        placement(&tasks).get(&p_name)
    );

    // The majority takes the slots over.
    let mut web = Vec::new();
    wait_for(
        "four healthy replicas on the majority",
        Duration::from_secs(30),
        || {
            let Some(v) = c.try_json(m0, &["service", "ps", "web"]) else {
                return false;
            };
            web = crate::common::tasks(v.as_array().map_or(&[][..], Vec::as_slice));
            web.len() == 4 && web.iter().all(|t| t.state == "healthy" && t.node != p_name)
        },
    );
    println!(
        "the majority runs four healthy `web` replicas again {} after the cut: {:?}",
        ms(cut.elapsed()),
        placement(&web)
    );
    // The cut node cannot reach etcd: its commands fail cleanly.
    for args in [
        &["network", "create", "side", "--subnet", "10.79.0.0/16"][..],
        &[
            "service",
            "create",
            "api2",
            "--network",
            NET,
            "--port",
            "80",
        ][..],
        &["run", "--network", NET, "--name", "p-task", "--", "true"][..],
    ] {
        let t = Instant::now();
        let out = c.netd(p, args);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        println!(
            "on {p_name}: `netd {}` -> exit {:?} after {}: {err}",
            args[..2].join(" "),
            out.status.code(),
            ms(t.elapsed())
        );
        assert!(
            !out.status.success(),
            "`netd {}` worked on the cut node",
            args.join(" ")
        );
        assert!(err.contains("store unavailable"), "a clear error: {err}");
    }

    // The majority allocates while the node is cut.
    let _side = c.run(
        m0,
        c.dir(),
        &["--network", NET, "--name", "side1", "--", "sleep", "120"],
    );
    let (api_vip, api) = deploy(&c, m1, "api", 2, None);
    wait_for("side1's address", Duration::from_secs(30), || {
        c.dns(m1, NET, "side1").is_some_and(|v| v.len() == 1)
    });
    println!("during the partition, through the majority: container `side1`, service `api` (VIP {api_vip}, {:?})", placement(&api));

    // Heal; the healed node comes back and converges on the others' view.
    let healed = Instant::now();
    c.heal(p);
    let back = wait_for(
        "the healed node to be listed again",
        Duration::from_secs(30),
        || {
            [m0, p].iter().all(|i| {
                c.try_json(*i, &["node", "ls"])
                    .and_then(|v| v.as_array().map(Vec::len))
                    == Some(3)
            })
        },
    );
    println!(
        "healed: {p_name} listed again by everyone after {}",
        ms(back)
    );
    let names: Vec<String> = [
        "web",
        "tasks.web",
        "api",
        "tasks.api",
        "side1",
        "web.1",
        "web.2",
        "web.3",
        "web.4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut last = (BTreeMap::new(), BTreeMap::new());
    let converged = wait_until(Duration::from_secs(30), || {
        let theirs = dns_view(&c, m0, &names);
        let ours = dns_view(&c, p, &names);
        let agree = theirs == ours && theirs == dns_view(&c, m1, &names);
        last = (theirs, ours);
        agree
    });
    assert!(
        converged.is_some(),
        "the healed node's DNS never matched the others':\nothers {:#?}\nhealed {:#?}",
        last.0,
        last.1
    );
    println!(
        "healed: {p_name}'s DNS matches the others' {} after healing",
        ms(healed.elapsed())
    );
    c.wait_converged(Duration::from_secs(30));

    // The store and the kernel agree: every replica the store lists runs,
    // at the node and address it says, every replica running is listed,
    // and the services have their counts, healthy.
    let mut last = String::new();
    let agreed = wait_until(Duration::from_secs(20), || {
        let (web, api) = (ps(&c, m0, "web"), ps(&c, m0, "api"));
        let listed: BTreeSet<(String, String, Ipv4Addr)> = web
            .iter()
            .chain(&api)
            .map(|t| (t.name.clone(), t.node.clone(), t.ip))
            .collect();
        let kernel = task_addresses(&c);
        let unattached: Vec<&String> = kernel
            .iter()
            .filter(|(_, ips)| ips.is_empty())
            .map(|(ns, _)| ns)
            .collect();
        let running: BTreeSet<(String, String, Ipv4Addr)> = kernel
            .clone()
            .into_iter()
            .filter_map(|(ns, ips)| {
                let mut parts = ns.splitn(3, '.').skip(1);
                let (node, task) = (parts.next()?.to_string(), parts.next()?.to_string());
                (task != "side1").then(|| {
                    ips.into_iter()
                        .map(move |ip| (task.clone(), node.clone(), ip))
                })
            })
            .flatten()
            .collect();
        let healthy = |ts: &[crate::common::Task], n: usize| {
            ts.len() == n && ts.iter().all(|t| t.state == "healthy")
        };
        last = format!(
            "`service ps`: {} `web`, {} `api` (want 4 and 2, healthy)\n\
             listed in the store but not running there: {:?}\n\
             running but not listed: {:?}\n\
             task namespaces left without an address: {unattached:?}",
            web.len(),
            api.len(),
            listed.difference(&running).collect::<Vec<_>>(),
            running.difference(&listed).collect::<Vec<_>>()
        );
        listed == running && healthy(&web, 4) && healthy(&api, 2)
    });
    assert!(
        agreed.is_some(),
        "after healing, the store and the kernel disagree on the replicas:\n{last}"
    );
    println!("after healing, store and kernel agree: four `web` and two `api` replicas, each running once where the store says");

    // No address or VIP held twice.
    let web = ps(&c, m0, "web");
    let api = ps(&c, m0, "api");
    let side1 = c.dns(m0, NET, "side1").unwrap_or_default();
    assert_eq!(side1.len(), 1, "side1 in DNS");
    let web_vip = vip(&c, m0, "web");
    assert_eq!(web_vip, web_vip_before, "`web` kept its VIP");
    let nodes = c.json(m0, &["node", "ls"]);
    assert_eq!(
        nodes.as_array().unwrap().len(),
        3,
        "the healed node is back: {nodes}"
    );
    let mut held: Vec<(String, Ipv4Addr)> = web
        .iter()
        .chain(&api)
        .map(|t| (t.name.clone(), t.ip))
        .collect();
    held.extend(side1.iter().map(|ip| ("side1".to_string(), *ip)));
    held.push(("VIP web".into(), web_vip));
    held.push(("VIP api".into(), api_vip));
    for n in nodes.as_array().unwrap() {
        let lbs = n["lb_addresses"].as_object();
        assert!(
            lbs.is_some_and(|l| l.contains_key(NET)),
            "{n} has an lb address"
        );
        for ip in lbs.into_iter().flat_map(|l| l.values()) {
            held.push((
                format!("lb of {}", n["name"]),
                ip.as_str().unwrap().parse().unwrap(),
            ));
        }
    }
    assert_each_address_once(&c, &held);
    println!(
        "{} addresses held after healing (6 replicas, side1, 2 VIPs, 3 lb addresses), none twice",
        held.len()
    );
    for i in [m1, p] {
        assert_eq!(ps(&c, i, "web"), web, "node {i}'s `service ps web`");
    }
    println!(
        "kernel: {} task namespaces, each address in one",
        task_addresses(&c).len()
    );
}
