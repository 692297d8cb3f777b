//! The open-loop load generator.
//!
//! Requests go out at their scheduled times whatever happened to earlier
//! ones: each is its own task, and a slow answer never delays the next send.
//! Latency is measured from the request's *intended* send time, so a stall
//! (of the target, or of this process) shows up in full in the percentiles
//! instead of being hidden by waiting (no coordinated omission).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::backend::BACKEND_HEADER;
use crate::sample::{Outcome, Sample};
use crate::scenario::ConnectionMode;

/// What the generator sends and to where.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where requests go (the balancer, or a backend in tests).
    pub addr: SocketAddr,
    /// Connection reuse.
    pub connection: ConnectionMode,
    /// A request unanswered after this is an error ([`Outcome::Timeout`]).
    pub timeout: Duration,
    /// Backend names in order; `x-backend` is mapped to its index here.
    pub backends: Vec<String>,
}

/// Sends one request at each time of `schedule` (offsets from `start`) and
/// returns one [`Sample`] per request, in schedule order.
pub async fn run(target: &Target, schedule: &[Duration], start: Instant) -> Vec<Sample> {
    let shared = Arc::new(Shared {
        target: target.clone(),
        index: target
            .backends
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u16))
            .collect(),
        idle: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::with_capacity(schedule.len());
    for (seq, &at) in schedule.iter().enumerate() {
        let intended = start + at;
        tokio::time::sleep_until(intended).await;
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(shared.target.timeout, shared.request(seq)).await;
            let latency = intended.elapsed();
            let (outcome, backend) = match r {
                Err(_) => (Outcome::Timeout, None),
                Ok(Err(_)) => (Outcome::Failed, None),
                Ok(Ok((200, backend))) => (Outcome::Ok, backend),
                Ok(Ok((status, backend))) => (Outcome::Status(status), backend),
            };
            Sample {
                intended: at,
                latency,
                backend,
                outcome,
            }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("request task never panics"));
    }
    out
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Shared {
    target: Target,
    index: HashMap<String, u16>,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
}

impl Shared {
    /// One request: status and the index of the backend that answered.
    async fn request(&self, seq: usize) -> Result<(u16, Option<u16>), BoxError> {
        let keep = self.target.connection == ConnectionMode::KeepAlive;
        let mut sender = match keep.then(|| self.take_idle()).flatten() {
            Some(s) => s,
            None => self.connect().await?,
        };
        let req = hyper::Request::get("/")
            .header("host", "lbbench")
            .header("x-request-id", seq.to_string())
            .header("connection", if keep { "keep-alive" } else { "close" })
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let backend = resp
            .headers()
            .get(BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|n| self.index.get(n).copied());
        resp.into_body().collect().await?;
        if keep {
            self.idle.lock().expect("not poisoned").push(sender);
        }
        Ok((status, backend))
    }

    fn take_idle(&self) -> Option<SendRequest<Empty<Bytes>>> {
        let mut idle = self.idle.lock().expect("not poisoned");
        while let Some(s) = idle.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, BoxError> {
        let stream = TcpStream::connect(self.target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }
}
