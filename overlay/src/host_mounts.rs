//! Which mount namespace named network namespaces are mounted in.
//!
//! `ip netns exec` (and tools like it) run their command in a copy of the
//! mount namespace it came from, with every mount made a *slave*: mounts
//! from the original still arrive, but mounts made in the copy go nowhere.
//! A namespace mounted onto /run/netns/NAME from there is an empty file to
//! every other process (later agents, `netd run`, `ip netns`), and stays
//! one when the process ends. So a process that makes or enters named
//! namespaces first joins the mount namespace its /run/netns comes from.
//!
//! That namespace is found by mount propagation, not by PID 1 (whose
//! namespaces may be closed to us, as in some sandboxes): the mount holding
//! /run/netns says `master:N` in /proc/self/mountinfo, and the namespace to
//! join is one whose mount at the same place is a member of peer group `N`
//! (`shared:N`; it may be a slave of another group itself, as in a
//! container). Any process found there serves as the handle.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use nix::sched::{setns, CloneFlags};

use crate::error::Error;
use crate::netns::NETNS_DIR;

/// Why this process cannot make namespaces that others see.
#[derive(Debug, thiserror::Error)]
pub enum HostMountsError {
    /// The mounts here are a slave copy and no process of the namespace
    /// they come from could be found or joined.
    #[error(
        "this process runs in a copy of a mount namespace (as `ip netns exec` makes) whose mounts \
         under {NETNS_DIR} reach no other process, and no process of the namespace they come \
         from could be joined{0}"
    )]
    Unjoinable(String),
    /// /proc could not be read.
    #[error(transparent)]
    Other(#[from] Error),
}

/// Moves this process into the mount namespace its /run/netns comes from
/// when it runs in a slave copy of it (see the module docs), keeping the
/// working directory by path so relative paths on the command line mean
/// what they meant. Returns whether it moved. Only the mount namespace
/// changes: the network namespace `ip netns exec` put it in stays.
///
/// Call it while the process has a single thread: the kernel refuses to
/// move a multi-threaded process to another mount namespace.
pub fn join_host_mounts() -> Result<bool, HostMountsError> {
    let mine = read_mountinfo("self")?;
    let Some((point, group)) = master_of(&mine) else {
        return Ok(false);
    };
    let own = mnt_id("self").map_err(Error::io("read /proc/self/ns/mnt"))?;
    let mut tried = std::collections::BTreeSet::from([own]);
    let mut last_error = String::new();
    for pid in pids()? {
        let Ok(id) = mnt_id(&pid) else { continue };
        if !tried.insert(id) {
            continue;
        }
        let Ok(info) = read_mountinfo(&pid) else {
            continue;
        };
        if !holds_group(&info, group, &point) {
            continue;
        }
        match enter(&pid) {
            Ok(()) => return Ok(true),
            Err(e) => last_error = format!(" ({e})"),
        }
    }
    Err(HostMountsError::Unjoinable(last_error))
}

/// The mount point holding /run/netns and the peer group it receives
/// from, if it is a slave: the `master:N` tag of the last (topmost) mount
/// whose mount point is /run/netns or one of its parents, the longest such.
fn master_of(mountinfo: &str) -> Option<(String, u64)> {
    let mut best: Option<(String, Option<u64>)> = None;
    for line in mountinfo.lines() {
        let Some((point, tags)) = parse_line(line) else {
            continue;
        };
        let covers = NETNS_DIR == point
            || point == "/"
            || NETNS_DIR
                .strip_prefix(point.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        if covers && best.as_ref().is_none_or(|(p, _)| point.len() >= p.len()) {
            let master = tag(&tags, "master:");
            best = Some((point, master));
        }
    }
    best.and_then(|(point, master)| Some((point, master?)))
}

/// True if the mount at `point` in `mountinfo` is a member of peer group
/// `group`: mounts made under it reach that group's slaves.
fn holds_group(mountinfo: &str, group: u64, point: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(parse_line)
        .any(|(p, tags)| p == point && tag(&tags, "shared:") == Some(group))
}

/// A mountinfo line's mount point (octal escapes undone) and its optional
/// fields (`shared:N`, `master:N`, ...).
fn parse_line(line: &str) -> Option<(String, Vec<&str>)> {
    let (before, _) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let point = unescape(fields.get(4)?);
    Some((point, fields.get(6..).unwrap_or_default().to_vec()))
}

fn tag(tags: &[&str], name: &str) -> Option<u64> {
    tags.iter().find_map(|t| t.strip_prefix(name)?.parse().ok())
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_mountinfo(pid: &str) -> Result<String, Error> {
    let path = format!("/proc/{pid}/mountinfo");
    std::fs::read_to_string(&path).map_err(Error::io(format!("read {path}")))
}

fn mnt_id(pid: &str) -> std::io::Result<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| (m.dev(), m.ino()))
}

