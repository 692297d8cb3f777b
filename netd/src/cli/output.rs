//! Printing answers: aligned tables for people, JSON for scripts.

use serde::Serialize;

use crate::model::{Port, PortMode};
use crate::ops::StackReport;

/// Prints `v` as pretty JSON.
pub fn print_json(v: &impl Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("netd: cannot print JSON: {e}"),
    }
}

/// A port as the CLI writes it: `8080:8000/http`.
pub fn port(p: &Port) -> String {
    let mode = match p.mode {
        PortMode::Tcp => "",
        PortMode::Http => "/http",
    };
    match p.published {
        Some(pub_) => format!("{pub_}:{}{mode}", p.target),
        None => format!("{}{mode}", p.target),
    }
}

/// A table with a header row.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new<const N: usize>(header: [&str; N]) -> Table {
        Table {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.to_vec());
    }

    /// The table as text, columns padded to their widest cell.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
                .collect();
            out.push_str(line.join("   ").trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints it.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A stack deploy report as lines: `created network back`, one per
/// object, in the order the deploy went.
pub fn report_lines(r: &StackReport) -> Vec<String> {
    let mut out = Vec::new();
    for (what, items) in [
        ("created", &r.created),
        ("updated", &r.updated),
        ("unchanged", &r.unchanged),
    ] {
        out.extend(
            items
                .iter()
                .map(|i| format!("{what} {} {}", i.kind, i.name)),
        );
    }
    out
}

/// Prints a stack deploy report.
pub fn print_report(r: &StackReport) {
    for l in report_lines(r) {
        println!("{l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(["NAME", "IP"]);
        t.row(["web.1".into(), "10.0.0.2".into()]);
        t.row(["a".into(), "".into()]);
        assert_eq!(t.render(), "NAME    IP\nweb.1   10.0.0.2\na\n");
    }

    #[test]
    fn stack_reports_name_kind_and_change() {
        let item = |kind: &str, name: &str| crate::ops::StackItem {
            kind: kind.into(),
            name: name.into(),
        };
        let r = StackReport {
            stack: "demo".into(),
            created: vec![item("network", "back"), item("service", "web")],
            updated: vec![],
            unchanged: vec![item("service", "client")],
        };
        assert_eq!(
            report_lines(&r),
            [
                "created network back",
                "created service web",
                "unchanged service client"
            ]
        );
    }

    #[test]
    fn ports_print_as_written() {
        let p = crate::spec::parse_port("8080:8000/http").unwrap();
        assert_eq!(port(&p), "8080:8000/http");
        assert_eq!(port(&crate::spec::parse_port("53").unwrap()), "53");
    }
}
