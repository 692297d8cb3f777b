//! The snapshot: a [`RecordSet`] checked and compiled into lookup tables,
//! immutable once built. The server holds one behind an `ArcSwap`; an
//! update builds a new one and swaps it in, so a query never waits.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record};

use crate::error::{Location, Problem, RecordError};
use crate::fast;
use crate::forward::Forwarding;
use crate::hash::{FastMap, FastSet};
use crate::name;
use crate::records::{EndpointMode, Network, RecordSet, Service};

/// A compiled, immutable record set plus forwarding settings.
#[derive(Debug)]
pub struct Snapshot {
    /// The cluster domain as a lowercase key (`shoal`, `cluster.local`).
    pub(crate) domain: Box<[u8]>,
    pub(crate) ttl: u32,
    /// The SOA of the cluster domain, sent with negative answers.
    pub(crate) soa: Record,
    /// The same SOA record on the wire (owner name uncompressed), for the
    /// fast path's negative answers.
    pub(crate) soa_wire: Box<[u8]>,
    views: FastMap<Box<str>, View>,
    pub(crate) forwarding: Forwarding,
}

/// What one listener sees: its own network's table first, then the tables
/// of the networks in its `also` list.
#[derive(Debug, Default)]
pub(crate) struct View {
    pub(crate) tables: Vec<Arc<Table>>,
}

/// The names and reverse entries of one network.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// The network's name as a key.
    pub(crate) name: Box<[u8]>,
    /// Relative names (`web`, `tasks.web`, `web.1`, `_http._tcp.web`).
    pub(crate) names: FastMap<Box<[u8]>, Entry>,
    /// Task IPs and VIPs to their canonical names (`web.1.front.shoal.`),
    /// kept as text: a `Name` per task would cost far more memory, and PTR
    /// queries are rare enough to parse it per answer.
    pub(crate) reverse: FastMap<IpAddr, Box<str>>,
}

/// What a name holds.
#[derive(Debug)]
pub(crate) enum Entry {
    /// One address: a task, or a service's VIP.
    One(IpAddr),
    /// Addresses (A/AAAA); `shuffle` for round-robin names.
    Addrs(Addrs),
    /// SRV targets.
    Srv(Box<[SrvTarget]>),
}

/// A set of addresses.
#[derive(Debug, Default)]
pub(crate) struct Addrs {
    pub(crate) v4: Box<[Ipv4Addr]>,
    pub(crate) v6: Box<[Ipv6Addr]>,
    pub(crate) shuffle: bool,
}

/// One SRV answer: a port on a target name with the target's address.
#[derive(Debug)]
pub(crate) struct SrvTarget {
    pub(crate) port: u16,
    /// The target name in wire form (`\x03web\x05front\x05shoal\x00`):
    /// what the fast path copies out; [`SrvTarget::name`] for the rest.
    pub(crate) target: Box<[u8]>,
    pub(crate) ip: IpAddr,
}

impl SrvTarget {
    /// The target as a `Name`.
    pub(crate) fn name(&self) -> Name {
        let mut labels = Vec::new();
        let mut rest = &self.target[..];
        while let Some((&len, tail)) = rest.split_first() {
            let Some(label) = tail.get(..usize::from(len)).filter(|l| !l.is_empty()) else {
                break;
            };
            labels.push(label);
            rest = &tail[label.len()..];
        }
        Name::from_labels(labels).unwrap_or_else(|_| Name::root())
    }
}

/// A checked, absolute dotted name (`web.front.shoal.`) in wire form;
/// `None` if a label is empty or too long, or the name is.
fn wire_name(fqdn: &str) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(fqdn.len() + 1);
    for label in fqdn.trim_end_matches('.').split('.') {
        out.push(
            u8::try_from(label.len())
                .ok()
                .filter(|&l| (1..=63).contains(&l))?,
        );
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    (out.len() <= 255).then(|| out.into_boxed_slice())
}

impl Addrs {
    fn from_ips(ips: impl IntoIterator<Item = IpAddr>, shuffle: bool) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for ip in ips {
            match ip {
                IpAddr::V4(a) => v4.push(a),
                IpAddr::V6(a) => v6.push(a),
            }
        }
        Self {
            v4: v4.into(),
            v6: v6.into(),
            shuffle,
        }
    }
}

