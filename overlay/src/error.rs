//! Errors at the crate edge: each names what failed and on what input.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The desired-state file is unreadable or wrong. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type, a missing or an unknown key.
    #[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Parse {
        /// The parser's message (names the key).
        message: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
    },
    /// A name shoal would put into the kernel is not acceptable.
    #[error("{item}: name `{name}` {problem}")]
    BadName {
        /// The item holding the name.
        item: String,
        /// The name.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Two networks' subnets overlap.
    #[error(
        "network `{network}`: subnet {subnet} overlaps subnet {other_subnet} of network `{other}`"
    )]
    Overlap {
        /// The later network.
        network: String,
        /// Its subnet.
        subnet: ipnet::Ipv4Net,
        /// The earlier network.
        other: String,
        /// Its subnet.
        other_subnet: ipnet::Ipv4Net,
    },
    /// A VNI is given to two networks.
    #[error("network `{network}`: vni {vni} is already used by network `{other}`")]
    VniReused {
        /// The later network.
        network: String,
        /// The VNI.
        vni: u32,
        /// The earlier network.
        other: String,
    },
    /// Two networks share a name.
    #[error("network `{0}` is defined twice")]
    DuplicateNetwork(String),
    /// Two items of a network share an IP.
    #[error("network `{network}`: {ip} is used by both {first} and {second}")]
    DuplicateIp {
        /// The network.
        network: String,
        /// The address.
        ip: Ipv4Addr,
        /// The first holder (`gateway`, `endpoint `web1``, ...).
        first: String,
        /// The second holder.
        second: String,
    },
    /// Two items of a network share a MAC.
    #[error("network `{network}`: MAC {mac} is used by both {first} and {second}")]
    DuplicateMac {
        /// The network.
        network: String,
        /// The address.
        mac: crate::mac::Mac,
        /// The first holder.
        first: String,
        /// The second holder.
        second: String,
    },
    /// Two endpoints share an id in one network.
    #[error("network `{network}`: endpoint id `{id}` is used twice")]
    DuplicateEndpoint {
        /// The network.
        network: String,
        /// The id.
        id: String,
    },
    /// Two endpoints would get the same interface in one container.
    #[error("{item}: netns `{netns}` already gets an interface `{ifname}` from {other}")]
    DuplicateInterface {
        /// The later endpoint.
        item: String,
        /// The container namespace.
        netns: String,
        /// The interface name.
        ifname: String,
        /// The earlier endpoint.
        other: String,
    },
    /// A value is outside what it must be in.
    #[error("{item}: {problem}")]
    Invalid {
        /// The item (`network `front``, `endpoint `web1` of network `front``).
        item: String,
        /// What is wrong.
        problem: String,
    },
    /// An endpoint's container namespace does not exist.
    #[error("endpoint `{id}` of network `{network}`: container netns `{netns}` does not exist")]
    MissingNetns {
        /// The network.
        network: String,
        /// The endpoint.
        id: String,
        /// The namespace.
        netns: String,
    },
    /// The node's own namespace does not exist.
    #[error("node `{node}`: netns `{netns}` does not exist")]
    MissingNodeNetns {
        /// The node.
        node: String,
        /// The namespace.
        netns: String,
    },
}

/// Anything the datapath can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The desired state is wrong; nothing was changed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// The request, as the `ip` command it equals, and where.
        what: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// A namespace or system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// The call and its input.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation and its input.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel holds something shoal cannot reconcile by itself.
    #[error("{0}")]
    Conflict(String),
    /// The plan must create a userspace WireGuard device, which lives only
    /// inside a process that hosts it, and the caller hosts none.
    #[error("the node's WireGuard device {0} must be a userspace one (this kernel has no WireGuard module or the file asks for it), and it lives only as long as the process hosting it: `apply` would leave nothing behind. Use `shoal-overlay run FILE`, which hosts it (nothing was changed)")]
    NeedsHost(String),
    /// A namespace worker thread died.
    #[error("namespace worker for {0} stopped unexpectedly")]
    Worker(String),
}

impl Error {
    /// Wraps a netlink error with the request it answered.
    pub fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
        let what = what.into();
        move |source| Error::Netlink { what, source }
    }

    /// Wraps an errno with the call it answered.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }

    /// Wraps an I/O error with the operation it answered.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// True when a netlink error carries errno `code` (e.g. `libc` ENODEV = 19).
pub(crate) fn is_errno(e: &rtnetlink::Error, code: nix::errno::Errno) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -(code as i32))
}
