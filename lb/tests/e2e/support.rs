//! Test support: backends that name themselves, the `shoal-lb` process under
//! a guard, and small clients. Everything listens on 127.0.0.1 ephemeral
//! ports and is torn down on drop, panic included.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// A backend: answers every connection with its name and a newline, then
/// echoes until the client closes.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    tasks: Option<tokio::task::JoinHandle<()>>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, l)
    }

    /// Starts again on a given address (after a kill).
    pub async fn start_on(name: &str, addr: SocketAddr) -> TestBackend {
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(addr).unwrap();
        Self::serve(name, sock.listen(1024).unwrap())
    }

    fn serve(name: &str, l: TcpListener) -> TestBackend {
        let addr = l.local_addr().unwrap();
        let hello = format!("{name}\n");
        let tasks = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut s, _)) = l.accept().await {
                let hello = hello.clone();
                conns.spawn(async move {
                    if s.write_all(hello.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        TestBackend {
            name: name.to_string(),
            addr,
            tasks: Some(tasks),
        }
    }

    /// Closes the listener and every open connection.
    pub fn kill(&mut self) {
        if let Some(t) = self.tasks.take() {
            t.abort();
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `n` backends named b0, b1, ...
pub async fn backends(n: usize) -> Vec<TestBackend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(TestBackend::start(&format!("b{i}")).await);
    }
    v
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A client connection through the balancer, with the backend that took it.
pub struct Conn {
    pub backend: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Sends `msg` and reads the echo back.
    pub async fn echo(&mut self, msg: &[u8]) -> Vec<u8> {
        self.reader.get_mut().write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), self.reader.read_exact(&mut back))
            .await
            .expect("echo timed out")
            .unwrap();
        back
    }
}

/// Connects to `lb` from `from` (any 127.x address) and reads the backend's name.
pub async fn connect_from(lb: SocketAddr, from: IpAddr) -> std::io::Result<Conn> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    let s = sock.connect(lb).await?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    let n = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no greeting"))??;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before the backend spoke",
        ));
    }
    Ok(Conn {
        backend: line.trim().to_string(),
        reader,
    })
}

/// Connects from 127.0.0.1.
pub async fn connect(lb: SocketAddr) -> std::io::Result<Conn> {
    connect_from(lb, [127, 0, 0, 1].into()).await
}

/// Makes `n` connections one after another; returns the backends in order.
pub async fn sequence(lb: SocketAddr, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(connect(lb).await.unwrap().backend);
    }
    v
}

/// A plain HTTP GET, returning (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The `shoal-lb` process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Lb {
    pub child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
    config: Option<PathBuf>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn scratch(ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "shoal-lb-test-{}-{}.{ext}",
        std::process::id(),
        SEQ.fetch_add(1, Relaxed)
    ))
}

impl Lb {
    /// Starts `shoal-lb` with flags; `--listen`, `--admin` and `--threads 1`
    /// are added.
    pub async fn flags(args: &[&str]) -> Lb {
        let listen = free_addr();
        let admin = free_addr();
        let mut all: Vec<String> = vec![
            "--listen".into(),
            listen.to_string(),
            "--admin".into(),
            admin.to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        Self::spawn(all, listen, admin, None).await
    }

    /// Starts `shoal-lb --config FILE` with this TOML (which must use the
    /// returned addresses: `{listen}` and `{admin}` are filled in).
    pub async fn file(toml: &str) -> Lb {
        let listen = free_addr();
        let admin = free_addr();
        let path = scratch("toml");
        std::fs::write(&path, fill(toml, listen, admin)).unwrap();
        let args = vec!["--config".into(), path.to_string_lossy().to_string()];
        Self::spawn(args, listen, admin, Some(path)).await
    }

    async fn spawn(
        mut args: Vec<String>,
        listen: SocketAddr,
        admin: SocketAddr,
        config: Option<PathBuf>,
    ) -> Lb {
        args.extend([
            "--threads".into(),
            "1".into(),
            "--log".into(),
            "shoal_lb=debug".into(),
        ]);
        let log = scratch("log");
        let child = Command::new(env!("CARGO_BIN_EXE_shoal-lb"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let lb = Lb {
            child,
            listen,
            admin,
            log,
            config,
        };
        lb.wait_ready().await;
        lb
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if TcpStream::connect(self.admin).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("shoal-lb did not start:\n{}", self.log());
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Rewrites the config file and sends SIGHUP.
    pub async fn reload(&self, toml: &str) {
        let path = self.config.as_ref().expect("started with a config file");
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(fill(toml, self.listen, self.admin).as_bytes())
            .unwrap();
        drop(f);
        let before = self.log().matches("configuration reloaded").count()
            + self.log().matches("reload rejected").count();
        self.signal("HUP");
        for _ in 0..200 {
            let after = self.log().matches("configuration reloaded").count()
                + self.log().matches("reload rejected").count();
            if after > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("reload not acknowledged:\n{}", self.log());
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// GET /backends, parsed.
    pub async fn backends(&self) -> serde_json::Value {
        let (status, body) = http_get(self.admin, "/backends").await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// A backend's health state as /backends reports it.
    pub async fn health_of(&self, addr: SocketAddr) -> String {
        let v = self.backends().await;
        v[0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == addr.to_string())
            .map(|b| b["health"].as_str().unwrap().to_string())
            .unwrap()
    }
}

fn fill(toml: &str, listen: SocketAddr, admin: SocketAddr) -> String {
    toml.replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
}

impl Drop for Lb {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- shoal-lb log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
        if let Some(c) = &self.config {
            let _ = std::fs::remove_file(c);
        }
    }
}

/// `--backend` flags for these backends with these weights.
pub fn backend_flags(bs: &[TestBackend], weights: &[u32]) -> Vec<String> {
    bs.iter()
        .zip(weights)
        .flat_map(|(b, w)| ["--backend".to_string(), format!("{}@{w}", b.addr)])
        .collect()
}

impl Lb {
    /// Waits until /backends reports `state` for `addr`; panics after `limit`.
    pub async fn wait_health(&self, addr: SocketAddr, state: &str, limit: Duration) {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if self.health_of(addr).await == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{addr} not {state} after {limit:?}");
    }
}