impl Snapshot {
    /// A snapshot with no networks and no upstreams: every query is refused.
    pub fn empty() -> Self {
        Self::build(&RecordSet::default(), Forwarding::default())
            .expect("the default record set is valid")
    }

    /// Checks `records` and compiles them; the error names the first field
    /// that is wrong.
    pub fn build(records: &RecordSet, forwarding: Forwarding) -> Result<Self, RecordError> {
        if let Err(reason) = name::check(&records.domain, false) {
            return Err(RecordError::new(
                Location::top("domain"),
                Problem::InvalidName {
                    name: records.domain.clone(),
                    reason,
                },
            ));
        }
        if records.ttl > i32::MAX as u32 {
            return Err(RecordError::new(
                Location::top("ttl"),
                Problem::TtlRange { ttl: records.ttl },
            ));
        }
        let domain = records.domain.to_ascii_lowercase();
        let mut tables: Vec<Arc<Table>> = Vec::with_capacity(records.networks.len());
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, network) in records.networks.iter().enumerate() {
            let table = build_table(i, network, &domain)?;
            if index.insert(network.name.as_str(), i).is_some() {
                return Err(RecordError::new(
                    Location::network(i, "name"),
                    Problem::DuplicateNetwork {
                        name: network.name.clone(),
                    },
                ));
            }
            tables.push(Arc::new(table));
        }
        let mut views = FastMap::default();
        views.reserve(tables.len());
        for (i, network) in records.networks.iter().enumerate() {
            let mut view = View {
                tables: vec![tables[i].clone()],
            };
            for (j, other) in network.also.iter().enumerate() {
                let Some(&k) = index.get(other.as_str()) else {
                    return Err(RecordError::new(
                        Location::network(i, format!("also[{j}]")),
                        Problem::UnknownNetwork {
                            name: other.clone(),
                        },
                    ));
                };
                if k != i {
                    view.tables.push(tables[k].clone());
                }
            }
            views.insert(network.name.as_str().into(), view);
        }
        let soa = soa_record(&domain, records.ttl);
        // Should it not encode (it always does), the fast path leaves
        // negative answers to the general one.
        let mut soa_wire = Vec::new();
        if fast::write_record(&mut soa_wire, &soa, false).is_none() {
            soa_wire.clear();
        }
        Ok(Self {
            domain: name::key(&domain),
            ttl: records.ttl,
            soa,
            soa_wire: soa_wire.into(),
            views,
            forwarding,
        })
    }

    /// The view of network `network`, if it exists.
    pub(crate) fn view(&self, network: &str) -> Option<&View> {
        self.views.get(network)
    }

    /// The names of the networks in this snapshot.
    pub fn networks(&self) -> impl Iterator<Item = &str> {
        self.views.keys().map(|k| &**k)
    }

    /// How many names (and reverse entries) the snapshot holds, over all
    /// networks: a measure of its size.
    pub fn names(&self) -> usize {
        self.views
            .values()
            .filter_map(|v| v.tables.first())
            .map(|t| t.names.len() + t.reverse.len())
            .sum()
    }

    /// The forwarding settings.
    pub fn forwarding(&self) -> &Forwarding {
        &self.forwarding
    }
}

fn soa_record(domain: &str, ttl: u32) -> Record {
    let origin = Name::from_ascii(format!("{domain}.")).unwrap_or_else(|_| Name::root());
    let mname = Name::from_ascii("ns")
        .and_then(|n| n.append_domain(&origin))
        .unwrap_or_else(|_| origin.clone());
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(&origin))
        .unwrap_or_else(|_| origin.clone());
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    let soa = SOA::new(mname, rname, serial, 3600, 600, 86400, ttl);
    Record::from_rdata(origin, ttl, RData::SOA(soa))
}

