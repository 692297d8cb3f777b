//! The `lbbench` binary end to end: a bad scenario file, and a short run
//! through the real shoal-lb whose outputs must add up.

use std::path::PathBuf;
use std::process::Command;

fn lbbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbbench"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lbbench-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_bad_scenario_exits_2_naming_field_and_line() {
    let d = scratch("bad");
    let f = d.join("bad.toml");
    std::fs::write(
        &f,
        "name = \"x\"\nduration = \"1s\"\n[load]\nrate = 10\n[[backend]]\nname = \"a\"\n\
         service = { dist = \"fixed\", value = \"1ms\" }\nconcurency = 3\n",
    )
    .unwrap();
    let out = lbbench().arg("--scenario").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.toml:8: backend[0].concurency: unknown field `concurency`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn a_short_run_through_shoal_lb_adds_up() {
    let d = scratch("run");
    let f = d.join("three.toml");
    let mut text = String::from(
        "name = \"three\"\nduration = \"1500ms\"\nseed = 5\nmodes = [\"tcp\"]\n\
         [load]\nrate = 200\narrivals = \"uniform\"\n",
    );
    for n in ["a", "b", "c"] {
        text.push_str(&format!(
            "[[backend]]\nname = \"{n}\"\nservice = {{ dist = \"fixed\", value = \"1ms\" }}\n"
        ));
    }
    std::fs::write(&f, text).unwrap();
    let out_dir = d.join("out");
    let out = lbbench()
        .arg("--scenario")
        .arg(&f)
        .args([
            "--policies",
            "round-robin,least-conn",
            "--no-progress",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| shoal-tcp/round-robin |"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["requests"], 299, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        let shares: Vec<f64> = r["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let sum: f64 = shares.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "shares sum to {sum}");
        if r["target"] == "shoal-tcp/round-robin" {
            for s in shares {
                assert!((s - 1.0 / 3.0).abs() < 0.02, "round-robin share {s}");
            }
        }
    }
    let csv = std::fs::read_to_string(out_dir.join("samples.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 299);
    for f in ["summary.md", "cdf.svg", "share.svg", "p99.svg"] {
        let len = std::fs::metadata(out_dir.join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 100, "{f} is missing or empty");
    }
    // --replot reads samples.csv back: same counts and shares.
    let out = lbbench()
        .arg("--scenario")
        .arg(&f)
        .args(["--replot", "--no-progress", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    for (a, b) in results.iter().zip(again["results"].as_array().unwrap()) {
        for k in ["target", "requests", "errors", "shares"] {
            assert_eq!(a[k], b[k], "{k}");
        }
    }
    let _ = std::fs::remove_dir_all(d);
}
