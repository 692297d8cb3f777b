//! shoal-overlay: the kernel datapath of a shoal node.
//!
//! A desired state (the TOML file of [`config`]) goes in; the crate observes
//! what the kernel holds, computes a [`plan::Plan`] (a plain diff), and
//! executes it through rtnetlink, never by running `ip`. It knows nothing of
//! the cluster: `shoal-netd` hands it plain inputs, and the `shoal-overlay`
//! binary hands it a file.
//!
//! Per node and network it builds a sandbox namespace `shoal.<node>.<net>`
//! with bridge `br0` (gateway, lb address and VIPs), a VXLAN device whose UDP
//! socket lives in the node's namespace (learning off, ARP proxy on), one
//! permanent neighbour and FDB entry per remote endpoint, and a veth pair per
//! local container. All namespace work runs on dedicated threads that enter
//! the namespace first ([`netns::NsWorker`]), never on tokio workers; the
//! API is blocking, so async callers use `spawn_blocking`.
//!
//! Not yet built: encrypted networks (VXLAN over a WireGuard mesh). The
//! `[wireguard]` section is parsed and documented, but a network with
//! `encrypted = true` is refused at validation rather than built in clear.
//!
//! # Layout
//! - [`config`]: the file's types and every key, parsing (unknown keys refused).
//! - [`validate`]: rules between items (overlaps, duplicates, missing namespaces).
//! - [`mac`]: MAC addresses and the Docker-style derivation from IPv4.
//! - [`names`]: every name and alias shoal puts into the kernel, node-unique.
//! - [`netns`]: named namespaces (add/delete without `ip`) and per-namespace workers.
//! - [`kernel`]: rtnetlink requests, one file per object kind.
//! - [`state`]: the shape of observed and desired kernel state.
//! - [`observe`]: reads the current state of a node.
//! - [`desired`]: the state a config asks for, with the MTU from the underlay.
//! - [`plan`]: the diff between the two, printable.
//! - [`exec`]: runs a plan.
//! - [`error`]: errors naming what failed on what input.

#![forbid(unsafe_code)]

pub mod config;
pub mod desired;
pub mod error;
pub mod exec;
pub mod kernel;
pub mod mac;
pub mod names;
pub mod netns;
pub mod observe;
pub mod plan;
pub mod state;
pub mod validate;

pub use config::Config;
pub use error::{ConfigError, Error};
pub use plan::Plan;

use names::Names;
use netns::NsTarget;

/// Where per-node lock files live.
pub const LOCK_DIR: &str = "/run/shoal";

/// One node's overlay, from a validated config.
#[derive(Debug, Clone)]
pub struct Overlay {
    config: Config,
    names: Names,
    node_ns: NsTarget,
}

impl Overlay {
    /// Validates `config` against the rules and the namespaces that exist.
    pub fn new(config: Config) -> Result<Overlay, Error> {
        validate::validate(&config, &netns::exists)?;
        Ok(Overlay {
            names: Names::new(&config.node.name),
            node_ns: NsTarget::from_option(config.node.netns.as_deref()),
            config,
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What `apply` would do now. Also checks, before anything changes, that
    /// no new container interface would collide with one shoal does not own.
    pub fn plan(&self) -> Result<Plan, Error> {
        let current = observe::observe(&self.names, &self.node_ns)?;
        let mtus = desired::mtus(&self.config, &self.node_ns)?;
        let plan = plan::diff(&current, &desired::desired(&self.config, &mtus));
        for item in &plan.items {
            if let (Some(net), plan::Step::Attach { id, attachment }) = (&item.network, &item.step)
            {
                let replaced = current
                    .sandboxes
                    .get(net)
                    .is_some_and(|s| s.endpoints.contains_key(id));
                if !replaced {
                    observe::check_free(&self.names, net, id, attachment)?;
                }
            }
        }
        Ok(plan)
    }

    /// Makes the kernel match the config; returns what was done (empty when
    /// it already matched). Holds the node's lock while it works, so two
    /// applies for one node never interleave.
    pub fn apply(&self) -> Result<Plan, Error> {
        let _lock = self.lock()?;
        let plan = self.plan()?;
        exec::Executor::new(self.names.clone(), self.node_ns.clone()).run(&plan)?;
        Ok(plan)
    }

    /// What `down` would do now.
    pub fn plan_down(&self) -> Result<Plan, Error> {
        Ok(plan::down(&observe::observe(&self.names, &self.node_ns)?))
    }

    /// Removes everything shoal created for this node.
    pub fn down(&self) -> Result<Plan, Error> {
        let _lock = self.lock()?;
        let plan = self.plan_down()?;
        exec::Executor::new(self.names.clone(), self.node_ns.clone()).run(&plan)?;
        Ok(plan)
    }

    /// An exclusive `flock` on /run/shoal/<node>.lock, released on drop.
    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
        std::fs::create_dir_all(LOCK_DIR).map_err(Error::io(format!("create {LOCK_DIR}")))?;
        let path = format!("{LOCK_DIR}/{}.lock", self.config.node.name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("open {path}")))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::sys(format!("flock {path}"))(e))
    }
}
