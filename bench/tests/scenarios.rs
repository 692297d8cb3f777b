//! Every shipped scenario file parses and passes the checks.

use shoal_bench::scenario::Scenario;

#[test]
fn shipped_scenarios_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(path.file_stem().unwrap().to_str(), Some(s.name.as_str()));
            names.push(s.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "bursts",
            "homogeneous",
            "one-dies",
            "recovery-slow-start",
            "slow-replica",
            "unequal-weights"
        ]
    );
}
