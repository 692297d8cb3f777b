//! Bytes in, bytes out: one request message through the steps of the
//! request path (header, message, handler, encoding under the transport's
//! size limit), without a socket.
//!
//! The UDP loop (the `udp` module) runs exactly this; the fuzz target
//! and the random-bytes tests drive it through [`respond`].

use std::net::SocketAddr;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};

use crate::fast;
use crate::handler::{Step, ViewHandler};
use crate::snapshot::Snapshot;

/// What became of a request's bytes.
pub(crate) enum Processed {
    /// No reply: shorter than a header, or a response rather than a query.
    Silent,
    /// The encoded reply.
    Reply(Vec<u8>),
    /// The parsed request, to be forwarded (see [`finish`]).
    Forward(Box<Request>),
}

/// Everything up to the upstreams, without waiting: as hickory's server
/// loop does, a readable header with an unreadable rest gets FORMERR.
pub(crate) fn process(
    handler: &ViewHandler,
    snap: &Snapshot,
    bytes: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> Processed {
    let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
        return Processed::Silent;
    };
    let request = match Request::from_bytes(bytes.to_vec(), src, protocol) {
        Ok(request) => request,
        Err(_) => {
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return Processed::Silent;
            };
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            return Processed::Reply(encode(response, protocol));
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return Processed::Silent;
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
            Processed::Reply(bytes)
        }
        Step::Forward => Processed::Forward(Box::new(request)),
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
    match process(handler, &snap, bytes, src, protocol) {
        Processed::Silent => None,
        Processed::Reply(reply) => Some(reply),
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
