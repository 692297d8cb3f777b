//! Tests of the fast path: its wire output against hickory's, and the
//! differential run over generated requests.
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
