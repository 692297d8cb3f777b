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
//! Encrypted networks run their VXLAN over the node's WireGuard device
//! ([`mesh`]): kernel WireGuard where the module exists, else a userspace
//! device of shoal's own (boringtun's protocol state machine, batched I/O)
//! that lives inside the process hosting it, a
//! [`DeviceHost`]. So `apply` alone refuses to create a userspace device
//! (it would die with the command); `shoal-overlay run` hosts it, and any
//! process can reconfigure a live one through its UAPI socket.
//!
//! # Layout
//! - [`config`]: the file's types and every key, parsing (unknown keys refused).
//! - [`validate`]: rules between items (overlaps, duplicates, missing namespaces).
//! - [`mac`]: MAC addresses and the Docker-style derivation from IPv4.
//! - [`names`]: every name and alias shoal puts into the kernel, node-unique.
//! - [`netns`]: named namespaces (add/delete without `ip`, leftovers of a crash
//!   replaced) and per-namespace workers.
//! - [`host_mounts`]: joining the mount namespace named namespaces belong in
//!   (for processes started by `ip netns exec`).
//! - [`kernel`]: rtnetlink requests, one file per object kind.
//! - [`state`]: the shape of observed and desired kernel state.
//! - [`observe`]: reads the current state of a node.
//! - [`desired`]: the state a config asks for, with the MTU from the underlay.
//! - [`plan`]: the diff between the two, printable.
//! - [`exec`]: runs a plan.
//! - [`mesh`]: the node's WireGuard device: backend choice, observe, diff, host.
//! - [`validate_mesh`]: the rules of the `[wireguard]` section.
//! - [`error`]: errors naming what failed on what input.

// One `unsafe` block in the crate: the TUN ioctl in `mesh::device::sys`.
#![deny(unsafe_code)]

pub mod config;
pub mod desired;
pub mod error;
pub mod exec;
pub mod host_mounts;
pub mod kernel;
pub mod mac;
pub mod mesh;
pub mod names;
pub mod netns;
pub mod observe;
pub mod plan;
pub mod state;
pub mod validate;
pub mod validate_mesh;

pub use config::Config;
pub use error::{ConfigError, Error};
pub use mesh::DeviceHost;
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
    /// When the node needs a WireGuard device, the plan's notes say which
    /// backend it gets and why.
    pub fn plan(&self) -> Result<Plan, Error> {
        let current = observe::observe(&self.names, &self.node_ns)?;
        let mtus = desired::mtus(&self.config, &self.node_ns)?;
        let (mesh, note) = self.desired_mesh(current.mesh.as_ref())?;
        let mut plan = plan::diff_node(
            &current,
            mesh.as_ref(),
            &desired::desired(&self.config, &mtus),
        );
        plan.notes.extend(note);
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

    /// The WireGuard device the node should have, and the note reporting
    /// its backend. An existing kernel or userspace device is kept when the
    /// file's backend allows it, so `auto` never flips a working device.
    fn desired_mesh(
        &self,
        have: Option<&mesh::Mesh>,
    ) -> Result<(Option<mesh::Mesh>, Option<String>), Error> {
        let Some(wg) = self
            .config
            .wireguard
            .as_ref()
            .filter(|_| self.config.needs_mesh())
        else {
            return Ok((None, None));
        };
        let Some(mtu) = desired::mesh_mtu(&self.config, &self.node_ns)? else {
            return Ok((None, None));
        };
        let (backend, note) = mesh::probe::choose(wg.backend, &self.names, &self.node_ns)?;
        let backend = match (have, wg.backend) {
            (Some(h), config::WireGuardBackend::Auto) if h.config.is_some() => h.backend,
            _ => backend,
        };
        Ok((
            mesh::desired(&self.config, &self.names, backend, mtu),
            Some(note),
        ))
    }

    /// Makes the kernel match the config; returns what was done (empty when
    /// it already matched). Holds the node's lock while it works, so two
    /// applies for one node never interleave. A plan that must create a
    /// userspace WireGuard device fails with [`Error::NeedsHost`] before
    /// anything changes: use [`Overlay::apply_hosting`].
    pub fn apply(&self) -> Result<Plan, Error> {
        self.apply_with(None)
    }

    /// [`Overlay::apply`], keeping any userspace WireGuard device it
    /// creates in `host` (which must outlive the datapath's use of it).
    pub fn apply_hosting(&self, host: &mut DeviceHost) -> Result<Plan, Error> {
        self.apply_with(Some(host))
    }

    fn apply_with(&self, host: Option<&mut DeviceHost>) -> Result<Plan, Error> {
        let _lock = self.lock()?;
        let plan = self.plan()?;
        exec::Executor::new(self.names.clone(), self.node_ns.clone()).run(&plan, host)?;
        Ok(plan)
    }

    /// What `down` would do now.
    pub fn plan_down(&self) -> Result<Plan, Error> {
        Ok(plan::down(&observe::observe(&self.names, &self.node_ns)?))
    }

    /// Removes everything shoal created for this node, the WireGuard device
    /// included (a userspace one hosted by another process is stopped by
    /// removing its UAPI socket).
    pub fn down(&self) -> Result<Plan, Error> {
        let _lock = self.lock()?;
        let plan = self.plan_down()?;
        exec::Executor::new(self.names.clone(), self.node_ns.clone()).run(&plan, None)?;
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
