//! A running `shoal-lb`: the listeners started from a [`Config`], reloads
//! that apply a new one, and the drain on shutdown.
//!
//! A reload is all or nothing: the new config is validated and every new
//! listening socket bound before anything running changes. Listeners are
//! matched by name: a kept listener gets the new backends, policy and
//! settings for new connections (open ones are untouched), a new one starts,
//! a removed one stops accepting while its open connections finish.
//!
//! A graceful restart hands the listening sockets to the next process: it
//! takes a duplicate of each ([`Listener::dup_socket`]), passes it on (e.g.
//! over a unix socket) and the new process accepts on it; this one then
//! [`Runtime::drain`]s. Only this process's copy closes, so the socket keeps
//! listening throughout and no connection is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerConfig, Mode};
use crate::endpoint::lock;
use crate::pool::Pool;
use crate::proxy::Listener;
use crate::sockets::{Local, Sockets, SocketsFor};

/// Why a config could not be started or applied.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A listening socket could not be bound.
    #[error("listener `{name}`: cannot listen on {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address it wanted.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// The running listeners.
pub struct Runtime {
    listeners: Mutex<Vec<Arc<Listener>>>,
    config: Mutex<Config>,
    tracker: TaskTracker,
    sockets: SocketsFor,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

/// Binds a listening socket in this namespace with a deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    Local.listen(addr)
}

fn bind_listener(l: &ListenerConfig, sockets: &dyn Sockets) -> Result<TcpListener, RuntimeError> {
    sockets
        .listen(l.listen)
        .map_err(|source| RuntimeError::Bind {
            name: l.name.clone(),
            addr: l.listen,
            source,
        })
}

impl Runtime {
    /// Validates `config`, binds every listener and starts serving, with
    /// sockets of this process's namespace.
    pub fn start(config: Config) -> Result<Arc<Runtime>, RuntimeError> {
        Self::start_with(config, crate::sockets::local())
    }

