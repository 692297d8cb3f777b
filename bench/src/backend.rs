//! Simulated backends: real HTTP/1.1 servers on 127.0.0.1 whose behaviour
//! follows a [`BackendSpec`].
//!
//! Each request waits for one of `concurrency` slots (FIFO), then sleeps for
//! a service time drawn from the distribution (times the current slow-down
//! factor), then answers `200` (or `500` with the error rate) with the
//! backend's name in `x-backend`. A script applies [`Event`]s at their times:
//! `die` closes the listener and every open connection, `revive` listens again
//! on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dist;
use crate::scenario::{Action, BackendSpec, Event, Service};

/// The header carrying the name of the backend that answered.
pub const BACKEND_HEADER: &str = "x-backend";

/// A running simulated backend; stopped (and its connections closed) on drop.
pub struct SimBackend {
    addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

struct State {
    name: String,
    service: Service,
    slots: Semaphore,
    /// Slow-down factor, as f64 bits.
    factor: AtomicU64,
    /// Error rate, as f64 bits.
    error_rate: AtomicU64,
    alive: watch::Sender<bool>,
    rng: Mutex<SmallRng>,
    served: AtomicU64,
    arrivals: Mutex<Vec<Instant>>,
}

impl SimBackend {
    /// Binds a free port on 127.0.0.1 and serves; `seed` drives service
    /// times and errors. The script is not started: see [`SimBackend::script`].
    pub async fn start(spec: &BackendSpec, seed: u64) -> std::io::Result<SimBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (alive, _) = watch::channel(true);
        let state = Arc::new(State {
            name: spec.name.clone(),
            service: spec.service,
            slots: Semaphore::new(spec.concurrency),
            factor: AtomicU64::new(1f64.to_bits()),
            error_rate: AtomicU64::new(spec.error_rate.to_bits()),
            alive,
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            served: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(state.clone(), listener, addr));
        Ok(SimBackend {
            addr,
            state,
            tasks: vec![task],
        })
    }

    /// Applies `events` at their times from `t0`.
    pub fn script(&mut self, events: &[Event], t0: Instant) {
        let state = self.state.clone();
        let mut events = events.to_vec();
        events.sort_by_key(|e| e.at);
        self.tasks.push(tokio::spawn(async move {
            for e in events {
                tokio::time::sleep_until(t0 + e.at).await;
                state.apply(e.action);
            }
        }));
    }

    /// Applies one change now.
    pub fn apply(&self, action: Action) {
        self.state.apply(action);
    }

    /// The address it listens on (kept across die and revive).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When each request arrived (before queueing), in arrival order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().expect("not poisoned").clone()
    }

    /// Requests answered so far (any status).
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }
}

impl Drop for SimBackend {
    fn drop(&mut self) {
        self.state.alive.send_replace(false);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl State {
    fn apply(&self, action: Action) {
        match action {
            Action::Slow(f) => self.factor.store(f.to_bits(), Ordering::Relaxed),
            Action::ErrorRate(p) => self.error_rate.store(p.to_bits(), Ordering::Relaxed),
            Action::Die => {
                self.alive.send_replace(false);
            }
            Action::Revive => {
                self.alive.send_replace(true);
            }
        }
    }

    async fn handle(&self) -> Response<Full<Bytes>> {
        self.arrivals
            .lock()
            .expect("not poisoned")
            .push(Instant::now());
        let _slot = self.slots.acquire().await.expect("never closed");
        let (time, fail) = {
            let mut rng = self.rng.lock().expect("not poisoned");
            let time = dist::sample(&self.service, &mut *rng);
            let p = f64::from_bits(self.error_rate.load(Ordering::Relaxed));
            (time, p > 0.0 && rng.gen::<f64>() < p)
        };
        let factor = f64::from_bits(self.factor.load(Ordering::Relaxed));
        tokio::time::sleep(time.mul_f64(factor)).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        Response::builder()
            .status(if fail { 500 } else { 200 })
            .header(BACKEND_HEADER, &self.name)
            .body(Full::new(Bytes::from(format!("{}\n", self.name))))
            .expect("valid response")
    }
}

/// Accept loop: serves while alive, drops the listener while dead and binds
/// the same port again on revive.
async fn serve(state: Arc<State>, first: TcpListener, addr: SocketAddr) {
    let mut alive = state.alive.subscribe();
    let mut listener = Some(first);
    loop {
        if !*alive.borrow_and_update() {
            listener = None;
            if alive.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match rebind(addr).await {
                Some(l) => listener.insert(l),
                None => return,
            },
        };
        tokio::select! {
            r = l.accept() => {
                let Ok((stream, _)) = r else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(state.clone(), stream));
            }
            r = alive.changed() => if r.is_err() { return },
        }
    }
}

async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    // The port may linger briefly; try for a second.
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// One connection, closed at once when the backend dies.
async fn connection(state: Arc<State>, stream: tokio::net::TcpStream) {
    let mut alive = state.alive.subscribe();
    let st = state.clone();
    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(st.handle().await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        _ = alive.wait_for(|a| !*a) => {}
    }
}
