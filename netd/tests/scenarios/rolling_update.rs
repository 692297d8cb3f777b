//! Scenario 3, a rolling update under load: `web` (four replicas of
//! `web.py` answering `<task> v1`, HTTP mode) gets a new command (answering
//! `<task> v2`) while keep-alive loops run through every node's published
//! port, with a loop of one request per connection beside them. Every
//! replica is replaced, one at a time across the cluster (drained on every
//! node, stopped, started with the new command, checked healthy, then the
//! next); no request may fail, never more than one replica may be out, and
//! once the update is over no `v1` answer may come.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{wait_for, Traffic};

use crate::common::{ms, ps, serial, start};
use crate::http_web::{
    assert_no_failure, counter, deploy, keep_alive, one_per_connection, task_of, web_command,
};

/// The tasks answering with `tag`, by task, with the first such answer's
/// time, over all loops.
fn first_answers(loops: &[Traffic], tag: &str) -> BTreeMap<String, Instant> {
    let mut m: BTreeMap<String, Instant> = BTreeMap::new();
    for l in loops {
        for s in l.samples() {
            if let Ok(a) = &s.result {
                if a.split_whitespace().nth(1) == Some(tag) {
                    let at = m.entry(task_of(a).to_string()).or_insert(s.at);
                    *at = (*at).min(s.at);
                }
            }
        }
    }
    m
}

#[test]
fn s3_rolling_update_under_load_fails_no_request() {
    let _one = serial();
    let c = start();
    let (_, tasks) = deploy(&c, 4, "v1");
    let limit = Duration::from_secs(120);
    let mut loops: Vec<Traffic> = (0..3).map(|i| keep_alive(&c, i, limit)).collect();
    loops.push(one_per_connection(&c, 0, limit));
    std::thread::sleep(Duration::from_secs(1));
    let retries_before: u64 = (0..3)
        .map(|i| counter(&c, i, "shoal_lb_http_retries_total"))
        .sum();

    let started = Instant::now();
    let mut args = vec!["service", "update", "web", "--"];
    let command = web_command("v2");
    args.extend(command.iter().map(String::as_str));
    c.ok(0, &args);
    println!(
        "`netd service update web -- … v2` took {}",
        ms(started.elapsed())
    );

    // Until every replica answers v2 and all four are healthy: how many
    // replicas served (healthy in `service ps`) at the worst moment.
    let mut fewest = 4;
    let mut worst: Vec<String> = Vec::new();
    wait_for(
        "every replica to answer v2",
        Duration::from_secs(90),
        || {
            let now = crate::common::tasks(
                c.try_json(0, &["service", "ps", "web"])
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default()
                    .as_slice(),
            );
            let serving = now.iter().filter(|t| t.state == "healthy").count();
            if serving < fewest {
                fewest = serving;
                worst = now
                    .iter()
                    .map(|t| format!("{} {}", t.name, t.state))
                    .collect();
            }
            serving == 4 && first_answers(&loops, "v2").len() == 4
        },
    );
    let took = started.elapsed();
    let done = Instant::now();
    println!(
        "all four replicas replaced and answering v2 {} after the update",
        ms(took)
    );
    for (task, at) in first_answers(&loops, "v2") {
        println!(
            "  {task} first answered v2 {} after the update",
            ms(at - started)
        );
    }
    println!("fewest replicas healthy at once during the update: {fewest} of 4 (then: {worst:?})");
    assert!(
        fewest >= 3,
        "more than one replica was out at once: {worst:?}"
    );

    // The loops go on for a second: only v2 from now on.
    std::thread::sleep(Duration::from_secs(1));
    let retries: u64 = (0..3)
        .map(|i| counter(&c, i, "shoal_lb_http_retries_total"))
        .sum::<u64>()
        - retries_before;
    println!("the balancers retried {retries} request(s) on another replica");
    for l in loops {
        let r = l.stop();
        assert_no_failure(&r);
        let late_v1: Vec<&String> = r
            .samples
            .iter()
            .filter(|s| s.at > done)
            .filter_map(|s| s.result.as_ref().ok())
            .filter(|a| a.ends_with(" v1\n"))
            .collect();
        assert!(
            late_v1.is_empty(),
            "v1 answers after the update: {late_v1:?}"
        );
    }
    // Same slots, same names, new processes.
    let after = ps(&c, 1, "web");
    let names = |ts: &[crate::common::Task]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&tasks));
    assert!(after.iter().all(|t| t.state == "healthy"));
}
