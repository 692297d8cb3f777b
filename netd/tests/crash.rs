//! The agent killed with SIGKILL at random moments while a client creates
//! and removes networks, services and tasks through its API, over 200
//! kills on one state directory (the embedded store). After each restart:
//! every acknowledged change is there, every acknowledged removal is gone,
//! the change in flight at the kill is there whole or not at all (no claim
//! of it left behind), and nothing is allocated twice.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::{http_exchange, wait_for, AgentNode};

const KILLS: usize = 200;

/// One API call: `None` when the connection failed (the agent died).
fn call(socket: &Path, method: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let a = http_exchange(s, method, path, &[], &body).ok()?;
    if a.status == 0 {
        return None;
    }
    Some((
        a.status,
        serde_json::from_str(&a.body).unwrap_or(Value::Null),
    ))
}

/// A change the client makes.
#[derive(Debug, Clone)]
enum Op {
    CreateNetwork(String, Ipv4Net),
    RemoveNetwork(String),
    CreateService(String, String, u16),
    RemoveService(String),
    /// A task on a network, its process started once the create returns.
    RunTask(String, String),
    RemoveTask(String),
}

/// What the client was told.
#[derive(Debug)]
enum Outcome {
    /// A 2xx with this body.
    Done(Value),
    /// Refused (4xx/5xx): nothing changed.
    Refused,
    /// No answer: the agent died with it in flight.
    Unknown,
}

/// What must exist, from acknowledged answers.
#[derive(Debug, Default)]
struct Model {
    /// Network name: (subnet, VNI).
    networks: BTreeMap<String, (String, u64)>,
    /// Service name: (network, VIP, published port).
    services: BTreeMap<String, (String, String, u16)>,
    /// Task name: (network, IP).
    tasks: BTreeMap<String, (String, String)>,
    /// Names in flight at a kill: present whole or absent.
    unsure: BTreeSet<String>,
    next: usize,
}

impl Model {
    /// The next round's changes, valid against what surely exists (the
    /// model is not changed: the answers will say what happened).
    fn plan(&mut self, rng: &mut SmallRng) -> Vec<Op> {
        let mut networks: Vec<String> = self.networks.keys().cloned().collect();
        let mut services: Vec<String> = self.services.keys().cloned().collect();
        let mut tasks: Vec<String> = self.tasks.keys().cloned().collect();
        let used: BTreeSet<String> = self
            .services
            .values()
            .map(|s| s.0.clone())
            .chain(self.tasks.values().map(|t| t.0.clone()))
            .collect();
        let mut ops = Vec::new();
        for _ in 0..6 {
            self.next += 1;
            let i = self.next;
            let take =
                |v: &mut Vec<String>, rng: &mut SmallRng| v.swap_remove(rng.gen_range(0..v.len()));
            let some = |v: &Vec<String>, rng: &mut SmallRng| v[rng.gen_range(0..v.len())].clone();
            let create = || {
                let subnet = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
                Op::CreateNetwork(format!("n{i}"), subnet.parse().unwrap())
            };
            let op = match rng.gen_range(0..10) {
                _ if networks.is_empty() => create(),
                3..=4 => Op::CreateService(format!("s{i}"), some(&networks, rng), 20000 + i as u16),
                5 if !services.is_empty() => Op::RemoveService(take(&mut services, rng)),
                6 if tasks.len() < 6 => Op::RunTask(format!("t{i}"), some(&networks, rng)),
                7 if !tasks.is_empty() => Op::RemoveTask(take(&mut tasks, rng)),
                8..=9 => {
                    let n = some(&networks, rng);
                    if used.contains(&n) {
                        create()
                    } else {
                        networks.retain(|x| *x != n);
                        Op::RemoveNetwork(n)
                    }
                }
                _ => create(),
            };
            ops.push(op);
        }
        ops
    }
}

