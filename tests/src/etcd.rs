//! A real etcd for tests: a single member on loopback ports, stopped
//! (SIGTERM, then SIGKILL) and its data directory removed on drop.

use std::path::PathBuf;

use crate::proc::Proc;

/// A single-member etcd on loopback, for one test.
pub struct Etcd {
    // Fields drop in order: etcd stops before its data directory goes.
    proc: Proc,
    _dir: RemoveOnDrop,
    client_url: String,
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Etcd {
    /// Starts it (it may take a moment to answer; clients retry).
    pub fn start() -> Etcd {
        let dir =
            std::env::temp_dir().join(format!("shoal-etcd-{}-{}", std::process::id(), free_port()));
        let (c, p) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{c}");
        let peer_url = format!("http://127.0.0.1:{p}");
        let (dir_s, cluster) = (dir.to_string_lossy().to_string(), format!("t={peer_url}"));
        let proc = Proc::spawn(
            "etcd",
            &[
                "--name",
                "t",
                "--data-dir",
                &dir_s,
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &cluster,
                "--log-level",
                "error",
            ],
        );
        Etcd {
            proc,
            _dir: RemoveOnDrop(dir),
            client_url,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// `etcd://127.0.0.1:PORT`, as netd's `--store` takes it.
    pub fn store_url(&self) -> String {
        self.client_url.replace("http://", "etcd://")
    }

    /// Its process, e.g. to stop it in a fault test.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// A directory removed when dropped.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
