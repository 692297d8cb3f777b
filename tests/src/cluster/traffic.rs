//! [`Traffic`]: a request loop from inside a namespace (one HTTP/1.0 GET
//! per connection, or HTTP/1.1 GETs over a kept-alive connection, back to
//! back with an optional pause), recording every outcome with its time, so
//! scenarios can count failures and see which replicas answered before and
//! after a fault.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use super::http::{request, Answer, KeepAlive};

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent.
    pub at: Instant,
    /// How long it took.
    pub took: Duration,
    /// The body of a 200 answer, or what went wrong.
    pub result: Result<String, String>,
    /// Which of the loop's connections carried it (1, 2, …; each request
    /// has its own in a [`Traffic::start`] loop).
    pub connection: u64,
}

/// A running request loop; stop it with [`Traffic::stop`] (it also stops
/// when dropped).
pub struct Traffic {
    what: String,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    /// Starts `GET path` to `to` from inside namespace `ns`, one request
    /// after another with `pause` between them, for at most `limit` (a
    /// bound, so a forgotten loop still ends).
    pub fn start(
        ns: &str,
        to: SocketAddr,
        path: &str,
        pause: Duration,
        limit: Duration,
    ) -> Traffic {
        let mut n = 0;
        let path_ = path.to_string();
        Traffic::spawn(
            ns,
            format!("GET {path} to {to} from {ns}"),
            pause,
            limit,
            move || {
                n += 1;
                (n, outcome(request(to, "GET", &path_, "")))
            },
        )
    }

    /// Like [`Traffic::start`], but over one kept-alive HTTP/1.1
    /// connection ([`KeepAlive`]), opened again only when the server
    /// closes it or a request fails.
    pub fn keep_alive(
        ns: &str,
        to: SocketAddr,
        path: &str,
        pause: Duration,
        limit: Duration,
    ) -> Traffic {
        let mut client = KeepAlive::new(to);
        let path_ = path.to_string();
        Traffic::spawn(
            ns,
            format!("keep-alive GET {path} to {to} from {ns}"),
            pause,
            limit,
            move || {
                let r = client.get(&path_);
                (client.opened(), outcome(r))
            },
        )
    }

    /// Runs `once` (a request: its connection number and outcome) in a
    /// thread inside `ns` until stopped or `limit`.
    fn spawn(
        ns: &str,
        what: String,
        pause: Duration,
        limit: Duration,
        mut once: impl FnMut() -> (u64, Result<String, String>) + Send + 'static,
    ) -> Traffic {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let netns = format!("/run/netns/{ns}");
        let file = File::open(&netns).unwrap_or_else(|e| panic!("open {netns}: {e}"));
        let thread = {
            let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
            std::thread::spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the client namespace");
                let end = Instant::now() + limit;
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let at = Instant::now();
                    let (connection, result) = once();
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Sample {
                            at,
                            took: at.elapsed(),
                            result,
                            connection,
                        });
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
            })
        };
        Traffic {
            what,
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The outcomes so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the loop and returns every outcome.
    pub fn stop(mut self) -> Report {
        self.halt();
        Report {
            what: self.what.clone(),
            samples: self.samples(),
        }
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A 200 answer's body, or what went wrong.
fn outcome(r: std::io::Result<Answer>) -> Result<String, String> {
    match r {
        Ok(a) if a.status == 200 => Ok(a.body),
        Ok(a) => Err(format!("HTTP {}", a.status)),
        Err(e) => Err(e.to_string()),
    }
}

/// What a finished request loop saw.
#[derive(Debug, Clone)]
pub struct Report {
    /// The loop's description.
    pub what: String,
    /// Every request, in order.
    pub samples: Vec<Sample>,
}

impl Report {
    /// Requests that failed.
    pub fn failures(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.result.is_err()).collect()
    }

    /// Answers per body (replica), over the requests sent in `[from, to)`.
    pub fn answers_between(&self, from: Instant, to: Instant) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.at >= from && s.at < to) {
            if let Ok(b) = &s.result {
                *m.entry(b.clone()).or_default() += 1;
            }
        }
        m
    }

    /// Answers per body over the whole run.
    pub fn answers(&self) -> BTreeMap<String, usize> {
        let far = Instant::now() + Duration::from_secs(3600);
        self.answers_between(self.samples.first().map_or(far, |s| s.at), far)
    }

    /// The slowest request.
    pub fn slowest(&self) -> Duration {
        self.samples
            .iter()
            .map(|s| s.took)
            .max()
            .unwrap_or_default()
    }

    /// How many connections the requests went over.
    pub fn connections(&self) -> usize {
        let mut c: Vec<u64> = self.samples.iter().map(|s| s.connection).collect();
        c.dedup();
        c.len()
    }

    /// A one-line summary: requests, failures, slowest, answers per body.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} requests, {} failed, slowest {:?}, answers {:?}",
            self.what,
            self.samples.len(),
            self.failures().len(),
            self.slowest(),
            self.answers()
        )
    }
}
