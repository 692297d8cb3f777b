//! The command line as a user meets it: usage errors exit 2 with one line
//! naming the problem; a port in use exits 1.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-lb"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let (code, err) = run(&["--listen", "127.0.0.1:1", "--backend", "127.0.0.1:2@heavy"]);
    assert_eq!(code, 2);
    assert!(err.contains("--backend") && err.contains("weight"), "{err}");
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:1",
        "--backend",
        "127.0.0.1:2",
        "--backend",
        "127.0.0.1:2",
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "shoal-lb: error: --listen `127.0.0.1:1`: backend 127.0.0.1:2 is listed twice"
    );
}

#[test]
fn a_bad_config_file_exits_2_naming_the_line() {
    let path = std::env::temp_dir().join(format!("shoal-lb-cli-{}.toml", std::process::id()));
    std::fs::write(&path, "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\npolicy = \"magic\"\n").unwrap();
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("line 4") && err.contains("magic"), "{err}");
    let (code, err) = run(&["--config", "/nonexistent/shoal.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/shoal.toml"), "{err}");
}

#[test]
fn a_port_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run(&["--listen", &addr, "--backend", "127.0.0.1:2"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot listen on"), "{err}");
}
