//! The README's main job: `shoal-lb` in front of three local backends,
//! printing where connections went, then losing a backend without losing a
//! client connection.
//!
//! Run through `scripts/demo.sh`, or: `cargo run --release -p shoal-lb
//! --example demo` after building the `shoal-lb` binary (set `SHOAL_LB` to
//! its path if it is not next to this example's directory).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Kills the balancer when the demo ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn backend(name: &'static str) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let mut sink = [0u8; 64];
                let _ = s.read(&mut sink).await;
            });
        }
    });
    Ok((addr, task))
}

async fn ask(lb: SocketAddr) -> Result<String> {
    let s = TcpStream::connect(lb).await?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await?;
    if line.is_empty() {
        bail!("connection closed without an answer");
    }
    Ok(line.trim().to_string())
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn lb_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_LB") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/examples/demo -> target/<profile>/shoal-lb
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("shoal-lb"))
        .unwrap_or_else(|| "shoal-lb".into())
}

async fn round(lb: SocketAddr, n: usize, label: &str) -> Result<()> {
    let mut counts = BTreeMap::new();
    let mut order = Vec::new();
    let mut failed = 0;
    for _ in 0..n {
        match ask(lb).await {
            Ok(name) => {
                *counts.entry(name.clone()).or_insert(0) += 1;
                order.push(name);
            }
            Err(_) => failed += 1,
        }
    }
    println!("{label}");
    println!("  order:  {}", order.join(" "));
    for (name, c) in &counts {
        println!("  {name:<6} {c:>3} connections");
    }
    println!("  failed {failed:>3} connections\n");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let (a, _ta) = backend("web-a").await?;
    let (b, tb) = backend("web-b").await?;
    let (c, _tc) = backend("web-c").await?;
    let listen = free_port()?;
    let admin = free_port()?;
    let bin = lb_binary();
    let args = [
        "--listen".to_string(),
        listen.to_string(),
        "--backend".into(),
        format!("{a}@3"),
        "--backend".into(),
        format!("{b}@1"),
        "--backend".into(),
        format!("{c}@1"),
        "--policy".into(),
        "weighted".into(),
        "--health".into(),
        "tcp".into(),
        "--health-interval".into(),
        "200ms".into(),
        "--rise".into(),
        "1".into(),
        "--fall".into(),
        "2".into(),
        "--admin".into(),
        admin.to_string(),
        "--threads".into(),
        "1".into(),
        "--log".into(),
        "warn".into(),
    ];
    println!("$ {} {}\n", bin.display(), args.join(" "));
    let _lb = Proc(
        Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?,
    );
    let mut up = false;
    for _ in 0..100 {
        if TcpStream::connect(admin).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !up {
        bail!("shoal-lb did not come up on {admin}");
    }
    println!("backends: web-a {a} (weight 3), web-b {b} (weight 1), web-c {c} (weight 1)\n");
    round(
        listen,
        15,
        "15 connections, smooth weighted round-robin (3:1:1):",
    )
    .await?;
    tb.abort();
    println!("web-b killed. Health checks (tcp, every 200ms, fall 2) take it out;");
    println!("meanwhile a failed connect is retried on another backend.\n");
    round(listen, 10, "10 connections right after the kill:").await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    round(listen, 10, "10 connections after interval x fall:").await?;
    println!("GET /backends:\n{}\n", http_get(admin, "/backends").await?);
    let metrics = http_get(admin, "/metrics").await?;
    println!("GET /metrics (per-backend connections):");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("shoal_lb_backend_connections_total"))
    {
        println!("  {line}");
    }
    Ok(())
}
