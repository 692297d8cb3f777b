//! A direct encoder for local replies, the hot path of the UDP loop.
//!
//! hickory's general encoder (name compression tables, per-record
//! iterators) costs about half of a local answer's instructions. Local
//! replies have a fixed shape, so they are written straight out: the header,
//! the question as received, answers owned by the question name (a pointer
//! to offset 12), other names written whole, then the OPT record. Anything
//! else, or any record type not listed here, returns `None` and the caller
//! uses hickory's encoder: this is an optimisation, never a second opinion.
//!
//! Truncation follows hickory's rule: records are written while they fit
//! (keeping room for the OPT record); the first that does not sets TC and
//! ends the message there.

use hickory_proto::op::Edns;
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::server::Request;

use crate::handler::Reply;

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
fn write_record(out: &mut Vec<u8>, record: &Record, qname_pointer: bool) -> Option<()> {
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
}
