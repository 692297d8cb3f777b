//! The API's listening sockets: the unix one and, with `--api-tcp`, the
//! TCP one, each taken from a predecessor ([`crate::handover::Inherited`])
//! or bound anew, with duplicates kept to lend to a successor; then
//! served until the control plane halts.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use tokio::sync::watch;

use super::AgentArgs;
use crate::api::server::serve_tcp;
use crate::handover::{self, Inherited, Key, SocketFile};

/// The API's listening sockets, taken from a predecessor or bound anew.
/// Claimed before the agent starts: its first reconcile closes every
/// handed-over socket still unclaimed.
pub(super) struct ApiSockets {
    unix: std::os::unix::net::UnixListener,
    file: SocketFile,
    tcp: Option<std::net::TcpListener>,
    /// Duplicates to lend to a successor.
    lent: Vec<(Key, OwnedFd)>,
}

/// The API's servers and what a successor needs of their sockets.
pub(super) struct Api {
    pub(super) file: SocketFile,
    pub(super) lent: Vec<(Key, OwnedFd)>,
    pub(super) servers: tokio::task::JoinSet<std::io::Result<()>>,
}

impl ApiSockets {
    /// The unix socket at `socket` and, with `--api-tcp`, the TCP one; an
    /// exit code if one cannot be had.
    pub(super) fn claim(
        a: &AgentArgs,
        socket: &Path,
        inherited: &Inherited,
    ) -> Result<ApiSockets, i32> {
        let fail = |e: std::io::Error| {
            tracing::error!(socket = %socket.display(), error = %e, "cannot serve the API");
            1
        };
        let (unix, file) = match inherited.unix_listener(socket) {
            Some(l) => (l, SocketFile::at(socket)),
            None => handover::bind_unix(socket).map_err(fail)?,
        };
        let path = socket.to_path_buf();
        let mut lent = vec![(
            Key::Unix { path },
            unix.as_fd().try_clone_to_owned().map_err(fail)?,
        )];
        let tcp = match a.api_tcp {
            Some(addr) => {
                let (l, dup) = api_tcp(addr, inherited).map_err(|e| {
                    tracing::error!(%addr, error = %e, "cannot listen for the TCP API");
                    1
                })?;
                lent.push(dup);
                Some(l)
            }
            None => None,
        };
        Ok(ApiSockets {
            unix,
            file,
            tcp,
            lent,
        })
    }

    /// Serves the API on them until `halted` (TCP with `token`).
    pub(super) fn serve(
        self,
        app: axum::Router,
        token: Option<String>,
        halted: &watch::Receiver<bool>,
    ) -> std::io::Result<Api> {
        let shutdown = || {
            let mut halted = halted.clone();
            async move {
                let _ = halted.wait_for(|h| *h).await;
            }
        };
        let mut servers = tokio::task::JoinSet::new();
        let unix = tokio::net::UnixListener::from_std(self.unix)?;
        {
            let (app, shutdown) = (app.clone(), shutdown());
            servers.spawn(async move {
                axum::serve(unix, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            });
        }
        if let (Some(tcp), Some(token)) = (self.tcp, token) {
            let tcp = tokio::net::TcpListener::from_std(tcp)?;
            tracing::info!(addr = ?tcp.local_addr().ok(), "API on TCP (token required)");
            let shutdown = shutdown();
            servers.spawn(async move { serve_tcp(tcp, app, token, shutdown).await });
        }
        Ok(Api {
            file: self.file,
            lent: self.lent,
            servers,
        })
    }
}

/// The TCP API's listener (handed over or new) and a duplicate to lend.
fn api_tcp(
    addr: SocketAddr,
    inherited: &Inherited,
) -> std::io::Result<(std::net::TcpListener, (Key, OwnedFd))> {
    let netns = handover::process_netns()?;
    let l = match inherited.tcp_listener(netns, addr) {
        Some(l) => l,
        None => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            l
        }
    };
    let key = Key::Tcp {
        netns,
        addr: l.local_addr()?,
    };
    let dup = l.as_fd().try_clone_to_owned()?;
    Ok((l, (key, dup)))
}
