//! Bytes in, bytes out: one request message through the steps of the
//! request path (header, message, handler, encoding under the transport's
//! size limit), without a socket.
//!
//! The UDP loop (the `udp` module) runs exactly this; the fuzz target
//! and the random-bytes tests drive it through [`respond`]. Over UDP the
//! common request is answered by `fast::answer` straight from its bytes;
//! everything else takes the general path: hickory's parser, the handler,
//! and an encoder.

use std::net::SocketAddr;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use rand::Rng;

use crate::fast;
use crate::handler::{Step, ViewHandler};
use crate::snapshot::Snapshot;

/// What became of a request's bytes.
pub(crate) enum Processed {
    /// No reply: shorter than a header, or a response rather than a query.
    Silent,
    /// The encoded reply is in the caller's buffer.
    Reply,
    /// The parsed request, to be forwarded (see [`finish`]).
    Forward(Box<Request>),
}

/// Everything up to the upstreams, without waiting: a reply is written to
/// `out` (over UDP shuffles draw from `rng`). As hickory's server loop
/// does, a readable header with an unreadable rest gets FORMERR.
pub(crate) fn process<R: Rng + ?Sized>(
    handler: &ViewHandler,
    snap: &Snapshot,
    bytes: &[u8],
    src: SocketAddr,
    protocol: Protocol,
    rng: &mut R,
    out: &mut Vec<u8>,
) -> Processed {
    if matches!(protocol, Protocol::Udp) {
        if let Some(view) = snap.view(handler.network()) {
            if fast::answer(snap, view, bytes, rng, out).is_some() {
                return Processed::Reply;
            }
        }
    }
    let processed = general(handler, snap, bytes, src, protocol);
    match processed {
        General::Silent => Processed::Silent,
        General::Reply(reply) => {
            *out = reply;
            Processed::Reply
        }
        General::Forward(request) => Processed::Forward(request),
    }
}

/// What the general path made of a request.
pub(crate) enum General {
    Silent,
    Reply(Vec<u8>),
    Forward(Box<Request>),
}

/// The general path: hickory's parser, the handler, an encoder.
pub(crate) fn general(
    handler: &ViewHandler,
    snap: &Snapshot,
    bytes: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> General {
    let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
        return General::Silent;
    };
    let request = match Request::from_bytes(bytes.to_vec(), src, protocol) {
        Ok(request) => request,
        Err(_) => {
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return General::Silent;
            };
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            return General::Reply(encode(response, protocol));
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return General::Silent;
    }
    match handler.prepare(snap, &request) {
        Step::Reply(reply) => {
            let max = match protocol {
                Protocol::Udp => reply
                    .edns
                    .as_ref()
                    .map_or(512, |e| e.max_payload().max(512)),
                _ => u16::MAX,
            };
            let bytes = fast::encode(&request, &reply, usize::from(max))
                .unwrap_or_else(|| encode(reply.build(&request), protocol));
            General::Reply(bytes)
        }
        Step::Forward => General::Forward(Box::new(request)),
    }
}

/// Forwards a request [`process`] set aside and encodes the reply.
pub(crate) async fn finish(handler: &ViewHandler, snap: &Snapshot, request: &Request) -> Vec<u8> {
    let reply = handler.forwarded(snap, request).await;
    encode(reply.build(request), request.protocol())
}

/// Answers the request in `bytes` as if it came from `src` over
/// `protocol`; `None` when the server stays silent (shorter than a header,
/// or a well-formed response rather than a query). Never panics.
pub async fn respond(
    handler: &ViewHandler,
    bytes: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    let snap = handler.snapshot();
    let mut out = Vec::new();
    let processed = process(
        handler,
        &snap,
        bytes,
        src,
        protocol,
        &mut rand::thread_rng(),
        &mut out,
    );
    match processed {
        Processed::Silent => None,
        Processed::Reply => Some(out),
        Processed::Forward(request) => Some(finish(handler, &snap, &request).await),
    }
}

/// Encodes `response` as hickory does: over UDP within the client's
/// buffer (512 bytes without EDNS), setting TC when records had to be left
/// out; an answer that cannot be encoded at all becomes SERVFAIL.
pub(crate) fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    protocol: Protocol,
) -> Vec<u8> {
    let id = response.metadata().id;
    let max = match protocol {
        Protocol::Udp => response.edns().map_or(512, |e| e.max_payload().max(512)),
        _ => u16::MAX,
    };
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    if response.destructive_emit(&mut encoder).is_ok() {
        return bytes;
    }
    bytes.clear();
    let mut encoder = BinEncoder::new(&mut bytes);
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    // A bare header always fits; should it not, the reply is empty and
    // the caller sends nothing.
    if header.emit(&mut encoder).is_err() {
        bytes.clear();
    }
    bytes
}
