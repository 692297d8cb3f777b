//! The fast path of the UDP loop: local answers straight from the
//! request's bytes to the reply's, and a direct encoder for the replies the
//! general path builds.
//!
//! [`answer`] takes the common request: a standard query, one question of
//! class IN, uncompressed name, and at most an OPT record without options.
//! It reads the question from the bytes (the name lowercased into a stack
//! buffer as the tables' key), looks it up with the same [`lookup`] the
//! general path uses, and writes the reply into the caller's buffer: header,
//! the question as received, answers owned by the question name (a pointer
//! to offset 12), the SOA for negative answers (kept in wire form in the
//! snapshot), SRV targets' addresses, then the OPT record. No allocation,
//! no hickory message. Anything else (other shapes, names under `arpa`,
//! the domain apex, names not ours, ANY and zone transfers, EDNS versions
//! above 0 or with options) returns `None` before writing anything that
//! counts, and the caller takes the general path, hickory's parser and the
//! handler: the fast path is an optimisation, never a second opinion. A
//! differential test holds it to the general path's answers.
//!
//! [`encode`] writes a [`Reply`] the general path decided; local replies
//! have a fixed shape, so they are written straight out as above. Any
//! record type not listed here returns `None` and the caller uses hickory's
//! encoder.
//!
//! Truncation follows hickory's rule: records are written while they fit
//! (keeping room for the OPT record); the first that does not sets TC and
//! ends the message there.

use std::net::IpAddr;

use hickory_proto::op::Edns;
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::server::Request;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::answer::{lookup, pick_indices_with, Found};
use crate::forward::EDNS_PAYLOAD;
use crate::handler::Reply;
use crate::name;
use crate::snapshot::{Entry, Snapshot, View};

/// The question name's offset: right after the 12-byte header.
const QNAME_POINTER: [u8; 2] = [0xC0, 0x0C];
/// An OPT record without options: root name, type, class, TTL, length.
const OPT_LEN: usize = 11;

/// Writes `reply` to `request` within `max` bytes, or `None` when it is not
/// a shape this encoder knows.
pub(crate) fn encode(request: &Request, reply: &Reply, max: usize) -> Option<Vec<u8>> {
    let [query] = request.queries.queries() else {
        return None;
    };
    let question = request.queries.as_bytes();
    let qname = query.original().name();
    let reserve = if reply.edns.is_some() { OPT_LEN } else { 0 };
    let max = max.checked_sub(reserve)?;
    if 12 + question.len() > max {
        return None;
    }

    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(question);
    let mut truncated = false;
    let mut counts = [0u16; 3];
    let sections: [(&[Record], bool); 3] = [
        (&reply.answers, true),
        (
            reply.soa.as_deref().map_or(&[][..], std::slice::from_ref),
            false,
        ),
        (&reply.additionals, false),
    ];
    'sections: for (i, (records, by_qname)) in sections.iter().enumerate() {
        for record in records.iter() {
            let start = out.len();
            let pointer = *by_qname && record.name == *qname;
            write_record(&mut out, record, pointer)?;
            if out.len() > max {
                out.truncate(start);
                truncated = true;
                break 'sections;
            }
            counts[i] += 1;
        }
    }
    let mut additional = counts[2];
    if let Some(edns) = &reply.edns {
        write_opt(&mut out, edns, reply.metadata.response_code.high());
        additional += 1;
    }

    let m = &reply.metadata;
    let flags_hi = 0x80
        | (u8::from(m.op_code) & 0x0F) << 3
        | u8::from(m.authoritative) << 2
        | u8::from(truncated || m.truncation) << 1
        | u8::from(m.recursion_desired);
    let flags_lo = u8::from(m.recursion_available) << 7
        | u8::from(m.checking_disabled) << 4
        | (m.response_code.low() & 0x0F);
    let header = out.get_mut(..12)?;
    header[..2].copy_from_slice(&m.id.to_be_bytes());
    header[2] = flags_hi;
    header[3] = flags_lo;
    header[4..6].copy_from_slice(&1u16.to_be_bytes());
    header[6..8].copy_from_slice(&counts[0].to_be_bytes());
    header[8..10].copy_from_slice(&counts[1].to_be_bytes());
    header[10..12].copy_from_slice(&additional.to_be_bytes());
    Some(out)
}

