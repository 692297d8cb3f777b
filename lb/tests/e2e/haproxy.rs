//! HAProxy as a real peer of the PROXY protocol: a backend that reports
//! the client address it was told, and a front that tells shoal-lb.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::free_addr;

/// A running `haproxy -db`, killed on drop.
pub struct Haproxy {
    child: Child,
    config: std::path::PathBuf,
    pub addr: SocketAddr,
}

impl Haproxy {
    fn start(body: &str, addr: SocketAddr) -> Haproxy {
        let config = std::env::temp_dir().join(format!(
            "shoal-haproxy-{}-{}.cfg",
            std::process::id(),
            addr.port()
        ));
        let text = format!(
            "global\n  nbthread 1\ndefaults\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n{body}"
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is installed (scripts/deps.sh)");
        let h = Haproxy {
            child,
            config,
            addr,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return h;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("haproxy did not start on {addr}");
    }

    /// An HTTP server that expects PROXY (v1 or v2) and answers
    /// `src=IP:PORT dst=IP:PORT` with what the header said.
    pub fn reporting_backend() -> Haproxy {
        let addr = free_addr();
        Self::start(
            &format!(
                "frontend report\n  mode http\n  bind {addr} accept-proxy\n  http-request return status 200 content-type text/plain lf-string \"src=%[src]:%[src_port] dst=%[dst]:%[dst_port]\\n\"\n"
            ),
            addr,
        )
    }

    /// A TCP front that forwards to `to`, announcing clients with PROXY v2.
    pub fn front_sending_v2(to: SocketAddr) -> Haproxy {
        let addr = free_addr();
        Self::start(
            &format!("listen front\n  mode tcp\n  bind {addr}\n  server s1 {to} send-proxy-v2\n"),
            addr,
        )
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
