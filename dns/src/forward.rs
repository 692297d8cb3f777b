//! Forwarding: names that are not ours go to the configured upstreams, one
//! after another, within one overall timeout. Each attempt uses a fresh
//! socket and a random query ID, and only a reply to the same question is
//! taken. A truncated UDP reply is asked again over TCP.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

/// The default time a forwarded query may take, over all upstreams.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The default number of forwarded answers cached.
pub const DEFAULT_CACHE_SIZE: usize = 1024;
/// The UDP payload size advertised to upstreams (and to clients).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Where and how names that are not ours are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// Upstream servers, tried in order. Empty: nothing is forwarded and
    /// names that are not ours are REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// The time a forwarded query may take in all, across every upstream;
    /// when it runs out the client gets SERVFAIL.
    pub timeout: Duration,
    /// How many forwarded answers are cached (0: no cache).
    pub cache_size: usize,
}

impl Default for Forwarding {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            timeout: DEFAULT_UPSTREAM_TIMEOUT,
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

/// Why a forwarded query got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No upstream is configured.
    #[error("no upstreams configured")]
    NoUpstreams,
    /// Every upstream failed or the time ran out; the last failure.
    #[error("all upstreams failed; last: {upstream}: {reason}")]
    AllFailed {
        /// The last upstream tried.
        upstream: SocketAddr,
        /// What went wrong with it.
        reason: String,
    },
}

/// Asks the upstreams of `forwarding` for `query`, in order, until one
/// answers with anything but SERVFAIL or REFUSED or the timeout runs out.
pub async fn forward(query: &Query, forwarding: &Forwarding) -> Result<Message, ForwardError> {
    let deadline = Instant::now() + forwarding.timeout;
    let n = forwarding.upstreams.len();
    let mut last = None;
    for (i, &upstream) in forwarding.upstreams.iter().enumerate() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Split what is left evenly over the upstreams not yet tried, so a
        // silent first upstream cannot eat the whole budget.
        let share = (deadline - now) / u32::try_from(n - i).unwrap_or(1);
        let attempt_deadline = now + share;
        let result = timeout_at(
            attempt_deadline,
            exchange(upstream, query, attempt_deadline),
        )
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
        match result {
            Ok(m)
                if !matches!(
                    m.metadata.response_code,
                    ResponseCode::ServFail | ResponseCode::Refused
                ) =>
            {
                return Ok(m)
            }
            Ok(m) => last = Some((upstream, format!("answered {}", m.metadata.response_code))),
            Err(e) => last = Some((upstream, e.to_string())),
        }
    }
    match last {
        Some((upstream, reason)) => Err(ForwardError::AllFailed { upstream, reason }),
        None if n == 0 => Err(ForwardError::NoUpstreams),
        None => Err(ForwardError::AllFailed {
            upstream: forwarding.upstreams[0],
            reason: "timed out".into(),
        }),
    }
}

/// One question to one upstream: over UDP, then over TCP if truncated.
async fn exchange(upstream: SocketAddr, query: &Query, deadline: Instant) -> io::Result<Message> {
    let id: u16 = rand::random();
    let mut request = Message::new(id, MessageType::Query, OpCode::Query);
    request.metadata.recursion_desired = true;
    request.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    request.set_edns(edns);
    let bytes = request.to_vec().map_err(io::Error::other)?;

    let reply = udp_exchange(upstream, &bytes, id, query).await?;
    if !reply.metadata.truncation {
        return Ok(reply);
    }
    timeout_at(deadline, tcp_exchange(upstream, &bytes, id, query))
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out over TCP",
            ))
        })
}

async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    id: u16,
    query: &Query,
) -> io::Result<Message> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that is not the reply to our question is dropped.
        if let Some(reply) = buf.get(..n).and_then(|b| matching_reply(b, id, query)) {
            return Ok(reply);
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    id: u16,
    query: &Query,
) -> io::Result<Message> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    matching_reply(&buf, id, query)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "reply does not match the query"))
}

/// The reply in `bytes` if it parses and answers `query` under `id`.
fn matching_reply(bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
    let reply = Message::from_vec(bytes).ok()?;
    // Name equality is case-insensitive, as DNS wants.
    let same_question = matches!(&reply.queries[..], [q] if q.query_type() == query.query_type()
        && q.query_class() == query.query_class()
        && q.name() == query.name());
    (reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && same_question)
        .then_some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    #[tokio::test]
    async fn no_upstreams_is_an_error() {
        let q = Query::query(Name::from_str("example.test.").unwrap(), RecordType::A);
        let err = forward(&q, &Forwarding::default()).await.unwrap_err();
        assert!(matches!(err, ForwardError::NoUpstreams));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_times_out_on_the_budget() {
        // Bound but never read: the query is swallowed.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let fw = Forwarding {
            upstreams: vec![silent.local_addr().unwrap()],
            timeout: Duration::from_secs(3),
            cache_size: 0,
        };
        let q = Query::query(Name::from_str("example.test.").unwrap(), RecordType::A);
        let start = Instant::now();
        let err = forward(&q, &fw).await.unwrap_err();
        assert!(matches!(err, ForwardError::AllFailed { .. }), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[test]
    fn replies_must_match() {
        let q = Query::query(Name::from_str("example.test.").unwrap(), RecordType::A);
        let mut reply = Message::new(7, MessageType::Response, OpCode::Query);
        reply.add_query(q.clone());
        let bytes = reply.to_vec().unwrap();
        assert!(matching_reply(&bytes, 7, &q).is_some());
        assert!(matching_reply(&bytes, 8, &q).is_none());
        let other = Query::query(Name::from_str("other.test.").unwrap(), RecordType::A);
        assert!(matching_reply(&bytes, 7, &other).is_none());
        assert!(matching_reply(&bytes[..5], 7, &q).is_none());
    }
}
