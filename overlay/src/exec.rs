//! Executes a [`Plan`]: each step is a few small requests on the worker of
//! the namespace it concerns (node, sandbox or container).

use std::collections::HashMap;
use std::os::fd::AsRawFd;

use rtnetlink::Handle;

use crate::error::Error;
use crate::kernel::link::{self, Link};
use crate::kernel::{addr, bridge, fdb, neigh, route, veth, vxlan};
use crate::mesh::{self, DeviceHost};
use crate::names::{Names, BRIDGE, VXLAN};
use crate::netns::{self, NsTarget, NsWorker};
use crate::plan::{Item, Plan, Step};
use crate::state::Attachment;

/// Runs plans for one node, keeping one worker per namespace it touches.
pub struct Executor {
    names: Names,
    node_ns: NsTarget,
    node: Option<NsWorker>,
    sandboxes: HashMap<String, NsWorker>,
}

async fn need(h: &Handle, name: &str, place: &str) -> Result<Link, Error> {
    link::by_name(h, name)
        .await?
        .ok_or_else(|| Error::Conflict(format!("{name} is missing in {place}")))
}

impl Executor {
    /// An executor for the node called `names`, whose host is `node_ns`.
    pub fn new(names: Names, node_ns: NsTarget) -> Executor {
        Executor {
            names,
            node_ns,
            node: None,
            sandboxes: HashMap::new(),
        }
    }

    /// Runs every step in order; stops at the first failure. A later `apply`
    /// converges from wherever this stopped. `host` keeps any userspace
    /// WireGuard device the plan creates; without one such a plan is refused
    /// before anything changes.
    pub fn run(&mut self, plan: &Plan, mut host: Option<&mut DeviceHost>) -> Result<(), Error> {
        if plan.needs_host() && host.is_none() {
            return Err(Error::NeedsHost(self.names.wireguard()));
        }
        for item in &plan.items {
            tracing::info!("{item}");
            if let Step::Mesh(m) = &item.step {
                let alias = self.names.alias_wireguard();
                let node_ns = self.node_ns.clone();
                let node = self.node()?;
                mesh::exec::run(m, node, &node_ns, &alias, host.as_deref_mut())?;
                continue;
            }
            self.step(item)?;
        }
        Ok(())
    }

    fn node(&mut self) -> Result<&NsWorker, Error> {
        if self.node.is_none() {
            self.node = Some(NsWorker::spawn(&self.node_ns)?);
        }
        Ok(self.node.as_ref().expect("just set"))
    }

    fn sandbox(&mut self, net: &str) -> Result<&NsWorker, Error> {
        if !self.sandboxes.contains_key(net) {
            let w = NsWorker::spawn(&NsTarget::from_config(&self.names.sandbox(net)))?;
            self.sandboxes.insert(net.to_string(), w);
        }
        Ok(&self.sandboxes[net])
    }

    fn step(&mut self, item: &Item) -> Result<(), Error> {
        let net = item.network.clone().unwrap_or_default();
        let place = format!("sandbox {}", self.names.sandbox(&net));
        match item.step.clone() {
            Step::RemoveStray { link: name } => self.node()?.call(move |h| async move {
                match link::by_name(&h, &name).await? {
                    Some(l) => link::delete(&h, &l).await,
                    None => Ok(()),
                }
            }),
            Step::CreateSandbox => {
                netns::create(&self.names.sandbox(&net))?;
                self.sandbox(&net)?.call(|h| async move {
                    let lo = need(&h, "lo", "a new sandbox").await?;
                    link::set_up(&h, lo.index, "lo").await
                })
            }
            Step::DeleteSandbox => {
                self.sandboxes.remove(&net);
                netns::delete(&self.names.sandbox(&net))
            }
            Step::CreateBridge { mac, mtu } => {
                let alias = self.names.alias(&net, "bridge");
                self.sandbox(&net)?.call(move |h| async move {
                    bridge::create(&h, BRIDGE, mtu, mac).await?;
                    let br = need(&h, BRIDGE, &place).await?;
                    link::set_alias(&h, br.index, BRIDGE, &alias).await
                })
            }
            Step::SetBridge { mac, mtu } => self.sandbox(&net)?.call(move |h| async move {
                let br = need(&h, BRIDGE, &place).await?;
                if let Some(mac) = mac {
                    link::set_mac(&h, br.index, BRIDGE, mac).await?;
                }
                link::set_mtu(&h, br.index, BRIDGE, mtu).await
            }),
            Step::AddAddress(a) => self.sandbox(&net)?.call(move |h| async move {
                let br = need(&h, BRIDGE, &place).await?;
                addr::add(&h, br.index, BRIDGE, a).await
            }),
            Step::DelAddress(a) => self.sandbox(&net)?.call(move |h| async move {
                let br = need(&h, BRIDGE, &place).await?;
                let have = addr::list(&h, br.index).await?;
                match have.into_iter().find(|(n, _)| *n == a) {
                    Some((_, msg)) => addr::del(&h, BRIDGE, a, msg).await,
                    None => Ok(()),
                }
            }),
            Step::CreateVxlan { info, mtu } => self.create_vxlan(&net, info, mtu),
            Step::DeleteVxlan => self.sandbox(&net)?.call(move |h| async move {
                match link::by_name(&h, VXLAN).await? {
                    Some(l) => link::delete(&h, &l).await,
                    None => Ok(()),
                }
            }),
            Step::SetVxlanMtu(mtu) => self.sandbox(&net)?.call(move |h| async move {
                let vx = need(&h, VXLAN, &place).await?;
                link::set_mtu(&h, vx.index, VXLAN, mtu).await
            }),
            Step::SetNeighbour { ip, mac } => self.sandbox(&net)?.call(move |h| async move {
                let vx = need(&h, VXLAN, &place).await?;
                neigh::set(&h, vx.index, VXLAN, ip, mac).await
            }),
            Step::DelNeighbour { ip } => self.sandbox(&net)?.call(move |h| async move {
                let vx = need(&h, VXLAN, &place).await?;
                neigh::del(&h, vx.index, VXLAN, ip).await
            }),
            Step::SetFdb { mac, dst } => self.sandbox(&net)?.call(move |h| async move {
                let vx = need(&h, VXLAN, &place).await?;
                fdb::set(&h, vx.index, VXLAN, mac, dst).await
            }),
            Step::DelFdb { mac, dst } => self.sandbox(&net)?.call(move |h| async move {
                let vx = need(&h, VXLAN, &place).await?;
                fdb::del(&h, vx.index, VXLAN, mac, dst).await
            }),
            Step::Detach { id } => {
                let host = self.names.veth_host(&id);
                self.sandbox(&net)?.call(move |h| async move {
                    match link::by_name(&h, &host).await? {
                        Some(l) => link::delete(&h, &l).await,
                        None => Ok(()),
                    }
                })
            }
            Step::Attach { id, attachment } => self.attach(&net, &id, attachment),
            Step::Mesh(m) => Err(Error::Conflict(format!("{m}: not a sandbox step"))),
        }
    }

