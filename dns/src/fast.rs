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
#[path = "fast_tests.rs"]
mod tests;
