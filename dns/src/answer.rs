//! Answering one question from one view of a snapshot. Pure: no I/O, no
//! clock; the handler decides what to do with an [`Answer`].
//!
//! Name forms, for network `front` in domain `shoal` (any of them may end
//! in `.front`, `.shoal` or `.front.shoal`):
//! `web` (VIP, or healthy task IPs in dnsrr mode), `tasks.web` (healthy
//! task IPs), `web.1` (a task), `_http._tcp.web` (SRV), and PTR names of
//! task IPs and VIPs.

use std::net::IpAddr;

use hickory_proto::op::{LowerQuery, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::{index, SliceRandom};
use rand::Rng;

use crate::name::{self, QueryKey};
use crate::snapshot::{Addrs, Entry, Snapshot, SrvTarget, View};

/// The most records one answer holds (a TCP message of 64 KiB fits about
/// 4000 A records).
pub const MAX_ANSWER_RECORDS: usize = 4096;

/// What the snapshot says about a question.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    /// We are authoritative: this is the answer (which may be empty).
    Local {
        rcode: ResponseCode,
        answers: Vec<Record>,
        /// The SOA for a negative answer under the cluster domain.
        soa: Option<Box<Record>>,
        additionals: Vec<Record>,
    },
    /// Not a name of ours: forward it, if forwarding is on.
    NotOurs,
}

/// What a relative name resolved to in a view.
pub(crate) enum Found<'a> {
    Entry(&'a Entry),
    /// The name of a network itself (`front`): exists, holds nothing.
    Apex,
    Missing,
}

/// Answers `query` from `view`, building at most `limit` address or SRV
/// records (shuffled where the name is round-robin).
pub(crate) fn answer(snap: &Snapshot, view: &View, query: &LowerQuery, limit: usize) -> Answer {
    let owner = query.original().name();
    let qtype = query.query_type();
    let lname: &Name = query.name();

    if let Some(ip) = arpa_ip(lname) {
        let target = view.tables.iter().find_map(|t| t.reverse.get(&ip));
        return match target.map(Name::from_ascii) {
            Some(Ok(target)) if matches!(qtype, RecordType::PTR | RecordType::ANY) => local(
                vec![Record::from_rdata(
                    owner.clone(),
                    snap.ttl,
                    RData::PTR(PTR(target)),
                )],
                vec![],
            ),
            Some(_) => local(vec![], vec![]),
            None => Answer::NotOurs,
        };
    }

    let Some(key) = QueryKey::new(lname) else {
        // A name we cannot key (a dot inside a label): none of ours, but
        // under the cluster domain it is still ours to deny.
        if snap.soa.name.zone_of(lname) {
            return Answer::Local {
                rcode: ResponseCode::NXDomain,
                answers: vec![],
                soa: Some(Box::new(snap.soa.clone())),
                additionals: vec![],
            };
        }
        return Answer::NotOurs;
    };
    let key = key.as_bytes();
    let (rel, in_domain) = match name::strip_suffix(key, &snap.domain) {
        Some(rel) => (rel, true),
        None => (key, false),
    };
    let found = if in_domain && rel.is_empty() {
        // The cluster domain itself.
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            return local(vec![snap.soa.clone()], vec![]);
        }
        Found::Apex
    } else {
        lookup(view, rel)
    };
    let soa = || in_domain.then(|| Box::new(snap.soa.clone()));
    match found {
        Found::Missing if in_domain => Answer::Local {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            soa: soa(),
            additionals: vec![],
        },
        Found::Missing => Answer::NotOurs,
        Found::Apex => nodata(soa()),
        Found::Entry(entry) => {
            let ttl = snap.ttl;
            let (answers, additionals) = records(entry, owner, qtype, ttl, limit);
            if answers.is_empty() {
                nodata(soa())
            } else {
                local(answers, additionals)
            }
        }
    }
}

fn local(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
    Answer::Local {
        rcode: ResponseCode::NoError,
        answers,
        soa: None,
        additionals,
    }
}

fn nodata(soa: Option<Box<Record>>) -> Answer {
    Answer::Local {
        rcode: ResponseCode::NoError,
        answers: vec![],
        soa,
        additionals: vec![],
    }
}

/// Finds a relative name (`web`, `web.front`, `tasks.web`) in a view: first
/// as it is in every table, then as `<name>.<network>` in that network's.
pub(crate) fn lookup<'a>(view: &'a View, rel: &[u8]) -> Found<'a> {
    if let Some(entry) = view.tables.iter().find_map(|t| t.names.get(rel)) {
        return Found::Entry(entry);
    }
    let (prefix, last) = name::split_last(rel);
    match view.tables.iter().find(|t| *t.name == *last) {
        Some(_) if prefix.is_empty() => Found::Apex,
        Some(table) => table.names.get(prefix).map_or(Found::Missing, Found::Entry),
        None => Found::Missing,
    }
}