/// Compiles one network. Names are checked, and every name is unique
/// within the network whether or not its task is healthy.
fn build_table(i: usize, network: &Network, domain: &str) -> Result<Table, RecordError> {
    if let Err(reason) = name::check(&network.name, true) {
        return Err(RecordError::new(
            Location::network(i, "name"),
            Problem::InvalidName {
                name: network.name.clone(),
                reason,
            },
        ));
    }
    // Sized up front: rehashing tables of a million entries costs seconds.
    let tasks: usize = network.services.iter().map(|s| s.tasks.len()).sum();
    let ports: usize = network.services.iter().map(|s| s.ports.len()).sum();
    let services = network.services.len();
    let mut table = Table {
        name: name::key(&network.name),
        names: FastMap::default(),
        reverse: FastMap::default(),
    };
    table.names.reserve(tasks + 2 * services + ports);
    table.reverse.reserve(tasks + services);
    let mut unhealthy: FastSet<Box<[u8]>> = FastSet::default();
    let suffix = format!("{}.{domain}.", network.name.to_ascii_lowercase());
    for (s, service) in network.services.iter().enumerate() {
        add_service(&mut table, &mut unhealthy, &suffix, i, s, service)?;
    }
    Ok(table)
}

fn add_service(
    table: &mut Table,
    unhealthy: &mut FastSet<Box<[u8]>>,
    suffix: &str,
    i: usize,
    s: usize,
    service: &Service,
) -> Result<(), RecordError> {
    let at = |field: String| Location::service(i, s, field);
    let invalid = |field: String, name: &str, reason| {
        RecordError::new(
            at(field),
            Problem::InvalidName {
                name: name.to_string(),
                reason,
            },
        )
    };
    // Every name is unique in the network, whether or not its task is
    // healthy: a name is taken if it is in the table or set aside.
    let check_free = |table: &Table,
                      unhealthy: &FastSet<Box<[u8]>>,
                      key: &[u8],
                      field: &dyn Fn() -> String,
                      shown: &str| {
        if table.names.contains_key(key) || unhealthy.contains(key) {
            Err(RecordError::new(
                at(field()),
                Problem::Duplicate {
                    name: shown.to_string(),
                },
            ))
        } else {
            Ok(())
        }
    };
    name::check(&service.name, false).map_err(|r| invalid("name".into(), &service.name, r))?;
    let fqdn = |n: &str| format!("{}.{suffix}", n.to_ascii_lowercase());
    let service_fqdn = fqdn(&service.name);
    let service_name = wire_name(&service_fqdn).ok_or_else(|| {
        invalid(
            "name".into(),
            &service.name,
            "is too long with its network and domain",
        )
    })?;
    match (service.endpoint_mode, service.vip) {
        (EndpointMode::Vip, None) => {
            return Err(RecordError::new(at("vip".into()), Problem::MissingVip))
        }
        (EndpointMode::Dnsrr, Some(_)) => {
            return Err(RecordError::new(at("vip".into()), Problem::VipInDnsrr))
        }
        _ => {}
    }

    // Tasks: each healthy one answers under its own name and gets a PTR.
    let mut healthy: Vec<(IpAddr, &str)> = Vec::with_capacity(service.tasks.len());
    for (t, task) in service.tasks.iter().enumerate() {
        let field = || format!("tasks[{t}].name");
        name::check(&task.name, false).map_err(|r| invalid(field(), &task.name, r))?;
        let task_fqdn = fqdn(&task.name);
        if task_fqdn.len() > 254 {
            return Err(invalid(
                field(),
                &task.name,
                "is too long with its network and domain",
            ));
        }
        let key = name::key(&task.name);
        check_free(table, unhealthy, &key, &field, &task.name)?;
        if task.healthy {
            table
                .reverse
                .entry(task.ip)
                .or_insert_with(|| task_fqdn.into());
            table.names.insert(key, Entry::One(task.ip));
            healthy.push((task.ip, &task.name));
        } else {
            unhealthy.insert(key);
        }
    }

    // The service name, and tasks.<service>.
    let key = name::key(&service.name);
    check_free(table, unhealthy, &key, &|| "name".into(), &service.name)?;
    let entry = match service.vip {
        Some(vip) => {
            table.reverse.insert(vip, service_fqdn.into());
            Entry::One(vip)
        }
        None => Entry::Addrs(Addrs::from_ips(healthy.iter().map(|h| h.0), true)),
    };
    table.names.insert(key, entry);
    let tasks_name = format!("tasks.{}", service.name);
    let key = name::key(&tasks_name);
    check_free(table, unhealthy, &key, &|| "name".into(), &tasks_name)?;
    table.names.insert(
        key,
        Entry::Addrs(Addrs::from_ips(healthy.iter().map(|h| h.0), true)),
    );

    // SRV per named port.
    for (p, port) in service.ports.iter().enumerate() {
        let field = || format!("ports[{p}].name");
        name::check(&port.name, true).map_err(|r| invalid(field(), &port.name, r))?;
        let srv_name = format!("_{}._{}.{}", port.name, port.protocol.label(), service.name);
        let key = name::key(&srv_name);
        check_free(table, unhealthy, &key, &field, &srv_name)?;
        let targets: Box<[SrvTarget]> = match service.vip {
            Some(vip) => Box::new([SrvTarget {
                port: port.port,
                target: service_name.clone(),
                ip: vip,
            }]),
            None => healthy
                .iter()
                .filter_map(|(ip, task)| {
                    Some(SrvTarget {
                        port: port.port,
                        target: wire_name(&fqdn(task))?,
                        ip: *ip,
                    })
                })
                .collect(),
        };
        table.names.insert(key, Entry::Srv(targets));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Port, Protocol, Task};

    fn web() -> Service {
        Service {
            name: "web".into(),
            vip: Some("10.77.0.200".parse().unwrap()),
            endpoint_mode: EndpointMode::Vip,
            ports: vec![Port {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Tcp,
            }],
            tasks: vec![
                Task {
                    name: "web.1".into(),
                    ip: "10.77.0.11".parse().unwrap(),
                    healthy: true,
                },
                Task {
                    name: "web.3".into(),
                    ip: "10.77.0.13".parse().unwrap(),
                    healthy: false,
                },
            ],
        }
    }

    fn set(services: Vec<Service>) -> RecordSet {
        RecordSet {
            networks: vec![Network {
                name: "front".into(),
                services,
                also: vec![],
            }],
            ..RecordSet::default()
        }
    }

    #[test]
    fn builds_every_name_form() {
        let snap = Snapshot::build(&set(vec![web()]), Forwarding::default()).unwrap();
        let table = &snap.view("front").unwrap().tables[0];
        for key in ["web", "tasks.web", "web.1", "_http._tcp.web"] {
            assert!(table.names.contains_key(key.as_bytes()), "{key}");
        }
        assert!(
            !table.names.contains_key(&b"web.3"[..]),
            "unhealthy task absent"
        );
        let vip: IpAddr = "10.77.0.200".parse().unwrap();
        assert_eq!(&*table.reverse[&vip], "web.front.shoal.");
        assert_eq!(table.reverse.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = web();
        s.vip = None;
        let err = Snapshot::build(&set(vec![s]), Forwarding::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network[0].service[0].vip: endpoint_mode \"vip\" needs a vip"
        );

        let mut s = web();
        s.tasks[1].name = "web.1".into();
        let err = Snapshot::build(&set(vec![s]), Forwarding::default()).unwrap_err();
        assert_eq!(
            err.location.to_string(),
            "network[0].service[0].tasks[1].name"
        );

        let mut s = web();
        s.tasks[0].name = "bad name".into();
        let err = Snapshot::build(&set(vec![s]), Forwarding::default()).unwrap_err();
        assert!(err.to_string().contains("tasks[0].name"), "{err}");

        let mut rs = set(vec![web()]);
        rs.networks[0].also = vec!["nope".into()];
        let err = Snapshot::build(&rs, Forwarding::default()).unwrap_err();
        assert_eq!(err.location.to_string(), "network[0].also[0]");
    }

    #[test]
    fn service_and_task_names_collide() {
        let mut a = web();
        a.tasks[0].name = "api".into();
        let mut b = web();
        b.name = "api".into();
        b.vip = Some("10.77.0.201".parse().unwrap());
        b.tasks.clear();
        let err = Snapshot::build(&set(vec![a, b]), Forwarding::default()).unwrap_err();
        assert_eq!(err.location.to_string(), "network[0].service[1].name");
    }
}