    /// As [`Runtime::start`], with each listener's sockets (listening and
    /// outbound) made by `sockets` (also for listeners added by reloads).
    pub fn start_with(config: Config, sockets: SocketsFor) -> Result<Arc<Runtime>, RuntimeError> {
        config.validate()?;
        let rt = Arc::new(Runtime {
            listeners: Mutex::new(Vec::new()),
            config: Mutex::new(config.clone()),
            tracker: TaskTracker::new(),
            sockets,
        });
        let bound = config
            .listeners
            .iter()
            .map(|l| {
                let s = (rt.sockets)(l);
                bind_listener(l, s.as_ref()).map(|tcp| (l, tcp, s))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut running = Vec::new();
        for (l, tcp, s) in bound {
            running.push(rt.launch(l, tcp, s)?);
        }
        *lock(&rt.listeners) = running;
        Ok(rt)
    }

    fn launch(
        &self,
        l: &ListenerConfig,
        tcp: TcpListener,
        sockets: Arc<dyn Sockets>,
    ) -> Result<Arc<Listener>, RuntimeError> {
        let pool = Pool::new(l.pool.clone())
            .map_err(|e| crate::config::ConfigError(format!("listener `{}`: {e}", l.name)))?;
        let addr = tcp.local_addr().unwrap_or(l.listen);
        let http = (l.mode == Mode::Http).then(|| l.http.clone());
        let listener = Listener::new(l.name.clone(), addr, pool, l.proxy.clone(), http, sockets);
        tokio::spawn(Arc::clone(&listener).serve(tcp, self.tracker.clone()));
        tracing::info!(listener = %l.name, %addr, mode = ?l.mode, policy = %l.pool.policy, backends = l.pool.backends.len(), "listening");
        Ok(listener)
    }

    /// Applies a new config (a reload). On error nothing changed.
    pub fn apply(&self, config: Config) -> Result<(), RuntimeError> {
        config.validate()?;
        let mut running = lock(&self.listeners);
        let by_name: HashMap<&str, &Arc<Listener>> =
            running.iter().map(|l| (l.name(), l)).collect();
        let kept = |l: &ListenerConfig| {
            by_name
                .get(l.name.as_str())
                .filter(|r| r.addr() == l.listen && r.http().is_some() == (l.mode == Mode::Http))
                .copied()
        };
        // Bind every new socket first: a failure here changes nothing.
        let mut fresh = Vec::new();
        for l in config.listeners.iter().filter(|l| kept(l).is_none()) {
            let s = (self.sockets)(l);
            let tcp = bind_listener(l, s.as_ref())?;
            fresh.push((l, tcp, s));
        }
        // From here on nothing can fail: pools were validated with the config.
        let mut next = Vec::new();
        for l in &config.listeners {
            if let Some(r) = kept(l) {
                r.pool().update(l.pool.clone()).map_err(|e| {
                    crate::config::ConfigError(format!("listener `{}`: {e}", l.name))
                })?;
                r.set_settings(l.proxy.clone());
                r.set_http_settings(l.http.clone());
                next.push(Arc::clone(r));
            }
        }
        for (l, tcp, s) in fresh {
            next.push(self.launch(l, tcp, s)?);
        }
        for r in running.iter() {
            if !next.iter().any(|n| Arc::ptr_eq(n, r)) {
                tracing::info!(listener = %r.name(), "listener removed; open connections continue");
                r.stop();
            }
        }
        *running = next;
        *lock(&self.config) = config;
        Ok(())
    }

    /// The running listeners.
    pub fn listeners(&self) -> Vec<Arc<Listener>> {
        lock(&self.listeners).clone()
    }

    /// The config in force.
    pub fn config(&self) -> Config {
        lock(&self.config).clone()
    }

    /// Open client connections across all listeners.
    pub fn open_connections(&self) -> usize {
        self.tracker.len()
    }

    /// Stops accepting everywhere and waits up to `deadline` for open
    /// connections to finish. Returns true if they all did.
    pub async fn drain(&self, deadline: Duration) -> bool {
        for l in self.listeners() {
            l.stop();
        }
        self.tracker.close();
        let open = self.tracker.len();
        if open > 0 {
            tracing::info!(open, ?deadline, "draining open connections");
        }
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxySettings;
    use crate::{Backend, PolicyKind, PoolConfig};
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// An echo server; returns its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(c: &mut TcpStream, what: &[u8]) {
        c.write_all(what).await.unwrap();
        let mut back = vec![0u8; what.len()];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, what);
    }

    /// What a graceful restart relies on: a duplicated listening socket
    /// keeps listening after the runtime drained, and open connections
    /// finish on the old runtime.
    #[tokio::test]
    async fn a_lent_socket_outlives_the_drain_and_open_connections_finish() {
        let backend = echo().await;
        let config = Config {
            admin: None,
            drain_timeout: Duration::from_secs(1),
            listeners: vec![ListenerConfig {
                name: "l".into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                pool: PoolConfig::new(vec![Backend::new(backend)], PolicyKind::RoundRobin),
                proxy: ProxySettings::default(),
                mode: Mode::Tcp,
                http: Default::default(),
            }],
        };
        let rt = Runtime::start(config).unwrap();
        let l = rt.listeners().remove(0);
        let addr = l.addr();
        let mut open = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut open, b"before").await;

        let lent = l.dup_socket().expect("accepting").unwrap();
        let drained = {
            let rt = Arc::clone(&rt);
            tokio::spawn(async move { rt.drain(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(l.dup_socket().is_none(), "a stopped listener lends nothing");
        // The old runtime no longer accepts, yet the socket listens: the
        // connection waits in the queue for the new owner.
        let taken = TcpListener::from_std(std::net::TcpListener::from(lent)).unwrap();
        let (c, a) = tokio::join!(TcpStream::connect(addr), taken.accept());
        c.unwrap();
        assert_eq!(rt.listeners()[0].stats().accepted.load(Relaxed), 1);
        drop(a.unwrap());
        // The open connection still runs on the draining runtime.
        round_trip(&mut open, b"after").await;
        assert!(!drained.is_finished());
        drop(open);
        assert!(tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .unwrap()
            .unwrap());
    }
}
