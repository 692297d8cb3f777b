//! A text picture of one namespace's network state, for "nothing changed"
//! and "exactly this" checks. Link indexes are included, so a link deleted
//! and re-created shows up as a difference; timers, counters, learned
//! entries and IPv6 (whose DAD flags change on their own) are not.

use crate::cmd::{ip_in, run};

/// Links, IPv4 addresses, permanent neighbours and FDB entries, and IPv4
/// routes of `ns`.
pub fn of(ns: &str) -> String {
    let mut out = String::new();
    out += &ip_in(ns, &["-o", "link", "show"]);
    out += &ip_in(ns, &["-o", "-4", "addr", "show"]);
    out += &ip_in(ns, &["neigh", "show", "nud", "permanent"]);
    for line in run("bridge", &["-n", ns, "fdb", "show"]).lines() {
        if line.contains("permanent") {
            out += line;
            out.push('\n');
        }
    }
    out += &ip_in(ns, &["-4", "route", "show", "table", "all"]);
    out
}
