//! TLS in HTTP mode, checked with curl: ALPN picks HTTP/2 or HTTP/1.1, and
//! the backend hears the request was https.

use std::path::PathBuf;
use std::process::Command;

use crate::http_support::{parse_echo, HttpBackend};
use crate::support::*;

/// A self-signed certificate for 127.0.0.1, removed on drop.
struct Cert {
    dir: PathBuf,
}

impl Cert {
    fn new() -> Cert {
        let dir = std::env::temp_dir().join(format!(
            "shoal-tls-e2e-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=shoal-test",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .output()
            .expect("openssl is installed (scripts/deps.sh)");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        Cert { dir }
    }
    fn cert(&self) -> String {
        self.dir.join("cert.pem").to_string_lossy().to_string()
    }
    fn key(&self) -> String {
        self.dir.join("key.pem").to_string_lossy().to_string()
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// curl with the test CA; returns (HTTP version, body).
fn curl(cert: &Cert, url: &str, version_flag: &str) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            version_flag,
            "--cacert",
            &cert.cert(),
            "-w",
            "\n%{http_version}",
            url,
        ])
        .output()
        .expect("curl is installed (scripts/deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, version) = text.rsplit_once('\n').unwrap();
    (version.to_string(), body.to_string())
}

#[tokio::test]
async fn tls_offers_h2_and_http11_by_alpn() {
    let cert = Cert::new();
    let b0 = HttpBackend::start("b0");
    let backend = b0.addr.to_string();
    let (c, k) = (cert.cert(), cert.key());
    let lb = Lb::flags(&[
        "--mode",
        "http",
        "--backend",
        &backend,
        "--tls-cert",
        &c,
        "--tls-key",
        &k,
    ])
    .await;
    let url = format!("https://{}/secure", lb.listen);
    // Blocking is fine here: the balancer and the backend run elsewhere.
    let (version, body) = curl(&cert, &url, "--http2");
    assert_eq!(version, "2");
    let (name, headers) = parse_echo(&body);
    assert_eq!(name, "b0");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert!(headers["forwarded"].ends_with("proto=https"), "{headers:?}");
    let (version, _) = curl(&cert, &url, "--http1.1");
    assert_eq!(version, "1.1");
}

#[test]
fn a_missing_certificate_is_a_usage_error_naming_the_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-lb"))
        .args([
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
            "--mode",
            "http",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
