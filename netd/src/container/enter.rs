//! Starting a container's process: `netd __enter` moves a fresh process
//! into the container's network namespace and a mount namespace of its own
//! (where /etc/resolv.conf is the container's file), then execs the command.
//!
//! `setns(CLONE_NEWNET)`, `unshare(2)` and `sethostname(2)` change only the
//! calling thread, and `execve(2)` hands the exec'ing thread's namespaces to
//! the new program. So the steps must all run on the thread that execs;
//! netd runs them in a process of their own ([`command_in`] builds its
//! command line) rather than in the multi-threaded agent, whose other
//! threads must stay where they are, and without `pre_exec`, which is
//! `unsafe`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use shoal_overlay::netns::NsTarget;

/// Where a container sees its resolver configuration.
const RESOLV_TARGET: &str = "/etc/resolv.conf";

/// Enters a container and execs its command; returns only on failure.
///
/// In order: `setns` into the network namespace `netns` (a name under
/// /run/netns, or an absolute path), `unshare` a new mount namespace (and a
/// new UTS namespace when `hostname` is given, then `sethostname`), make "/"
/// recursively private so nothing below propagates back to the host,
/// bind-mount `resolv_conf` read-only onto /etc/resolv.conf (which must
/// exist; a symlink is followed), then exec `argv` (`argv[0]` is looked up
/// in `PATH`) with the environment inherited.
///
/// Meant for the freshly started, still single-threaded `netd __enter`
/// process. The namespace calls change only the calling thread and exec
/// carries that thread's namespaces into the new program, so this is sound
/// on whichever thread calls it, but the other threads of a multi-threaded
/// caller are left behind and then ended by the exec: never call it inside
/// the agent. The error names the failed step, e.g.
/// `setns into netns web1: Operation not permitted`.
pub fn enter_and_exec(
    netns: &str,
    resolv_conf: &Path,
    hostname: Option<&str>,
    argv: &[String],
) -> io::Error {
    let Some((program, args)) = argv.split_first() else {
        return io::Error::new(io::ErrorKind::InvalidInput, "enter: no command to run");
    };
    if let Err(e) = enter(netns, resolv_conf, hostname) {
        return e;
    }
    let e = Command::new(program).args(args).exec();
    io::Error::new(e.kind(), format!("exec {program}: {e}"))
}

/// The namespace steps of [`enter_and_exec`].
fn enter(netns: &str, resolv_conf: &Path, hostname: Option<&str>) -> io::Result<()> {
    let target = NsTarget::from_config(netns);
    let path = match &target {
        NsTarget::Path(p) => p.clone(),
        NsTarget::Current => PathBuf::from("/proc/self/ns/net"),
    };
    let file = std::fs::File::open(&path)
        .map_err(|e| step(format!("open {target} ({})", path.display()), e))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| step(format!("setns into {target}"), e))?;
    drop(file);

    let mut flags = CloneFlags::CLONE_NEWNS;
    if hostname.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    let what = match hostname {
        Some(_) => "unshare mount and UTS namespaces",
        None => "unshare a mount namespace",
    };
    unshare(flags).map_err(|e| step(what.to_string(), e))?;
    if let Some(name) = hostname {
        nix::unistd::sethostname(name).map_err(|e| step(format!("sethostname {name}"), e))?;
    }

    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(|e| step("make / private".to_string(), e))?;
    let what = format!("bind-mount {} on {RESOLV_TARGET}", resolv_conf.display());
    mount(
        Some(resolv_conf),
        RESOLV_TARGET,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| step(what.clone(), e))?;
    // A bind remount may not clear flags the source mount has, so keep them.
    let kept = statvfs(RESOLV_TARGET)
        .map_err(|e| step(format!("statvfs {RESOLV_TARGET}"), e))?
        .flags();
    let mut ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if kept.contains(fs) {
            ro |= ms;
        }
    }
    mount(None::<&str>, RESOLV_TARGET, None::<&str>, ro, None::<&str>)
        .map_err(|e| step(format!("{what}: make it read-only"), e))?;
    Ok(())
}

/// The command that runs `argv` inside a container through netd itself:
///
/// ```text
/// NETD_EXE __enter --netns NETNS --resolv RESOLV_CONF [--hostname HOSTNAME] -- ARGV...
/// ```
///
/// This is the contract with the hidden `__enter` subcommand: it takes
/// exactly these flags (`--hostname` optional; everything after `--` is the
/// command, kept verbatim even where it starts with `-`) and calls
/// [`enter_and_exec`] with them, exiting non-zero with its error if that
/// returns. The caller sets stdio, the environment and the working
/// directory on the returned command; they carry through the exec.
pub fn command_in(
    netd_exe: &Path,
    netns: &str,
    resolv_conf: &Path,
    hostname: Option<&str>,
    argv: &[String],
) -> Command {
    let mut cmd = Command::new(netd_exe);
    cmd.arg("__enter")
        .arg("--netns")
        .arg(netns)
        .arg("--resolv")
        .arg(resolv_conf);
    if let Some(h) = hostname {
        cmd.arg("--hostname").arg(h);
    }
    cmd.arg("--").args(argv.iter().map(OsStr::new));
    cmd
}