/// Runs `ops` in order against the agent until one gets no answer.
fn run_ops(socket: PathBuf, ops: Vec<Op>, out: mpsc::Sender<(Op, Outcome)>) {
    for op in ops {
        let answer = match &op {
            Op::CreateNetwork(n, s) => call(
                &socket,
                "POST",
                "/v1/networks",
                &json!({ "name": n, "subnet": s.to_string() }),
            ),
            Op::RemoveNetwork(n) => call(
                &socket,
                "DELETE",
                &format!("/v1/networks/{n}"),
                &Value::Null,
            ),
            Op::CreateService(s, n, p) => call(
                &socket,
                "POST",
                "/v1/services",
                &json!({ "name": s, "networks": { n: null }, "ports": [{ "target": 8000, "published": p }] }),
            ),
            Op::RemoveService(s) => call(
                &socket,
                "DELETE",
                &format!("/v1/services/{s}"),
                &Value::Null,
            ),
            Op::RunTask(t, n) => run_task(&socket, t, n),
            Op::RemoveTask(t) => call(&socket, "DELETE", &format!("/v1/tasks/{t}"), &Value::Null),
        };
        let outcome = match answer {
            None => Outcome::Unknown,
            Some((code, body)) if (200..300).contains(&code) => Outcome::Done(body),
            Some((code, body)) => {
                eprintln!("{op:?} refused: {code} {body}");
                Outcome::Refused
            }
        };
        let stop = matches!(outcome, Outcome::Unknown);
        if out.send((op, outcome)).is_err() || stop {
            return;
        }
    }
}

/// `netd run`'s protocol by hand: create the task, start its process in
/// the task's namespace, hand the agent its pid.
fn run_task(socket: &Path, name: &str, network: &str) -> Option<(u16, Value)> {
    let (code, task) = call(
        socket,
        "POST",
        "/v1/tasks",
        &json!({ "network": network, "name": name }),
    )?;
    if !(200..300).contains(&code) {
        return Some((code, task));
    }
    let netns = task["netns"].as_str().unwrap_or_default();
    let ns = format!("--net=/run/netns/{netns}");
    let child = std::process::Command::new("nsenter")
        .args([ns.as_str(), "sleep", "900"])
        .spawn()
        .ok()?;
    let pid = child.id();
    // The child is reaped by the lab's cleanup; dropping it leaves it run.
    drop(child);
    let (code, _) = call(
        socket,
        "POST",
        &format!("/v1/tasks/{name}/pid"),
        &json!({ "pid": pid }),
    )?;
    Some((code, task))
}