/// One resource record; `None` for record data this encoder does not know.
pub(crate) fn write_record(out: &mut Vec<u8>, record: &Record, qname_pointer: bool) -> Option<()> {
    if qname_pointer {
        out.extend_from_slice(&QNAME_POINTER);
    } else {
        write_name(out, &record.name)?;
    }
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    match &record.data {
        RData::A(a) => out.extend_from_slice(&a.0.octets()),
        RData::AAAA(a) => out.extend_from_slice(&a.0.octets()),
        RData::PTR(p) => write_name(out, &p.0)?,
        RData::SRV(srv) => {
            out.extend_from_slice(&srv.priority.to_be_bytes());
            out.extend_from_slice(&srv.weight.to_be_bytes());
            out.extend_from_slice(&srv.port.to_be_bytes());
            write_name(out, &srv.target)?;
        }
        RData::SOA(soa) => {
            write_name(out, &soa.mname)?;
            write_name(out, &soa.rname)?;
            out.extend_from_slice(&soa.serial.to_be_bytes());
            out.extend_from_slice(&soa.refresh.to_be_bytes());
            out.extend_from_slice(&soa.retry.to_be_bytes());
            out.extend_from_slice(&soa.expire.to_be_bytes());
            out.extend_from_slice(&soa.minimum.to_be_bytes());
        }
        _ => return None,
    }
    let len = u16::try_from(out.len() - len_at - 2).ok()?;
    out.get_mut(len_at..len_at + 2)?
        .copy_from_slice(&len.to_be_bytes());
    Some(())
}

/// A name, uncompressed; `None` if a label or the name is too long.
fn write_name(out: &mut Vec<u8>, name: &Name) -> Option<()> {
    let start = out.len();
    for label in name.iter() {
        out.push(u8::try_from(label.len()).ok().filter(|&l| l <= 63)?);
        out.extend_from_slice(label);
    }
    out.push(0);
    (out.len() - start <= 255).then_some(())
}

/// The OPT pseudo-record: our UDP payload size and the high bits of an
/// extended response code.
fn write_opt(out: &mut Vec<u8>, edns: &Edns, rcode_high: u8) {
    out.push(0);
    out.extend_from_slice(&41u16.to_be_bytes());
    out.extend_from_slice(&edns.max_payload().to_be_bytes());
    out.extend_from_slice(&[rcode_high, edns.version(), 0, 0]);
    out.extend_from_slice(&[0, 0]);
}

/// The longest question name (wire form) the fast path reads; longer ones
/// (up to hickory's 255) take the general path.
const MAX_FAST_NAME: usize = 250;
/// Record types: A, AAAA, SRV, OPT; ANY and the zone transfers.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const TYPE_ANY: u16 = 255;
/// Class IN.
const CLASS_IN: u16 = 1;
/// Response codes of local answers.
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;
/// How many records a shuffle orders on the stack (a UDP answer holds at
/// most 1232 / 16 + 1 = 78); more take the general sampler.
const STACK_PICK: usize = 80;

/// A request in the shape [`answer`] takes.
struct Question<'a> {
    /// The ID and the first flags byte (for RD) and second (for CD).
    id: [u8; 2],
    recursion_desired: bool,
    checking_disabled: bool,
    /// The question section as received: name, type, class.
    raw: &'a [u8],
    qtype: u16,
    /// The client's EDNS payload size (at least 512), if it sent OPT.
    payload: Option<u16>,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a request of the fast shape, its name lowercased and dotted into
/// `key`; returns the question and the key's length.
fn parse<'a>(bytes: &'a [u8], key: &mut [u8; 256]) -> Option<(Question<'a>, usize)> {
    let header = bytes.get(..12)?;
    let (flags_hi, flags_lo) = (header[2], header[3]);
    // A query (QR 0) with opcode QUERY; hickory ignores AA, TC, Z, AD and
    // the rcode bits of a request, and so does this.
    if flags_hi & 0xF8 != 0 {
        return None;
    }
    let counts = [
        be16(header, 4)?,
        be16(header, 6)?,
        be16(header, 8)?,
        be16(header, 10)?,
    ];
    if counts[0] != 1 || counts[1] != 0 || counts[2] != 0 || counts[3] > 1 {
        return None;
    }
    let mut pos = 12;
    let mut len = 0usize;
    let mut last = 0..0;
    loop {
        let label_len = usize::from(*bytes.get(pos)?);
        pos += 1;
        if label_len == 0 {
            break;
        }
        // Pointers and the reserved label types: the general path.
        if label_len > 63 {
            return None;
        }
        let label = bytes.get(pos..pos + label_len)?;
        pos += label_len;
        if pos - 12 > MAX_FAST_NAME {
            return None;
        }
        if len > 0 {
            *key.get_mut(len)? = b'.';
            len += 1;
        }
        let dst = key.get_mut(len..len + label_len)?;
        for (d, &b) in dst.iter_mut().zip(label) {
            // A dot inside a label cannot be keyed (as `QueryKey`).
            if b == b'.' {
                return None;
            }
            *d = b.to_ascii_lowercase();
        }
        last = len..len + label_len;
        len += label_len;
    }
    // The root, and reverse names (PTR answers are rare): general path.
    if len == 0 || key.get(last)? == b"arpa" {
        return None;
    }
    let qtype = be16(bytes, pos)?;
    let qclass = be16(bytes, pos + 2)?;
    pos += 4;
    if qclass != CLASS_IN || matches!(qtype, TYPE_ANY | TYPE_AXFR | TYPE_IXFR) {
        return None;
    }
    let raw = bytes.get(12..pos)?;
    let payload = if counts[3] == 1 {
        // OPT: root owner, type 41, class = payload size, TTL = extended
        // rcode 0, version 0, flags; no options.
        let opt = bytes.get(pos..pos + 11)?;
        if opt[0] != 0
            || be16(opt, 1)? != TYPE_OPT
            || opt[5] != 0
            || opt[6] != 0
            || be16(opt, 9)? != 0
        {
            return None;
        }
        pos += 11;
        Some(be16(opt, 3)?.max(512))
    } else {
        None
    };
    if pos != bytes.len() {
        return None;
    }
    let question = Question {
        id: [header[0], header[1]],
        recursion_desired: flags_hi & 0x01 != 0,
        checking_disabled: flags_lo & 0x10 != 0,
        raw,
        qtype,
        payload,
    };
    Some((question, len))
}

