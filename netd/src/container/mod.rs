//! Containers as this node runs them: a named network namespace under
//! /run/netns plus a process running in it, with a resolv.conf of its own.
//!
//! # Layout
//! - this file: [`ContainerNs`] (the namespace, made with `lo` up, and
//!   removed) and [`write_resolv_conf`].
//! - [`enter`]: `netd __enter` ([`enter_and_exec`]) and the command line that
//!   calls it ([`command_in`]).
//! - [`process`]: waiting for, identifying and stopping a process through a
//!   pidfd ([`ProcessWatch`], [`wait_exit`], [`alive`], [`start_time`],
//!   [`stop_process`]).

pub mod enter;
pub mod process;
#[cfg(test)]
mod test_support;

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_overlay::kernel::link;
use shoal_overlay::netns::{self, NsTarget};
use shoal_overlay::Error;

pub use enter::{command_in, enter_and_exec};
pub use process::{alive, start_time, stop_process, wait_exit, ProcessWatch, StopOutcome};

/// A container's network namespace, /run/netns/NAME.
///
/// Not a guard: the namespace outlives this value (and the agent); it goes
/// only through [`ContainerNs::remove`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNs {
    name: String,
}

impl ContainerNs {
    /// Creates /run/netns/NAME (as `ip netns add NAME`) and brings its
    /// loopback up (as `ip -n NAME link set lo up`; a new namespace has `lo`
    /// down). Fails if the namespace exists already; on a failure after the
    /// namespace was made, it is removed again.
    pub fn create(name: &str) -> Result<ContainerNs, Error> {
        check_name(name)?;
        netns::create(name)?;
        let up = netns::run_in(&NsTarget::from_config(name), |h| async move {
            let lo = link::by_name(&h, "lo")
                .await?
                .ok_or_else(|| Error::Conflict("lo is missing in a new netns".to_string()))?;
            link::set_up(&h, lo.index, "lo").await
        });
        if let Err(e) = up {
            let _ = netns::delete(name);
            return Err(e);
        }
        Ok(ContainerNs {
            name: name.to_string(),
        })
    }

    /// Removes /run/netns/NAME (as `ip netns delete NAME`); succeeds if it
    /// is already gone. The kernel frees the namespace and its links once no
    /// process holds it any more.
    pub fn remove(name: &str) -> Result<(), Error> {
        check_name(name)?;
        netns::delete(name)
    }

    /// The namespace's name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// /run/netns/NAME.
    pub fn path(&self) -> PathBuf {
        Path::new(netns::NETNS_DIR).join(&self.name)
    }
}

/// A namespace name must be one plain file name under /run/netns.
fn check_name(name: &str) -> Result<(), Error> {
    let bad = name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']);
    if bad {
        return Err(Error::io(format!("container netns name `{name}`"))(
            io::Error::new(io::ErrorKind::InvalidInput, "must be a plain file name"),
        ));
    }
    Ok(())
}

/// Writes DIR/resolv.conf for a container:
///
/// ```text
/// nameserver NAMESERVER
/// search SEARCH...        (left out when `search` is empty)
/// options ndots:0
/// ```
///
/// atomically (a temporary file in DIR, then a rename), so a reader sees
/// the old or the new file, never half of one. Returns the file's path.
/// A running container sees the file through a bind mount, which holds the
/// inode it was made with: a rewrite reaches containers started after it,
/// not running ones. A search domain must be non-empty and free of
/// whitespace.
pub fn write_resolv_conf(
    dir: &Path,
    nameserver: Ipv4Addr,
    search: &[String],
) -> io::Result<PathBuf> {
    if let Some(bad) = search
        .iter()
        .find(|d| d.is_empty() || d.chars().any(char::is_whitespace))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("resolv.conf: bad search domain {bad:?}"),
        ));
    }
    let mut text = format!("nameserver {nameserver}\n");
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    text.push_str("options ndots:0\n");

    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = dir.join("resolv.conf");
    let tmp = dir.join(format!(
        ".resolv.conf.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let named = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(named("write", &tmp))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(named("rename onto", &path)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::test_support::{unique, NsGuard, TempDir};
    use super::*;

    fn lo_up(name: &str) -> bool {
        netns::run_in(&NsTarget::from_config(name), |h| async move {
            Ok(link::by_name(&h, "lo").await?.is_some_and(|l| l.up))
        })
        .unwrap()
    }

    #[test]
    fn create_brings_lo_up_and_remove_deletes() {
        let name = unique("ns");
        let ns = ContainerNs::create(&name).unwrap();
        let _guard = NsGuard(name.clone());
        assert_eq!(ns.name(), name);
        assert!(ns.path().exists());
        assert!(lo_up(&name));
        let shown = std::process::Command::new("ip")
            .args(["-n", &name, "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.contains("UP"), "{shown}");

        assert!(ContainerNs::create(&name).is_err(), "created twice");
        ContainerNs::remove(&name).unwrap();
        assert!(!ns.path().exists());
        assert!(!netns::exists(&name));
        ContainerNs::remove(&name).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(ContainerNs::create(bad).is_err(), "{bad:?}");
            assert!(ContainerNs::remove(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolv_conf_is_written_and_replaced() {
        let dir = TempDir::new("resolv");
        let search = vec!["web.svc.shoal".to_string(), "shoal".to_string()];
        let path = write_resolv_conf(&dir.0, Ipv4Addr::new(10, 0, 0, 2), &search).unwrap();
        assert_eq!(path, dir.0.join("resolv.conf"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 10.0.0.2\nsearch web.svc.shoal shoal\noptions ndots:0\n"
        );
        write_resolv_conf(&dir.0, Ipv4Addr::new(10, 0, 0, 3), &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 10.0.0.3\noptions ndots:0\n"
        );
        let bad = write_resolv_conf(&dir.0, Ipv4Addr::LOCALHOST, &["a b".to_string()]);
        assert_eq!(bad.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
    }
}
