//! Idle upstream connections kept for reuse, per backend, shared by all of
//! a listener's client connections.
//!
//! The newest idle connection is reused first (the one least likely to
//! have been closed by the backend); one idle for longer than [`MAX_IDLE`]
//! is dropped instead of reused. Connections that carry a PROXY v2 header
//! speak for one client connection and never come here (they stay with it,
//! see `exchange::Buffers`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections older than this are closed, not reused.
pub const MAX_IDLE: Duration = Duration::from_secs(30);

/// The pool key: the backend.
pub type Key = SocketAddr;

/// A connection taken from the pool.
#[derive(Debug)]
pub struct Reused {
    /// The connection.
    pub tcp: TcpStream,
    /// How long it sat idle.
    pub idle: Duration,
}

/// The idle connections of one listener.
#[derive(Debug, Default)]
pub struct IdlePool {
    idle: Mutex<HashMap<Key, Vec<(TcpStream, Instant)>>>,
}

impl IdlePool {
    /// The newest idle connection for `key` not older than [`MAX_IDLE`].
    pub fn take(&self, key: &Key, now: Instant) -> Option<Reused> {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(key)?;
        let got = loop {
            let (tcp, since) = list.pop()?;
            let idle = now.saturating_duration_since(since);
            if idle <= MAX_IDLE {
                break Reused { tcp, idle };
            }
        };
        if list.is_empty() {
            map.remove(key);
        }
        Some(got)
    }

    /// Keeps `tcp` for reuse unless `key` already has `max` idle ones.
    pub fn put(&self, key: Key, tcp: TcpStream, now: Instant, max: usize) {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(key).or_default();
        if list.len() < max {
            list.push((tcp, now));
        }
    }

    /// Closes every idle connection older than [`MAX_IDLE`] (those of a
    /// backend that left the pool among them).
    pub fn sweep(&self, now: Instant) {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, list| {
            list.retain(|(_, since)| now.saturating_duration_since(*since) <= MAX_IDLE);
            !list.is_empty()
        });
    }

    /// Idle connections held now.
    pub fn len(&self) -> usize {
        let map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum()
    }

    /// True when no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn conn(l: &TcpListener) -> TcpStream {
        TcpStream::connect(l.local_addr().unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn newest_first_bounded_and_expiring() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key = l.local_addr().unwrap();
        let other: Key = "192.0.2.1:1".parse().unwrap();
        let pool = IdlePool::default();
        let t0 = Instant::now();
        let (a, b, c) = (conn(&l).await, conn(&l).await, conn(&l).await);
        let b_port = b.local_addr().unwrap().port();
        pool.put(key, a, t0, 2);
        pool.put(key, b, t0 + Duration::from_secs(1), 2);
        pool.put(key, c, t0, 2);
        assert_eq!(pool.len(), 2, "the third is over the bound");
        assert!(
            pool.take(&other, t0).is_none(),
            "per-client connections are private"
        );
        let got = pool.take(&key, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(got.tcp.local_addr().unwrap().port(), b_port, "newest first");
        assert_eq!(got.idle, Duration::from_secs(1));
        assert!(pool
            .take(&key, t0 + MAX_IDLE + Duration::from_secs(1))
            .is_none());
        assert!(pool.is_empty(), "the expired one was dropped");

        pool.put(key, conn(&l).await, t0, 4);
        pool.put(other, conn(&l).await, t0 + MAX_IDLE, 4);
        pool.sweep(t0 + MAX_IDLE + Duration::from_secs(1));
        assert_eq!(pool.len(), 1, "only the old one goes");
        pool.sweep(t0 + MAX_IDLE * 3);
        assert!(pool.is_empty());
    }
}