fn step(what: String, e: impl Into<io::Error>) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::test_support::{unique, NsGuard, TempDir};
    use crate::container::{write_resolv_conf, ContainerNs};
    use std::net::Ipv4Addr;
    use std::os::unix::fs::MetadataExt;

    const HELPER_ENV: &str = "SHOAL_ENTER_TEST";
    const SEP: char = '\u{1f}';

    /// Not a test of its own: the child half of `enter_runs_inside`. The
    /// test binary re-runs itself with only this test selected and
    /// `SHOAL_ENTER_TEST` set to NETNS, RESOLV, HOSTNAME, ARGV... separated
    /// by 0x1f; this enters and execs, or prints the error and exits 121.
    #[test]
    #[ignore = "not a test: the child process the other tests run (with --ignored)"]
    fn enter_helper() {
        let Ok(spec) = std::env::var(HELPER_ENV) else {
            return;
        };
        let mut parts = spec.split(SEP).map(str::to_string);
        let netns = parts.next().unwrap();
        let resolv = PathBuf::from(parts.next().unwrap());
        let hostname = parts.next().filter(|h| !h.is_empty());
        let argv: Vec<String> = parts.collect();
        let e = enter_and_exec(&netns, &resolv, hostname.as_deref(), &argv);
        eprintln!("@@ERROR {e}");
        std::process::exit(121);
    }

    /// Runs the helper; returns (exit code, stdout, stderr).
    fn run_helper(
        netns: &str,
        resolv: &Path,
        hostname: &str,
        argv: &[&str],
    ) -> (i32, String, String) {
        let mut spec = vec![
            netns.to_string(),
            resolv.display().to_string(),
            hostname.to_string(),
        ];
        spec.extend(argv.iter().map(|a| a.to_string()));
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "container::enter::tests::enter_helper",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(HELPER_ENV, spec.join(&SEP.to_string()))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the helper");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The text between `@@{from}` and the next `@@` marker.
    fn section<'a>(out: &'a str, from: &str) -> &'a str {
        let start = out.find(&format!("@@{from}\n")).expect(from) + from.len() + 3;
        let rest = &out[start..];
        &rest[..rest.find("@@").unwrap_or(rest.len())]
    }

    #[test]
    fn enter_runs_inside() {
        let name = unique("enter");
        ContainerNs::create(&name).unwrap();
        let _ns = NsGuard(name.clone());
        let dir = TempDir::new("enter");
        let search = ["web.svc.shoal".to_string(), "shoal".to_string()];
        let resolv = write_resolv_conf(&dir.0, Ipv4Addr::new(10, 9, 8, 7), &search).unwrap();
        let wanted = std::fs::read_to_string(&resolv).unwrap();
        let host_resolv = std::fs::read(RESOLV_TARGET).unwrap();
        let host_name = nix::unistd::gethostname().unwrap();
        let ns_ino = std::fs::metadata(format!("/run/netns/{name}"))
            .unwrap()
            .ino();
        let host_ino = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_ne!(ns_ino, host_ino);

        let script = "echo @@RESOLV; cat /etc/resolv.conf; \
                      echo @@NS; readlink /proc/self/ns/net; \
                      echo @@HOST; cat /proc/sys/kernel/hostname; \
                      echo @@DEV; cat /proc/net/dev; \
                      echo @@WRITE; (echo x >> /etc/resolv.conf) 2>/dev/null && echo writable || echo readonly; \
                      echo @@END";
        let (code, out, err) = run_helper(&name, &resolv, "ctr-one", &["sh", "-c", script]);
        assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
        assert_eq!(section(&out, "RESOLV"), wanted);
        assert_eq!(section(&out, "NS").trim(), format!("net:[{ns_ino}]"));
        assert_eq!(section(&out, "HOST").trim(), "ctr-one");
        assert!(section(&out, "DEV").contains("lo:"), "{out}");
        assert_eq!(section(&out, "WRITE").trim(), "readonly");

        // The host saw none of it.
        assert_eq!(std::fs::read(RESOLV_TARGET).unwrap(), host_resolv);
        assert_eq!(nix::unistd::gethostname().unwrap(), host_name);
        assert_eq!(std::fs::read_to_string(&resolv).unwrap(), wanted);

        // A failed exec comes back as an error naming the step.
        let (code, _, err) = run_helper(&name, &resolv, "", &["/nonexistent/shoal-prog"]);
        assert_eq!(code, 121, "{err}");
        assert!(
            err.contains("@@ERROR exec /nonexistent/shoal-prog:"),
            "{err}"
        );
    }

    #[test]
    fn enter_fails_early_and_names_the_step() {
        let argv = vec!["true".to_string()];
        let missing = unique("missing");
        let e = enter_and_exec(&missing, Path::new("/nonexistent"), None, &argv);
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string().contains(&format!("open netns {missing}")),
            "{e}"
        );
        let e = enter_and_exec(&missing, Path::new("/nonexistent"), None, &[]);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn command_line_contract() {
        let argv = vec![
            "nginx".to_string(),
            "-g".to_string(),
            "daemon off;".to_string(),
        ];
        let cmd = command_in(
            Path::new("/usr/bin/netd"),
            "c1",
            Path::new("/run/shoal/c1/resolv.conf"),
            Some("web-1"),
            &argv,
        );
        assert_eq!(cmd.get_program(), "/usr/bin/netd");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "__enter",
                "--netns",
                "c1",
                "--resolv",
                "/run/shoal/c1/resolv.conf",
                "--hostname",
                "web-1",
                "--",
                "nginx",
                "-g",
                "daemon off;"
            ]
        );
        let cmd = command_in(Path::new("netd"), "c1", Path::new("r"), None, &argv[..1]);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            ["__enter", "--netns", "c1", "--resolv", "r", "--", "nginx"]
        );
    }
}