/// Every key and value of the store, read from its file beside the agent.
fn stored(state: &Path) -> BTreeMap<String, String> {
    let db = state.join("store").join("store.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store read-only");
    let mut q = conn.prepare("SELECT key, value FROM kv").unwrap();
    q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            String::from_utf8_lossy(&r.get::<_, Vec<u8>>(1)?).into_owned(),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The API's view: networks, services and tasks by name.
fn listed(socket: &Path, what: &str) -> BTreeMap<String, Value> {
    let (code, body) = call(socket, "GET", &format!("/v1/{what}"), &Value::Null)
        .unwrap_or_else(|| panic!("GET /v1/{what}: no answer"));
    assert_eq!(code, 200, "GET /v1/{what}: {body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect()
}

/// Folds a round's answers into the model.
fn record(m: &mut Model, results: Vec<(Op, Outcome)>) {
    for (op, outcome) in results {
        if std::env::var_os("SHOAL_CRASH_TRACE").is_some() {
            eprintln!("TRACE {op:?} -> {outcome:?}");
        }
        let body = match outcome {
            Outcome::Done(b) => b,
            Outcome::Refused => continue,
            Outcome::Unknown => {
                let name = match &op {
                    Op::CreateNetwork(n, _) | Op::RemoveNetwork(n) => n,
                    Op::CreateService(s, _, _) | Op::RemoveService(s) => s,
                    Op::RunTask(t, _) | Op::RemoveTask(t) => t,
                };
                m.unsure.insert(name.clone());
                continue;
            }
        };
        match op {
            Op::CreateNetwork(n, _) => {
                let subnet = body["subnet"].as_str().unwrap().to_string();
                m.networks
                    .insert(n, (subnet, body["vni"].as_u64().unwrap()));
            }
            Op::RemoveNetwork(n) => {
                m.networks.remove(&n);
            }
            Op::CreateService(s, n, p) => {
                let vip = body["networks"][&n].as_str().unwrap().to_string();
                m.services.insert(s, (n, vip, p));
            }
            Op::RemoveService(s) => {
                m.services.remove(&s);
            }
            Op::RunTask(t, n) => {
                m.tasks
                    .insert(t, (n, body["ip"].as_str().unwrap().to_string()));
            }
            Op::RemoveTask(t) => {
                m.tasks.remove(&t);
            }
        }
    }
}

/// Checks the restarted agent against the model, then takes what it
/// found of the names in flight into the model.
fn verify(socket: &Path, state: &Path, node: &str, m: &mut Model, round: usize) {
    let nets = listed(socket, "networks");
    let svcs = listed(socket, "services");
    let tasks = listed(socket, "tasks");
    let ctx = format!("after kill {round}");
    // Acknowledged: there, as answered. Everything else there: in flight.
    // A removal in flight may have happened: its name is checked below.
    let sure = |name: &String| !m.unsure.contains(name);
    for (n, (subnet, vni)) in m.networks.iter().filter(|(n, _)| sure(n)) {
        let got = nets
            .get(n)
            .unwrap_or_else(|| panic!("{ctx}: network {n} lost"));
        assert_eq!(
            (
                got["subnet"].as_str().unwrap(),
                got["vni"].as_u64().unwrap()
            ),
            (subnet.as_str(), *vni),
            "{ctx}: {n}"
        );
    }
    for (s, (n, vip, _)) in m.services.iter().filter(|(s, _)| sure(s)) {
        let got = svcs
            .get(s)
            .unwrap_or_else(|| panic!("{ctx}: service {s} lost"));
        assert_eq!(
            got["networks"][n].as_str(),
            Some(vip.as_str()),
            "{ctx}: {s}"
        );
    }
    for (t, (_, ip)) in m.tasks.iter().filter(|(t, _)| sure(t)) {
        let got = tasks
            .get(t)
            .unwrap_or_else(|| panic!("{ctx}: task {t} lost"));
        assert_eq!(got["ip"].as_str(), Some(ip.as_str()), "{ctx}: {t}");
    }
    let known =
        |name: &String, model: &dyn Fn(&String) -> bool| model(name) || m.unsure.contains(name);
    for n in nets.keys() {
        assert!(
            known(n, &|x| m.networks.contains_key(x)),
            "{ctx}: network {n} appeared"
        );
    }
    for s in svcs.keys() {
        assert!(
            known(s, &|x| m.services.contains_key(x)),
            "{ctx}: service {s} appeared"
        );
    }

    // The store holds exactly the claims of what exists, once each.
    let kv = stored(state);
    let subnets: BTreeMap<String, String> = kv
        .get("alloc/subnets")
        .map(|v| serde_json::from_str(v).unwrap())
        .unwrap_or_default();
    let want: BTreeMap<String, String> = nets
        .iter()
        .map(|(n, v)| (n.clone(), v["subnet"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(subnets, want, "{ctx}: subnet reservations");
    // Claims keyed by what they claim, holding their owner's name.
    let claims =
        |prefix: &str, owners: &BTreeMap<String, Value>, claim: &dyn Fn(&Value) -> String| {
            let held: BTreeMap<String, String> = kv
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
                .collect();
            let want: BTreeMap<String, String> =
                owners.iter().map(|(n, v)| (claim(v), n.clone())).collect();
            assert_eq!(held, want, "{ctx}: {prefix}*, one per owner");
        };
    claims("alloc/vni/", &nets, &|v| v["vni"].to_string());
    claims("alloc/port/", &svcs, &|v| {
        v["ports"][0]["published"].to_string()
    });
    let vips: BTreeSet<(String, String)> = kv
        .iter()
        .filter(|(_, v)| v.starts_with("cluster-vips/vip:"))
        .map(|(k, v)| {
            (
                k.rsplit('/').next().unwrap().to_string(),
                v["cluster-vips/vip:".len()..].to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = svcs
        .iter()
        .flat_map(|(s, v)| {
            v["networks"]
                .as_object()
                .unwrap()
                .values()
                .map(move |vip| (vip.as_str().unwrap().to_string(), s.clone()))
        })
        .collect();
    assert_eq!(vips, want, "{ctx}: VIPs, one per service and network");
    for k in kv.keys().filter(|k| k.starts_with("ipam/")) {
        let net = k.split('/').nth(1).unwrap();
        assert!(
            nets.contains_key(net),
            "{ctx}: {k} of a network that is gone"
        );
    }
    // Task addresses: held only by tasks the agent runs (its sweep runs
    // just after it starts), each its own.
    let mine = format!("{node}/");
    wait_for(
        &format!("{ctx}: addresses of unknown tasks released"),
        Duration::from_secs(20),
        || {
            let tasks = listed(socket, "tasks");
            stored(state).iter().all(|(k, v)| {
                !k.contains("/addr/")
                    || v.strip_prefix(&mine)
                        .is_none_or(|t| t.starts_with("lb:") || tasks.contains_key(t))
            })
        },
    );
    let tasks = listed(socket, "tasks");
    let ips: Vec<&str> = tasks.values().map(|t| t["ip"].as_str().unwrap()).collect();
    let unique: BTreeSet<&&str> = ips.iter().collect();
    assert_eq!(
        unique.len(),
        ips.len(),
        "{ctx}: a task address handed out twice: {ips:?}"
    );
    for t in tasks.keys() {
        assert!(
            shoal_overlay::netns::exists(&format!("shoal-t.{node}.{t}")),
            "{ctx}: task {t} has no namespace"
        );
    }

    // The names in flight resolved: whatever exists now is as it is.
    for name in std::mem::take(&mut m.unsure) {
        m.networks.remove(&name);
        m.services.remove(&name);
        m.tasks.remove(&name);
        if let Some(v) = nets.get(&name) {
            m.networks.insert(
                name.clone(),
                (
                    v["subnet"].as_str().unwrap().to_string(),
                    v["vni"].as_u64().unwrap(),
                ),
            );
        }
        if let Some(v) = svcs.get(&name) {
            let (n, vip) = v["networks"].as_object().unwrap().iter().next().unwrap();
            let port = v["ports"][0]["published"].as_u64().unwrap() as u16;
            m.services.insert(
                name.clone(),
                (n.clone(), vip.as_str().unwrap().to_string(), port),
            );
        }
        if let Some(v) = tasks.get(&name) {
            m.tasks.insert(
                name.clone(),
                (
                    v["network"].as_str().unwrap().to_string(),
                    v["ip"].as_str().unwrap().to_string(),
                ),
            );
        }
    }
}

#[test]
fn acknowledged_changes_survive_200_kills_at_random_moments() {
    let mut t = AgentNode::start();
    let node = t.node.clone();
    let socket = t.agent.socket();
    let seed: u64 = std::env::var("SHOAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (SHOAL_CRASH_SEED replays it)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut m = Model::default();
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut done, mut unknown) = (0, 0);
    for round in 1..=KILLS {
        assert!(
            Instant::now() < deadline,
            "{round} rounds took over 10 minutes"
        );
        let ops = m.plan(&mut rng);
        let (tx, rx) = mpsc::channel();
        let client = {
            let socket = socket.clone();
            std::thread::spawn(move || run_ops(socket, ops, tx))
        };
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..120)));
        t.agent.kill_and_start();
        client.join().unwrap();
        let results: Vec<(Op, Outcome)> = rx.try_iter().collect();
        done += results
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Done(_)))
            .count();
        unknown += results
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Unknown))
            .count();
        record(&mut m, results);
        verify(&socket, &t.agent.state, &node, &mut m, round);
    }
    println!("{KILLS} kills: {done} changes acknowledged, {unknown} in flight at a kill");
    assert!(done > KILLS, "too few changes got through: {done}");
    assert!(
        unknown > KILLS / 4,
        "too few kills hit a change in flight: {unknown}"
    );
}