/// The address behind a full-length `in-addr.arpa` / `ip6.arpa` name.
fn arpa_ip(name: &Name) -> Option<IpAddr> {
    let last = name.iter().next_back()?;
    if !last.eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let net = name.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// The records of `entry` for `qtype`: answers, then additionals.
fn records(
    entry: &Entry,
    owner: &Name,
    qtype: RecordType,
    ttl: u32,
    limit: usize,
) -> (Vec<Record>, Vec<Record>) {
    match entry {
        Entry::One(ip) => {
            let data = match (ip, qtype) {
                (IpAddr::V4(ip), RecordType::A | RecordType::ANY) => RData::A(A(*ip)),
                (IpAddr::V6(ip), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*ip)),
                _ => return (vec![], vec![]),
            };
            if limit == 0 {
                return (vec![], vec![]);
            }
            (vec![Record::from_rdata(owner.clone(), ttl, data)], vec![])
        }
        Entry::Addrs(addrs) => (address_records(addrs, owner, qtype, ttl, limit), vec![]),
        Entry::Srv(targets) if matches!(qtype, RecordType::SRV | RecordType::ANY) => {
            srv_records(targets, owner, ttl, limit)
        }
        Entry::Srv(_) => (vec![], vec![]),
    }
}

fn address_records(
    addrs: &Addrs,
    owner: &Name,
    qtype: RecordType,
    ttl: u32,
    limit: usize,
) -> Vec<Record> {
    let want_v4 = matches!(qtype, RecordType::A | RecordType::ANY);
    let want_v6 = matches!(qtype, RecordType::AAAA | RecordType::ANY);
    let mut out = Vec::new();
    if want_v4 {
        let picked = pick(&addrs.v4, addrs.shuffle, limit);
        out.extend(
            picked
                .into_iter()
                .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::A(A(ip)))),
        );
    }
    if want_v6 {
        let room = limit.saturating_sub(out.len());
        let picked = pick(&addrs.v6, addrs.shuffle, room);
        out.extend(
            picked
                .into_iter()
                .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(ip)))),
        );
    }
    out
}

fn srv_records(
    targets: &[SrvTarget],
    owner: &Name,
    ttl: u32,
    limit: usize,
) -> (Vec<Record>, Vec<Record>) {
    let order: Vec<usize> = pick_indices(targets.len(), targets.len() > 1, limit);
    let mut answers = Vec::with_capacity(order.len());
    let mut additionals = Vec::with_capacity(order.len());
    for target in order.into_iter().filter_map(|i| targets.get(i)) {
        let name = target.name();
        let srv = SRV::new(0, 10, target.port, name.clone());
        answers.push(Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)));
        let data = match target.ip {
            IpAddr::V4(ip) => RData::A(A(ip)),
            IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
        };
        additionals.push(Record::from_rdata(name, ttl, data));
    }
    (answers, additionals)
}

/// At most `limit` items of `items`: all of them in a fresh random order
/// when `shuffle`, else the first ones in order.
fn pick<T: Copy>(items: &[T], shuffle: bool, limit: usize) -> Vec<T> {
    pick_indices(items.len(), shuffle, limit)
        .into_iter()
        .filter_map(|i| items.get(i).copied())
        .collect()
}

fn pick_indices(len: usize, shuffle: bool, limit: usize) -> Vec<usize> {
    pick_indices_with(len, shuffle, limit, &mut rand::thread_rng())
}

/// The indices [`pick`] takes, drawn from `rng`.
pub(crate) fn pick_indices_with<R: Rng + ?Sized>(
    len: usize,
    shuffle: bool,
    limit: usize,
    rng: &mut R,
) -> Vec<usize> {
    let take = len.min(limit);
    if !shuffle || len < 2 {
        return (0..take).collect();
    }
    if take == len {
        let mut all: Vec<usize> = (0..len).collect();
        all.shuffle(rng);
        all
    } else {
        // A random sample costs O(take), not O(len), for huge services.
        index::sample(rng, len, take).into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Forwarding;
    use crate::records::{Network, RecordSet};
    use hickory_proto::op::Query;

    fn ask(snap: &Snapshot, name: Name, qtype: RecordType) -> Answer {
        let view = snap.view("front").unwrap();
        answer(
            snap,
            view,
            &LowerQuery::query(Query::query(name, qtype)),
            100,
        )
    }

    #[test]
    fn odd_labels_under_the_domain_are_nxdomain_and_others_not_ours() {
        let records = RecordSet {
            networks: vec![Network {
                name: "front".into(),
                ..Network::default()
            }],
            ..RecordSet::default()
        };
        let snap = Snapshot::build(&records, Forwarding::default()).unwrap();
        let dotted = Name::from_labels(vec![&b"a.b"[..], &b"shoal"[..]]).unwrap();
        assert!(matches!(
            ask(&snap, dotted, RecordType::A),
            Answer::Local {
                rcode: ResponseCode::NXDomain,
                ..
            }
        ));
        let elsewhere = Name::from_labels(vec![&b"a.b"[..], &b"test"[..]]).unwrap();
        assert_eq!(ask(&snap, elsewhere, RecordType::A), Answer::NotOurs);
        let short_arpa = Name::from_ascii("0.77.10.in-addr.arpa.").unwrap();
        assert_eq!(ask(&snap, short_arpa, RecordType::PTR), Answer::NotOurs);
    }

    #[test]
    fn pick_limits_and_shuffles() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(pick(&items, false, 3), vec![0, 1, 2]);
        let mut s = pick(&items, true, 1000);
        assert_eq!(s.len(), 100);
        assert_ne!(
            s, items,
            "a shuffle of 100 items is in order with probability 1/100!"
        );
        s.sort_unstable();
        assert_eq!(s, items);
        let few = pick(&items, true, 5);
        assert_eq!(few.len(), 5);
        assert!(few.iter().all(|i| *i < 100));
        assert!(pick(&items, true, 0).is_empty());
    }
}