    /// Creates the device in the node namespace, so that its UDP socket
    /// lives there, then moves it into the sandbox as `vxlan0`.
    fn create_vxlan(&mut self, net: &str, info: vxlan::VxlanInfo, mtu: u32) -> Result<(), Error> {
        let staging = self.names.vxlan_staging(info.vni);
        let alias = self.names.alias(net, "vxlan");
        let sandbox_file = NsTarget::from_config(&self.names.sandbox(net)).open()?;
        let fd = sandbox_file.as_raw_fd();
        let node_place = self.node_ns.to_string();
        self.node()?.call(move |h| async move {
            if let Some(old) = link::by_name(&h, &staging).await? {
                link::delete(&h, &old).await?;
            }
            vxlan::create(&h, &staging, info, mtu).await?;
            let vx = need(&h, &staging, &node_place).await?;
            link::set_alias(&h, vx.index, &staging, &alias).await?;
            if let Err(e) = link::move_to(&h, vx.index, &staging, fd, VXLAN).await {
                let _ = link::delete(&h, &vx).await;
                return Err(e);
            }
            Ok(())
        })?;
        drop(sandbox_file);
        let place = format!("sandbox {}", self.names.sandbox(net));
        self.sandbox(net)?.call(move |h| async move {
            let br = need(&h, BRIDGE, &place).await?;
            let vx = need(&h, VXLAN, &place).await?;
            link::set_master(&h, vx.index, VXLAN, br.index).await?;
            link::set_up(&h, vx.index, VXLAN).await
        })
    }

    /// Builds the veth pair in the sandbox, wires the host end to br0, then
    /// moves the other end into the container (renamed in the same request)
    /// and gives it its address and default route there.
    fn attach(&mut self, net: &str, id: &str, att: Attachment) -> Result<(), Error> {
        let host = self.names.veth_host(id);
        let staging = self.names.veth_staging(id);
        let host_alias = self.names.alias_endpoint(net, id, &att.netns);
        let peer_alias = self.names.alias_container(net, id);
        let container = NsTarget::from_config(&att.netns);
        let container_file = container.open()?;
        let fd = container_file.as_raw_fd();
        let place = format!("sandbox {}", self.names.sandbox(net));
        let a = att.clone();
        self.sandbox(net)?.call(move |h| async move {
            for name in [&host, &staging] {
                if let Some(old) = link::by_name(&h, name).await? {
                    link::delete(&h, &old).await?;
                }
            }
            veth::create(&h, &host, &staging).await?;
            let result = async {
                let br = need(&h, BRIDGE, &place).await?;
                let hl = need(&h, &host, &place).await?;
                let pl = need(&h, &staging, &place).await?;
                link::set_alias(&h, hl.index, &host, &host_alias).await?;
                link::set_mtu(&h, hl.index, &host, a.mtu).await?;
                link::set_master(&h, hl.index, &host, br.index).await?;
                link::set_up(&h, hl.index, &host).await?;
                link::set_alias(&h, pl.index, &staging, &peer_alias).await?;
                link::set_mtu(&h, pl.index, &staging, a.mtu).await?;
                link::set_mac(&h, pl.index, &staging, a.mac).await?;
                link::move_to(&h, pl.index, &staging, fd, &a.ifname).await
            }
            .await;
            if result.is_err() {
                if let Some(l) = link::by_name(&h, &host).await? {
                    let _ = link::delete(&h, &l).await;
                }
            }
            result
        })?;
        drop(container_file);
        let where_ = format!("container {container}");
        let result = netns::run_in(&container, move |h| async move {
            let l = need(&h, &att.ifname, &where_).await?;
            addr::add(&h, l.index, &att.ifname, att.ip).await?;
            link::set_up(&h, l.index, &att.ifname).await?;
            route::set_default(&h, l.index, &att.ifname, att.gateway).await
        });
        if result.is_err() {
            let host = self.names.veth_host(id);
            let _ = self.sandbox(net)?.call(move |h| async move {
                match link::by_name(&h, &host).await? {
                    Some(l) => link::delete(&h, &l).await,
                    None => Ok(()),
                }
            });
        }
        result
    }
}
