//! API write load for `bench/store/compare.sh`: CLIENTS concurrent clients,
//! each creating and removing services (`POST /v1/services`, then `DELETE
//! /v1/services/NAME`) on NETWORK through an agent's API for SECONDS.
//! Prints one line: clients, pairs per second, and the p50/p99/max of a
//! single create or remove.
//!
//! ```text
//! api_writes unix:///path/api.sock CLIENTS SECONDS NETWORK TAG
//! ```

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shoal_netd::api::client::{ApiAddr, Client};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, api, clients, seconds, network, tag] = &args[..] else {
        eprintln!("usage: api_writes API CLIENTS SECONDS NETWORK TAG");
        std::process::exit(2);
    };
    let addr: ApiAddr = api.parse().expect("an API address");
    let clients: usize = clients.parse().expect("CLIENTS");
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in 0..clients {
        let client = Client::new(addr.clone(), None);
        let network = network.clone();
        let tag = tag.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut pairs = 0u64;
            while Instant::now() < end {
                let name = format!("b{tag}c{c}n{pairs}");
                let spec = json!({ "name": name, "networks": { network.as_str(): null } });
                let t = Instant::now();
                let made: Result<Value, _> = client.call("POST", "/v1/services", Some(&spec)).await;
                made.unwrap_or_else(|e| panic!("create {name}: {e}"));
                lat.push(t.elapsed());
                let t = Instant::now();
                let gone: Result<Value, _> = client
                    .call::<Value>("DELETE", &format!("/v1/services/{name}"), None::<&Value>)
                    .await;
                gone.unwrap_or_else(|e| panic!("remove {name}: {e}"));
                lat.push(t.elapsed());
                pairs += 1;
            }
            (pairs, lat)
        }));
    }
    let mut pairs = 0;
    let mut lat = Vec::new();
    for w in workers {
        let (p, l) = w.await.expect("a client");
        pairs += p;
        lat.extend(l);
    }
    let took = started.elapsed().as_secs_f64();
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "clients {clients} pairs/s {:.1} p50_ms {:.2} p99_ms {:.2} max_ms {:.2}",
        pairs as f64 / took,
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