/// A reply being written: records go in while they fit.
struct Message<'o> {
    out: &'o mut Vec<u8>,
    /// The size the records must stay within (room for OPT kept aside).
    max: usize,
    counts: [u16; 3],
    truncated: bool,
}

impl Message<'_> {
    /// Appends one record to `section` (0 answer, 1 authority, 2
    /// additional) unless an earlier one did not fit; one that does not
    /// fit is taken back and ends the message (TC).
    fn add(&mut self, section: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if self.truncated {
            return;
        }
        let start = self.out.len();
        write(self.out);
        if self.out.len() > self.max {
            self.out.truncate(start);
            self.truncated = true;
        } else if let Some(count) = self.counts.get_mut(section) {
            *count = count.saturating_add(1);
        }
    }
}

/// Owner, type, class IN, TTL and RDLENGTH of a record.
fn rr_head(out: &mut Vec<u8>, owner: Option<&[u8]>, rtype: u16, ttl: u32, rdlen: u16) {
    match owner {
        Some(name) => out.extend_from_slice(name),
        None => out.extend_from_slice(&QNAME_POINTER),
    }
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&rdlen.to_be_bytes());
}

/// An A or AAAA record; `owner` `None` is the question name.
fn address(out: &mut Vec<u8>, owner: Option<&[u8]>, ip: IpAddr, ttl: u32) {
    match ip {
        IpAddr::V4(ip) => {
            rr_head(out, owner, TYPE_A, ttl, 4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            rr_head(out, owner, TYPE_AAAA, ttl, 16);
            out.extend_from_slice(&ip.octets());
        }
    }
}

/// The order in which records of a name are sent: all, the first `limit`,
/// or a shuffle (of all of them on the stack, or a sample).
enum Picked {
    First(usize),
    Stack([u16; STACK_PICK], usize),
    Heap(Vec<usize>),
}

impl Picked {
    /// As [`crate::answer`]'s `pick_indices`: at most `limit` of `len`
    /// items, in a fresh random order when `shuffle`.
    fn new<R: Rng + ?Sized>(len: usize, shuffle: bool, limit: usize, rng: &mut R) -> Self {
        let take = len.min(limit);
        if !shuffle || len < 2 {
            return Picked::First(take);
        }
        if take == len && len <= STACK_PICK {
            let mut order = [0u16; STACK_PICK];
            for (slot, i) in order.iter_mut().zip(0u16..).take(len) {
                *slot = i;
            }
            if let Some(all) = order.get_mut(..len) {
                all.shuffle(rng);
            }
            return Picked::Stack(order, len);
        }
        Picked::Heap(pick_indices_with(len, shuffle, limit, rng))
    }

    fn len(&self) -> usize {
        match self {
            Picked::First(n) | Picked::Stack(_, n) => *n,
            Picked::Heap(v) => v.len(),
        }
    }

    fn get(&self, k: usize) -> Option<usize> {
        match self {
            Picked::First(n) => (k < *n).then_some(k),
            Picked::Stack(order, n) => order.get(..*n)?.get(k).map(|&i| usize::from(i)),
            Picked::Heap(v) => v.get(k).copied(),
        }
    }
}

/// Answers the UDP request in `bytes` from `view` straight into `out`, or
/// returns `None` (and `out` is to be ignored) when it is not a request the
/// fast path takes; see the module documentation.
pub(crate) fn answer<R: Rng + ?Sized>(
    snap: &Snapshot,
    view: &View,
    bytes: &[u8],
    rng: &mut R,
    out: &mut Vec<u8>,
) -> Option<()> {
    let mut key = [0u8; 256];
    let (q, len) = parse(bytes, &mut key)?;
    let key = key.get(..len)?;
    let (rel, in_domain) = match name::strip_suffix(key, &snap.domain) {
        Some(rel) => (rel, true),
        None => (key, false),
    };
    if (in_domain && rel.is_empty()) || snap.soa_wire.is_empty() {
        // The cluster domain itself (SOA): the general path.
        return None;
    }
    let (rcode, entry) = match lookup(view, rel) {
        Found::Entry(entry) => (NOERROR, Some(entry)),
        Found::Apex => (NOERROR, None),
        Found::Missing if in_domain => (NXDOMAIN, None),
        Found::Missing => return None,
    };

    // As the handler: the reply's EDNS payload is the client's, capped;
    // the records are limited by it; OPT is kept room for.
    let payload = q.payload.map(|p| p.min(EDNS_PAYLOAD));
    let size = usize::from(payload.unwrap_or(512));
    let limit = size / 16 + 1;
    let reserve = if payload.is_some() { OPT_LEN } else { 0 };
    let max = size - reserve;
    if 12 + q.raw.len() > max {
        return None;
    }

    out.clear();
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(q.raw);
    let mut m = Message {
        out,
        max,
        counts: [0; 3],
        truncated: false,
    };
    let ttl = snap.ttl;
    let answered = match entry {
        Some(entry) => records(&mut m, entry, q.qtype, ttl, limit, rng),
        None => false,
    };
    if !answered && in_domain {
        m.add(1, |out| out.extend_from_slice(&snap.soa_wire));
    }
    let (counts, truncated) = (m.counts, m.truncated);
    let mut additional = counts[2];
    if let Some(payload) = payload {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&payload.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        additional += 1;
    }
    let recursion_available = !snap.forwarding.upstreams.is_empty();
    let header = out.get_mut(..12)?;
    header[..2].copy_from_slice(&q.id);
    // QR, opcode QUERY, AA, TC, RD; RA, CD, rcode.
    header[2] = 0x80 | 0x04 | u8::from(truncated) << 1 | u8::from(q.recursion_desired);
    header[3] = u8::from(recursion_available) << 7 | u8::from(q.checking_disabled) << 4 | rcode;
    header[4..6].copy_from_slice(&1u16.to_be_bytes());
    header[6..8].copy_from_slice(&counts[0].to_be_bytes());
    header[8..10].copy_from_slice(&counts[1].to_be_bytes());
    header[10..12].copy_from_slice(&additional.to_be_bytes());
    Some(())
}

/// Writes the records of `entry` for `qtype` (as `answer::records`);
/// `false` when it holds none of that type (NODATA).
fn records<R: Rng + ?Sized>(
    m: &mut Message<'_>,
    entry: &Entry,
    qtype: u16,
    ttl: u32,
    limit: usize,
    rng: &mut R,
) -> bool {
    match (entry, qtype) {
        (Entry::One(ip @ IpAddr::V4(_)), TYPE_A) | (Entry::One(ip @ IpAddr::V6(_)), TYPE_AAAA) => {
            if limit == 0 {
                return false;
            }
            m.add(0, |out| address(out, None, *ip, ttl));
            true
        }
        (Entry::Addrs(addrs), TYPE_A) => {
            let order = Picked::new(addrs.v4.len(), addrs.shuffle, limit, rng);
            for k in 0..order.len() {
                if let Some(&ip) = order.get(k).and_then(|i| addrs.v4.get(i)) {
                    m.add(0, |out| address(out, None, IpAddr::V4(ip), ttl));
                }
            }
            order.len() > 0
        }
        (Entry::Addrs(addrs), TYPE_AAAA) => {
            let order = Picked::new(addrs.v6.len(), addrs.shuffle, limit, rng);
            for k in 0..order.len() {
                if let Some(&ip) = order.get(k).and_then(|i| addrs.v6.get(i)) {
                    m.add(0, |out| address(out, None, IpAddr::V6(ip), ttl));
                }
            }
            order.len() > 0
        }
        (Entry::Srv(targets), TYPE_SRV) => {
            let order = Picked::new(targets.len(), targets.len() > 1, limit, rng);
            for k in 0..order.len() {
                if let Some(t) = order.get(k).and_then(|i| targets.get(i)) {
                    m.add(0, |out| {
                        let rdlen = 6 + t.target.len();
                        rr_head(out, None, TYPE_SRV, ttl, rdlen as u16);
                        out.extend_from_slice(&[0, 0, 0, 10]);
                        out.extend_from_slice(&t.port.to_be_bytes());
                        out.extend_from_slice(&t.target);
                    });
                }
            }
            for k in 0..order.len() {
                if let Some(t) = order.get(k).and_then(|i| targets.get(i)) {
                    m.add(2, |out| address(out, Some(&t.target), t.ip, ttl));
                }
            }
            order.len() > 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::RecordType;
    use hickory_server::net::xfer::Protocol;

    use super::*;
    use crate::handler::Step;
    use crate::{Config, Dns};

    const RECORDS: &str = r#"
[[network]]
name = "front"
[[network.service]]
name = "web"
vip = "10.77.0.200"
ports = [{ name = "http", port = 80 }]
tasks = [{ name = "web.1", ip = "10.77.0.11" }, { name = "web.2", ip = "fd00::12" }]
"#;

    /// Both encodings of the reply to `name`/`qtype`, parsed.
    fn both(name: &str, qtype: RecordType, edns: Option<(u16, u8)>) -> (Message, Message) {
        let config = Config::parse(RECORDS, Path::new("t.toml")).unwrap();
        let dns = Dns::new(config.snapshot().unwrap());
        let handler = dns.handler("front");
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some((size, version)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            e.set_version(version);
            m.set_edns(e);
        }
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let request = Request::from_bytes(m.to_vec().unwrap(), src, Protocol::Udp).unwrap();
        let snap = handler.snapshot();
        let Step::Reply(reply) = handler.prepare(&snap, &request) else {
            panic!("local names only")
        };
        let fast = encode(&request, &reply, 512).expect("a shape we know");
        let slow = crate::wire::encode(reply.build(&request), Protocol::Udp);
        (
            Message::from_vec(&fast).unwrap(),
            Message::from_vec(&slow).unwrap(),
        )
    }

    #[test]
    fn matches_hickorys_encoding() {
        for (name, qtype, edns) in [
            ("web.shoal.", RecordType::A, None),
            ("Web.Front.shoal.", RecordType::A, Some((1232, 0))),
            ("web.1.shoal.", RecordType::A, None),
            ("web.2.shoal.", RecordType::AAAA, Some((4096, 0))),
            ("_http._tcp.web.shoal.", RecordType::SRV, None),
            ("11.0.77.10.in-addr.arpa.", RecordType::PTR, None),
            ("nope.shoal.", RecordType::A, Some((1232, 0))),
            ("web.shoal.", RecordType::AAAA, None),
            ("shoal.", RecordType::SOA, None),
            ("web.shoal.", RecordType::A, Some((1232, 1))),
        ] {
            let (fast, slow) = both(name, qtype, edns);
            assert_eq!(fast.metadata, slow.metadata, "{name} {qtype}");
            assert_eq!(fast.queries, slow.queries, "{name} {qtype}");
            assert_eq!(fast.answers, slow.answers, "{name} {qtype}");
            assert_eq!(fast.authorities, slow.authorities, "{name} {qtype}");
            assert_eq!(fast.additionals, slow.additionals, "{name} {qtype}");
            assert_eq!(fast.edns, slow.edns, "{name} {qtype}");
            // Names keep the question's case.
            for r in &fast.answers {
                assert_eq!(r.name.to_string(), name, "{name} {qtype}");
            }
        }
    }

    // The fast path against the general one (hickory's parser, the
    // handler, an encoder), over many requests: whenever the fast path
    // answers, the general path must give the same message (up to the
    // order of shuffled records, and which records a sample of a big
    // round-robin name took).

    const DIFF_RECORDS: &str = r#"
domain = "shoal"
ttl = 7
[[network]]
name = "front"
also = ["back"]
[[network.service]]
name = "web"
vip = "10.77.0.200"
ports = [{ name = "http", port = 80 }, { name = "dns", port = 53, protocol = "udp" }]
tasks = [
  { name = "web.1", ip = "10.77.0.11" },
  { name = "web.2", ip = "fd00::12" },
  { name = "web.3", ip = "10.77.0.13", healthy = false },
]
[[network.service]]
name = "api"
endpoint_mode = "dnsrr"
ports = [{ name = "grpc", port = 9000 }]
tasks = [
  { name = "api.1", ip = "10.77.1.1" }, { name = "api.2", ip = "10.77.1.2" },
  { name = "api.3", ip = "10.77.1.3" }, { name = "api.4", ip = "fd00::1:4" },
  { name = "api.5", ip = "fd00::1:5" }, { name = "api.6", ip = "10.77.1.6", healthy = false },
]
[[network.service]]
name = "lonely"
endpoint_mode = "dnsrr"
ports = [{ name = "x", port = 1 }]
tasks = [{ name = "lonely.1", ip = "fd00::9", healthy = false }]
[[network.service]]
name = "a-very-long-service-name-that-makes-srv-targets-long-0123456789"
endpoint_mode = "dnsrr"
ports = [{ name = "http", port = 80 }]
tasks = [
  { name = "a-very-long-task-name-to-fill-a-udp-answer-quickly-000000000001", ip = "10.77.2.1" },
  { name = "a-very-long-task-name-to-fill-a-udp-answer-quickly-000000000002", ip = "10.77.2.2" },
  { name = "a-very-long-task-name-to-fill-a-udp-answer-quickly-000000000003", ip = "10.77.2.3" },
  { name = "a-very-long-task-name-to-fill-a-udp-answer-quickly-000000000004", ip = "10.77.2.4" },
  { name = "a-very-long-task-name-to-fill-a-udp-answer-quickly-000000000005", ip = "10.77.2.5" },
  { name = "a-very-long-task-name-to-fill-a-udp-answer-quickly-000000000006", ip = "10.77.2.6" },
]
[[network]]
name = "back"
[[network.service]]
name = "db"
vip = "fd00::db"
ports = [{ name = "pg", port = 5432 }]
tasks = [{ name = "db.1", ip = "10.78.0.1" }]
"#;

    /// `DIFF_RECORDS` plus a dnsrr service of `n` tasks (v4 and v6).
    fn diff_records(n: usize, upstreams: bool) -> String {
        let mut s = String::new();
        if upstreams {
            s.push_str("upstreams = [\"127.0.0.1:9\"]\n");
        }
        s.push_str(DIFF_RECORDS);
        s.push_str(
            "[[network]]\nname = \"big\"\n[[network.service]]\nname = \"big\"\n\
             endpoint_mode = \"dnsrr\"\nports = [{ name = \"p\", port = 7 }]\ntasks = [\n",
        );
        for i in 0..n {
            let ip = if i % 5 == 4 {
                format!("fd00::2:{i:x}")
            } else {
                format!("10.79.{}.{}", i / 250, i % 250 + 1)
            };
            s.push_str(&format!("  {{ name = \"big.{i}\", ip = \"{ip}\" }},\n"));
        }
        s.push_str("]\n");
        s
    }

    fn wire_name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// An OPT record: payload, extended rcode, version, flags, options.
    type Opt<'a> = (u16, u8, u8, u16, &'a [u8]);

    /// A request: flags bytes, question name (wire), type, class, OPT.
    fn request(flags: (u8, u8), name: &[u8], qtype: u16, qclass: u16, opt: Option<Opt>) -> Vec<u8> {
        let mut q = vec![
            0xBE,
            0xEF,
            flags.0,
            flags.1,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&qclass.to_be_bytes());
        if let Some((payload, rcode_high, version, eflags, options)) = opt {
            q.push(0);
            q.extend_from_slice(&41u16.to_be_bytes());
            q.extend_from_slice(&payload.to_be_bytes());
            q.extend_from_slice(&[rcode_high, version]);
            q.extend_from_slice(&eflags.to_be_bytes());
            q.extend_from_slice(&(options.len() as u16).to_be_bytes());
            q.extend_from_slice(options);
        }
        q
    }

    struct Fixture {
        dns: Dns,
        network: &'static str,
    }

    fn record_keys(records: &[Record]) -> Vec<String> {
        let mut keys: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        keys.sort();
        keys
    }

    /// Runs `bytes` through both paths; `true` if the fast path answered
    /// (and then agreed with the general path).
    fn differential(f: &Fixture, bytes: &[u8]) -> bool {
        let handler = f.dns.handler(f.network);
        let snap = handler.snapshot();
        let view = snap.view(f.network).expect("the fixture's network");
        let mut out = vec![0xAA; 7];
        let mut rng = rand::thread_rng();
        if answer(&snap, view, bytes, &mut rng, &mut out).is_none() {
            return false;
        }
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let general = match crate::wire::general(&handler, &snap, bytes, src, Protocol::Udp) {
            crate::wire::General::Reply(reply) => reply,
            _ => panic!("fast path answered what the general path does not: {bytes:02x?}"),
        };
        // Every record the name could give: the general path over TCP.
        let universe = match crate::wire::general(&handler, &snap, bytes, src, Protocol::Tcp) {
            crate::wire::General::Reply(reply) => Message::from_vec(&reply).unwrap(),
            _ => panic!("TCP: no reply"),
        };
        let fast = Message::from_vec(&out)
            .unwrap_or_else(|e| panic!("fast reply does not parse ({e}): {bytes:02x?}"));
        let slow = Message::from_vec(&general).unwrap();
        let what = format!("{:?} {bytes:02x?}", fast.queries);
        assert_eq!(fast.metadata, slow.metadata, "{what}");
        assert_eq!(fast.queries, slow.queries, "{what}");
        assert_eq!(fast.authorities, slow.authorities, "{what}");
        assert_eq!(fast.edns, slow.edns, "{what}");
        if slow.metadata.truncation {
            // Which records a sample took decides how many fit when their
            // sizes differ (SRV targets): the counts may differ a little.
            assert!(
                fast.answers.len().abs_diff(slow.answers.len()) <= 2,
                "{what}"
            );
        } else {
            assert_eq!(fast.answers.len(), slow.answers.len(), "{what}");
            assert_eq!(fast.additionals.len(), slow.additionals.len(), "{what}");
        }
        assert!(out.len() <= 512 || fast.edns.is_some(), "{what}");
        let (fa, fd) = (record_keys(&fast.answers), record_keys(&fast.additionals));
        let (ua, ud) = (
            record_keys(&universe.answers),
            record_keys(&universe.additionals),
        );
        if slow.answers.len() == universe.answers.len() && !slow.metadata.truncation {
            assert_eq!(fa, record_keys(&slow.answers), "{what}");
            assert_eq!(fd, record_keys(&slow.additionals), "{what}");
        } else {
            assert!(fa.iter().all(|r| ua.contains(r)), "{what}");
            assert!(fd.iter().all(|r| ud.contains(r)), "{what}");
        }
        // The raw question comes back as sent, case and all.
        assert_eq!(
            out.get(12..12 + fast_question_len(bytes)),
            bytes.get(12..12 + fast_question_len(bytes))
        );
        true
    }

    fn fast_question_len(bytes: &[u8]) -> usize {
        let mut pos = 12;
        while let Some(&l) = bytes.get(pos) {
            pos += 1 + usize::from(l);
            if l == 0 {
                break;
            }
        }
        pos + 4 - 12
    }

    fn fixtures() -> Vec<Fixture> {
        let mut all = Vec::new();
        for (n, upstreams) in [(40, false), (150, true)] {
            let text = diff_records(n, upstreams);
            let config = Config::parse(&text, Path::new("diff.toml")).unwrap();
            for network in ["front", "back", "big"] {
                all.push(Fixture {
                    dns: Dns::new(config.snapshot().unwrap()),
                    network,
                });
            }
        }
        all
    }

    const NAMES: &[&str] = &[
        "web",
        "Web.FRONT.shoal",
        "web.front",
        "web.shoal",
        "WEB.SHOAL",
        "tasks.web",
        "tasks.web.front.shoal",
        "web.1",
        "web.1.shoal",
        "web.2.front",
        "web.3",
        "web.3.shoal",
        "api",
        "api.shoal",
        "tasks.api.front.shoal",
        "api.4.shoal",
        "_http._tcp.web",
        "_HTTP._TCP.Web.shoal",
        "_dns._udp.web.front.shoal",
        "_grpc._tcp.api.shoal",
        "_x._tcp.lonely.shoal",
        "lonely.shoal",
        "tasks.lonely",
        "a-very-long-service-name-that-makes-srv-targets-long-0123456789.shoal",
        "_http._tcp.a-very-long-service-name-that-makes-srv-targets-long-0123456789.shoal",
        "tasks.a-very-long-service-name-that-makes-srv-targets-long-0123456789",
        "big",
        "big.shoal",
        "tasks.big.shoal",
        "_p._tcp.big.shoal",
        "big.7.big.shoal",
        "db",
        "db.back.shoal",
        "db.1.shoal",
        "_pg._tcp.db.back",
        "nope.shoal",
        "nope",
        "nope.front.shoal",
        "front",
        "front.shoal",
        "back.shoal",
        "shoal",
        "SHOAL",
        "example.com",
        "web.example",
        "shoal.example",
        "11.0.77.10.in-addr.arpa",
        "x.arpa",
        "web.front.shoal.shoal",
        "_http._tcp",
        "tasks",
        "web.1.front.back.shoal",
    ];

    const QTYPES: &[u16] = &[1, 28, 33, 255, 15, 16, 12, 6, 252, 251, 41, 0, 65, 1234];

    fn opts() -> Vec<Option<Opt<'static>>> {
        vec![
            None,
            Some((512, 0, 0, 0, &[])),
            Some((1232, 0, 0, 0x8000, &[])),
            Some((4096, 0, 0, 0, &[])),
            Some((100, 0, 0, 0, &[])),
            Some((700, 0, 0, 0, &[])),
            Some((1232, 0, 1, 0, &[])),
            Some((1232, 1, 0, 0, &[])),
            Some((1232, 0, 0, 0, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])),
        ]
    }

    #[test]
    fn fast_path_agrees_with_the_general_path() {
        let fixtures = fixtures();
        let (mut taken, mut total) = (0, 0);
        for f in &fixtures {
            for name in NAMES {
                let wire = wire_name(name);
                for &qtype in QTYPES {
                    for opt in opts() {
                        total += 1;
                        taken +=
                            usize::from(differential(f, &request((0x01, 0), &wire, qtype, 1, opt)));
                    }
                }
                for flags in [
                    (0, 0),
                    (0x01, 0x10),
                    (0x01, 0x20),
                    (0x05, 0x40),
                    (0x03, 0x8F),
                    (0x09, 0),
                    (0x81, 0),
                ] {
                    for qclass in [1, 3, 255] {
                        for qtype in [1, 28, 33] {
                            total += 1;
                            let bytes = request(flags, &wire, qtype, qclass, None);
                            taken += usize::from(differential(f, &bytes));
                        }
                    }
                }
            }
        }
        // The common shapes do take the fast path.
        assert!(taken > total / 4, "{taken} of {total}");
        let f = &fixtures[0];
        for (name, qtype) in [
            ("web.shoal", 1),
            ("tasks.api.shoal", 1),
            ("api.shoal", 28),
            ("_http._tcp.web.shoal", 33),
            ("nope.shoal", 1),
            ("web.shoal", 28),
            ("web.front", 16),
        ] {
            for opt in [None, Some((1232, 0, 0, 0x8000, &[][..]))] {
                assert!(
                    differential(f, &request((1, 0), &wire_name(name), qtype, 1, opt)),
                    "{name} {qtype}"
                );
            }
        }
    }

    #[test]
    fn odd_shapes_take_the_general_path() {
        let fixtures = fixtures();
        let f = &fixtures[0];
        let base = request((1, 0), &wire_name("web.shoal"), 1, 1, None);
        assert!(differential(f, &base));
        // Trailing bytes, other counts, a compressed name, a dot in a
        // label, a name near the limit: the general path decides.
        let mut trailing = base.clone();
        trailing.push(0);
        let mut two = base.clone();
        two[5] = 2;
        let mut answers = base.clone();
        answers[7] = 1;
        let mut pointer = base[..12].to_vec();
        pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        let dotted = request((1, 0), b"\x03a.b\x05shoal\x00", 1, 1, None);
        let mut long = Vec::new();
        for _ in 0..4 {
            long.push(61);
            long.extend_from_slice(&[b'a'; 61]);
        }
        long.extend_from_slice(b"\x05shoal\x00");
        let long = request((1, 0), &long, 1, 1, None);
        for bytes in [&trailing, &two, &answers, &pointer, &dotted, &long] {
            assert!(!differential(f, bytes), "{bytes:02x?}");
        }
        // Shorter names right under the limit still go fast.
        let mut fits = Vec::new();
        for _ in 0..3 {
            fits.push(63);
            fits.extend_from_slice(&[b'b'; 63]);
        }
        fits.push(50);
        fits.extend_from_slice(&[b'c'; 50]);
        fits.extend_from_slice(b"\x05shoal\x00");
        assert!(differential(f, &request((1, 0), &fits, 1, 1, None)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Valid requests with bytes changed, cut or added: the fast path
        /// never panics, and whatever it answers the general path answers
        /// the same.
        #[test]
        fn mutated_requests_agree(
            name in 0..NAMES.len(),
            qtype in 0..QTYPES.len(),
            opt in 0..9usize,
            edits in proptest::collection::vec((0..80usize, proptest::prelude::any::<u8>()), 0..4),
            cut in proptest::option::of(0..80usize),
            extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3),
        ) {
            thread_local! {
                static FIXTURES: Vec<Fixture> = fixtures();
            }
            let mut bytes = request((1, 0), &wire_name(NAMES[name]), QTYPES[qtype], 1, opts()[opt]);
            for (at, value) in edits {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            bytes.extend_from_slice(&extra);
            FIXTURES.with(|all| {
                for f in all {
                    differential(f, &bytes);
                }
            });
        }

        /// Random bytes: no panic, and any answer agrees.
        #[test]
        fn random_bytes_agree(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            thread_local! {
                static FIXTURES: Vec<Fixture> = fixtures();
            }
            FIXTURES.with(|all| differential(&all[0], &bytes));
        }
    }
}
