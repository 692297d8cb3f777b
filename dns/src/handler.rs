//! The request handler: one per listener's network. It loads the current
//! snapshot (a pointer copy, never a lock), answers from it, forwards what
//! is not ours, and hands the response over to be encoded and sent.
//!
//! The work is split so every transport shares it: `ViewHandler::prepare`
//! decides synchronously (a `Reply`, or "forward this"), the forwarding
//! step is the only one that waits, and `Reply::build` turns a reply into
//! hickory's `MessageResponse`. The hickory `RequestHandler` (TCP) and the
//! UDP loop (`udp` module) are thin shells around these.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use tracing::debug;

use crate::answer::{answer, Answer, MAX_ANSWER_RECORDS};
use crate::cache::{Cache, CacheKey};
use crate::forward::{forward, EDNS_PAYLOAD};
use crate::snapshot::Snapshot;

/// What every handler shares: the current snapshot and the forward cache.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) cache: Cache,
}

/// Answers queries that arrive on one network's listeners, from that
/// network's view of the current snapshot.
#[derive(Debug, Clone)]
pub struct ViewHandler {
    network: Arc<str>,
    shared: Arc<Shared>,
}

/// A response, decided but not yet encoded.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) metadata: Metadata,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
    pub(crate) soa: Option<Box<Record>>,
    pub(crate) additionals: Vec<Record>,
    pub(crate) edns: Option<Edns>,
}

/// The outcome of [`ViewHandler::prepare`].
#[derive(Debug)]
pub(crate) enum Step {
    /// The response is ready.
    Reply(Box<Reply>),
    /// The question is not ours: ask the upstreams, then [`ViewHandler::forwarded`].
    Forward,
}

impl Reply {
    fn new(request: &Request, metadata: Metadata) -> Self {
        // Our OPT record: the client's buffer size, capped so UDP answers
        // are not fragmented; without one the limit is 512 bytes.
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(request.max_payload().min(EDNS_PAYLOAD));
            edns
        });
        Self {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            soa: None,
            additionals: Vec::new(),
            edns,
        }
    }

    /// The response to `request`, for hickory to encode.
    pub(crate) fn build<'q>(
        &'q self,
        request: &'q Request,
    ) -> MessageResponse<
        'q,
        'q,
        impl Iterator<Item = &'q Record> + Send + 'q,
        impl Iterator<Item = &'q Record> + Send + 'q,
        impl Iterator<Item = &'q Record> + Send + 'q,
        impl Iterator<Item = &'q Record> + Send + 'q,
    > {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &self.edns {
            builder.edns(edns);
        }
        builder.build(
            self.metadata,
            self.answers.iter(),
            self.authorities.iter(),
            self.soa.as_deref(),
            self.additionals.iter(),
        )
    }
}

impl ViewHandler {
    pub(crate) fn new(network: &str, shared: Arc<Shared>) -> Self {
        Self {
            network: network.into(),
            shared,
        }
    }

    /// The network whose view this handler answers from.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The current snapshot, borrowed: cheaper than [`Self::snapshot`] for
    /// the moment a local answer takes (not to be held across a wait).
    pub(crate) fn snapshot_guard(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.shared.snapshot.load()
    }

    /// Decides the response to `request` from `snap`, without waiting.
    pub(crate) fn prepare(&self, snap: &Snapshot, request: &Request) -> Step {
        let recursion_available = !snap.forwarding.upstreams.is_empty();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = recursion_available;
        let code = |code: ResponseCode| {
            let mut metadata = metadata;
            metadata.response_code = code;
            Step::Reply(Box::new(Reply::new(request, metadata)))
        };
        if request.version() > 0 {
            return code(ResponseCode::BADVERS);
        }
        if request.metadata.op_code != OpCode::Query {
            return code(ResponseCode::NotImp);
        }
        let query = match request.queries.queries() {
            [query] if query.query_class() != DNSClass::IN => return code(ResponseCode::Refused),
            [query] if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) => {
                return code(ResponseCode::Refused)
            }
            [query] => query,
            _ => return code(ResponseCode::FormErr),
        };
        let Some(view) = snap.view(&self.network) else {
            return code(ResponseCode::Refused);
        };
        let limit = match request.protocol() {
            Protocol::Udp => usize::from(request.max_payload().min(EDNS_PAYLOAD)) / 16 + 1,
            _ => MAX_ANSWER_RECORDS,
        };
        match answer(snap, view, query, limit) {
            Answer::Local {
                rcode,
                answers,
                soa,
                additionals,
            } => {
                metadata.authoritative = true;
                metadata.response_code = rcode;
                let mut reply = Reply::new(request, metadata);
                reply.answers = answers;
                reply.soa = soa;
                reply.additionals = additionals;
                Step::Reply(Box::new(reply))
            }
            Answer::NotOurs if !recursion_available => code(ResponseCode::Refused),
            Answer::NotOurs => Step::Forward,
        }
    }

    /// The response to a `request` that [`prepare`](Self::prepare) said to
    /// forward: the upstreams' answer (from the cache when fresh), or
    /// SERVFAIL when none came in time.
    pub(crate) async fn forwarded(&self, snap: &Snapshot, request: &Request) -> Reply {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let Some(query) = request.queries.queries().first() else {
            metadata.response_code = ResponseCode::FormErr;
            return Reply::new(request, metadata);
        };
        let key = CacheKey {
            name: query.name().clone(),
            qtype: query.query_type(),
            class: query.query_class(),
        };
        let upstream = match self.shared.cache.get(&key) {
            Some(hit) => Some(hit),
            None => match forward(query.original(), &snap.forwarding).await {
                Ok(reply) => {
                    self.shared
                        .cache
                        .insert(key, &reply, snap.forwarding.cache_size);
                    Some(reply)
                }
                Err(error) => {
                    debug!(%error, name = %query.name(), "forwarding failed");
                    None
                }
            },
        };
        match upstream {
            Some(message) => {
                metadata.response_code = message.metadata.response_code;
                let mut reply = Reply::new(request, metadata);
                reply.answers = message.answers;
                reply.authorities = message.authorities;
                reply.additionals = message.additionals;
                reply
            }
            None => {
                metadata.response_code = ResponseCode::ServFail;
                Reply::new(request, metadata)
            }
        }
    }
}

/// The hickory server loop (TCP) calls this for every request.
#[async_trait]
impl RequestHandler for ViewHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let snapshot = self.snapshot();
        let reply = match self.prepare(&snapshot, request) {
            Step::Reply(reply) => *reply,
            Step::Forward => self.forwarded(&snapshot, request).await,
        };
        match response_handle.send_response(reply.build(request)).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, network = %self.network, "could not send a response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
