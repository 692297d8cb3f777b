//! Untrusted input: whatever the text, `parse` returns; it never panics,
//! overflows the stack or blows up memory.

use proptest::prelude::*;

use super::parse;
use super::tests::FULL;

/// Pieces that YAML and compose give meaning to.
const TOKENS: &[&str] = &[
    "\n",
    "  ",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "<<: ",
    "!x ",
    "!!str ",
    "'",
    "\"",
    "#",
    "|\n",
    ">\n",
    "? ",
    "---\n",
    "...\n",
    "~",
    "null",
    "services:",
    "networks:",
    "deploy:",
    "ports:",
    "labels:",
    "command:",
    "healthcheck:",
    "8080:8000/udp",
    "shoal.lb.policy=",
    "\\",
    "\t",
    "%YAML 1.2\n",
    "\u{feff}",
    "é",
    "\0",
];

fn never_panics(text: &str) {
    if let Err(e) = parse("garbage.yml", text) {
        let _ = e.to_string();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn token_soup_never_panics(picks in prop::collection::vec(0..TOKENS.len(), 0..80)) {
        let text: String = picks.iter().map(|&i| TOKENS[i]).collect();
        never_panics(&text);
    }

    #[test]
    fn any_text_never_panics(text in "\\PC{0,200}") {
        never_panics(&text);
    }

    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..TOKENS.len(), 0..8usize), 1..6)
    ) {
        let mut text: Vec<char> = FULL.chars().collect();
        for (at, token, cut) in edits {
            let at = at.index(text.len() + 1);
            let end = (at + cut).min(text.len());
            text.splice(at..end, TOKENS[token].chars());
        }
        never_panics(&text.into_iter().collect::<String>());
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing() {
    for text in [
        "[".repeat(100_000),
        "{a: ".repeat(100_000),
        "- ".repeat(200_000),
        "? ".repeat(200_000),
        format!("a: &x {}1{}\nb: *x\n", "[".repeat(60), "]".repeat(60)),
    ] {
        never_panics(&text);
    }
    let e = parse("c.yml", &"- ".repeat(100_000)).unwrap_err();
    assert!(e.message.contains("nested"), "{e}");
}

#[test]
fn alias_bombs_and_big_files_are_refused() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = parse("c.yml", &bomb).unwrap_err();
    assert!(e.message.contains("alias"), "{e}");
    let e = parse("c.yml", &format!("x-pad: \"{}\"\n", "a".repeat(2 << 20))).unwrap_err();
    assert!(e.message.contains("larger"), "{e}");
    // Chains of merges and aliases stay within the budget.
    let mut chain = String::from("x-0: &m0 { command: [a] }\n");
    for i in 1..200 {
        chain.push_str(&format!("x-{i}: &m{i} {{ <<: *m{}, x-{i}: 1 }}\n", i - 1));
    }
    never_panics(&chain);
}

#[test]
fn hostile_values_are_shown_escaped_and_cut() {
    let long = "\u{1b}[31m".repeat(100);
    let e = parse(
        "c.yml",
        &format!(
            "services:\n  s:\n    deploy: {{ labels: {{ shoal.lb.policy: \"{}\" }} }}\n",
            long.replace('\u{1b}', "\\e")
        ),
    )
    .unwrap_err();
    assert!(
        !e.message.contains('\u{1b}') && e.message.len() < 1000,
        "{e}"
    );
}
