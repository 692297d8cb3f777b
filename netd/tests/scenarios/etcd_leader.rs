//! Scenario 5, the etcd leader killed (SIGKILL): request loops through
//! every node's published port see no failure, and control-plane changes
//! work again once the two remaining members have elected a new leader;
//! the killed member then rejoins. The leader killed is also the member
//! every agent was talking to, so the agents must move to another one.

use std::time::{Duration, Instant};

use shoal_tests::cluster::{wait_for, Stop};

use crate::common::{deploy_web, mesh_traffic, ms, ps, serial, start, NET};

#[test]
fn s5_etcd_leader_killed_the_data_plane_does_not_notice() {
    let _one = serial();
    let mut c = start();
    deploy_web(&c, 4);
    let loops: Vec<_> = (0..3)
        .map(|i| mesh_traffic(&c, i, Duration::from_secs(90)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // The leader is made the first member, the one every agent talks to
    // first: the worst member to lose.
    c.move_etcd_leader(0, Duration::from_secs(10));
    let leader = 0;
    let leader_name = c.etcd_members()[leader].name.clone();
    let killed = Instant::now();
    c.stop_etcd(leader, Stop::Kill);
    // From the kill on: the election watched, and a control-plane change
    // tried through node 0 until it goes through.
    let ((new_leader, elected), attempts) = std::thread::scope(|s| {
        let election = s.spawn(|| c.wait_etcd_leader(Duration::from_secs(30)));
        let mut attempts = Vec::new();
        wait_for("`service scale` to work", Duration::from_secs(60), || {
            let t = Instant::now();
            let out = c.netd(0, &["service", "scale", "web=5"]);
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            attempts.push(format!("{} {err:.160}", ms(t.elapsed())));
            out.status.success()
        });
        (election.join().expect("the election watch"), attempts)
    });
    let scaled = killed.elapsed();
    assert_ne!(new_leader, leader);
    println!(
        "killed the etcd leader {leader_name}; {} elected after {}",
        c.etcd_members()[new_leader].name,
        ms(elected)
    );
    println!(
        "`netd service scale web=5`, tried from the kill on, went through {} after it ({} attempt(s): {attempts:?})",
        ms(scaled),
        attempts.len()
    );
    // From then on, every command works, through every node.
    let mut failed = Vec::new();
    for round in 0..5 {
        for i in 0..3 {
            let out = c.netd(i, &["node", "ls"]);
            if !out.status.success() {
                failed.push(format!(
                    "round {round}, node {i}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    let out = c.netd(
        1,
        &["network", "create", "back", "--subnet", "10.78.0.0/16"],
    );
    if !out.status.success() {
        failed.push(format!(
            "network create: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    println!(
        "then 16 more commands through the three nodes: {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "commands failed with a leader elected: {failed:#?}"
    );
    let t = Instant::now();
    c.wait_healthy(2, "web", 5, Duration::from_secs(30));
    c.wait_converged(Duration::from_secs(30));
    println!(
        "the fifth replica healthy and every node converged {} later",
        ms(t.elapsed())
    );
    for i in 0..3 {
        assert_eq!(
            c.dns(i, NET, "tasks.web").map(|v| v.len()),
            Some(5),
            "node {i}'s DNS"
        );
    }

    // The data plane did not notice.
    std::thread::sleep(Duration::from_millis(500));
    for l in loops {
        let r = l.stop();
        println!("{}", r.summary());
        assert!(
            r.failures().is_empty(),
            "failed requests: {:?}",
            r.failures().iter().map(|s| &s.result).collect::<Vec<_>>()
        );
        let during = r.samples.iter().filter(|s| s.at >= killed).count();
        assert!(during > 0, "the loop kept sending after the kill");
    }

    // The killed member comes back and rejoins.
    let t = Instant::now();
    c.start_etcd(leader);
    c.wait_etcd_ready(Duration::from_secs(30));
    println!(
        "{leader_name} restarted and rejoined after {}",
        ms(t.elapsed())
    );
    assert_eq!(ps(&c, 0, "web").len(), 5);
}