/// Every process id, lowest first (so long-lived ancestors come early).
fn pids() -> Result<Vec<String>, Error> {
    let dir = std::fs::read_dir("/proc").map_err(Error::io("list /proc"))?;
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids.into_iter().map(|p| p.to_string()).collect())
}

/// Joins the mount namespace of process `pid`, keeping the working
/// directory by path.
fn enter(pid: &str) -> Result<(), Error> {
    let path = format!("/proc/{pid}/ns/mnt");
    let ns = File::open(&path).map_err(Error::io(format!("open {path}")))?;
    let cwd = std::env::current_dir().ok();
    setns(&ns, CloneFlags::CLONE_NEWNS).map_err(Error::sys(format!(
        "enter the mount namespace of process {pid}"
    )))?;
    if let Some(dir) = cwd {
        // The directory may not exist there; then "/" it is.
        let _ = std::env::set_current_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // As seen from the host and from `ip netns exec` on this kernel.
    const HOST: &str = "\
48 27 254:0 / / rw,relatime - ext4 /dev/vda rw
45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
46 45 0:4 net:[4026532174] /run/netns/n1 rw shared:2 - nsfs nsfs rw";
    const EXEC: &str = "\
48 47 254:0 / / rw,relatime - ext4 /dev/vda rw
68 48 254:0 /run/netns /run/netns rw,relatime master:1 - ext4 /dev/vda rw
69 68 0:4 net:[4026532174] /run/netns/n1 rw master:2 - nsfs nsfs rw
51 48 0:40 / /sys rw,relatime - sysfs n1 rw";
    // A systemd host: everything shared, /run its own mount.
    const SYSTEMD_EXEC: &str = "\
20 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw
21 20 0:5 / /run rw,nosuid master:12 - tmpfs tmpfs rw
22 20 0:6 / /runx rw shared:13 - tmpfs tmpfs rw";

    #[test]
    fn a_slave_copy_names_its_master_and_the_host_has_none() {
        assert_eq!(master_of(EXEC), Some(("/run/netns".into(), 1)));
        assert_eq!(master_of(HOST), None);
        // /run holds /run/netns; /runx does not.
        assert_eq!(master_of(SYSTEMD_EXEC), Some(("/run".into(), 12)));
    }

    #[test]
    fn the_namespace_to_join_holds_the_group_at_the_same_place() {
        assert!(holds_group(HOST, 1, "/run/netns"));
        assert!(!holds_group(HOST, 7, "/run/netns"));
        assert!(!holds_group(HOST, 1, "/elsewhere"));
        assert!(!holds_group(EXEC, 1, "/run/netns"));
        // A member of the group that is itself a slave (a container's
        // mounts) is still where the mounts must be made.
        let nested = "45 27 254:0 /run/netns /run/netns rw shared:1 master:9 - ext4 /dev/vda rw";
        assert!(holds_group(nested, 1, "/run/netns"));
    }

    #[test]
    fn mount_points_are_unescaped() {
        let line = "1 2 0:1 / /a\\040b\\134c rw shared:3 - tmpfs t rw";
        let (point, tags) = parse_line(line).unwrap();
        assert_eq!(point, "/a b\\c");
        assert_eq!(tags, ["shared:3"]);
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("1 2 - x").is_none());
    }
}
