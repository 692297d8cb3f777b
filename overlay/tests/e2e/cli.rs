//! The command line: usage errors, bad files, `diff`.

use shoal_tests::Lab;

use crate::support::{config, ok, shoal, two_nodes, Files};

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr:?}");
    lines[0]
}

#[test]
fn usage_errors_exit_2_with_one_line_naming_the_problem() {
    let o = shoal(&[]);
    assert_eq!(o.code, Some(2));
    assert!(
        one_line(&o.stderr).contains("requires a subcommand"),
        "{}",
        o.stderr
    );
    let o = shoal(&["frob"]);
    assert_eq!(o.code, Some(2));
    assert!(
        one_line(&o.stderr).contains("unrecognized subcommand 'frob'"),
        "{}",
        o.stderr
    );
    let o = shoal(&["apply"]);
    assert_eq!(o.code, Some(2));
    assert!(one_line(&o.stderr).contains("<FILE>"), "{}", o.stderr);
    let o = shoal(&["apply", "/nonexistent/shoal.toml"]);
    assert_eq!(o.code, Some(2));
    assert!(
        one_line(&o.stderr).contains("cannot read /nonexistent/shoal.toml"),
        "{}",
        o.stderr
    );
    let o = shoal(&["--help"]);
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.contains("diff") && o.stdout.contains("down") && o.stdout.contains("run"));
}

#[test]
fn a_bad_file_exits_2_naming_the_item_and_changes_nothing() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    let good = config(&t.n1, &t.net1);
    let cases = [
        (good.replace("vni = 4096", "vni = 4096\nvlan = 3"), "unknown field `vlan`"),
        (good.replace(&format!("netns = \"{}\"\nip", t.c1), "netns = \"no-such-ns\"\nip"), "endpoint `web1` of network `front`: container netns `no-such-ns` does not exist"),
        (good.replace("ip = \"10.77.0.12\"", "ip = \"10.77.0.11\""), "10.77.0.11 is used by both endpoint `web1` and remote 10.77.0.11"),
        (format!("{good}\n[[network]]\nname = \"back\"\nsubnet = \"10.77.0.0/16\"\ngateway = \"10.77.1.1\"\nvni = 4097\n"), "network `back`: subnet 10.77.0.0/16 overlaps subnet 10.77.0.0/24 of network `front`"),
        (format!("{good}\n[[network]]\nname = \"back\"\nsubnet = \"10.78.0.0/24\"\ngateway = \"10.78.0.1\"\nvni = 4096\n"), "network `back`: vni 4096 is already used by network `front`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = files.write(&format!("bad{i}.toml"), text);
        for sub in ["apply", "diff", "run"] {
            let o = shoal(&[sub, f.to_str().unwrap()]);
            assert_eq!(o.code, Some(2), "{sub} case {i}: {o:?}");
            assert!(
                one_line(&o.stderr).contains(want),
                "{sub} case {i}: {}",
                o.stderr
            );
        }
    }
    assert!(
        !lab.namespaces().iter().any(|n| n.starts_with("shoal.")),
        "nothing half-applied"
    );
}

#[test]
fn diff_prints_the_plan_and_changes_nothing() {
    let mut lab = Lab::new();
    let t = two_nodes(&mut lab, 1500);
    let files = Files::new(&lab);
    let f = files.write("n1.toml", &config(&t.n1, &t.net1));
    let plan = ok("diff", &f);
    assert!(plan.contains("front: ip netns add <sandbox>"), "{plan}");
    assert!(
        plan.contains(
            "bridge fdb replace 02:42:0a:4d:00:0c dev vxlan0 dst 198.18.0.2 self permanent"
        ),
        "{plan}"
    );
    assert!(plan.contains("mtu 1450"), "{plan}");
    assert!(!lab.namespaces().iter().any(|n| n.starts_with("shoal.")));
    assert_eq!(ok("apply", &f), plan, "apply does what diff said");
}
