//! One client connection as the filter sees it: the request stream (client to broker) and the
//! response stream (broker to client), tied together by the correlation table.
//!
//! Sans-io: the host hands in each chunk as a [`ByteSource`] plus the current time, and gets back
//! a [`Verdict`]; what the filter saw goes to a [`MetricsSink`]. With no rules configured nothing
//! is rewritten: the chunk is forwarded exactly as it came.

use std::rc::Rc;

use crate::api::ApiLabel;
use crate::codec::frame::FrameHead;
use crate::codec::inflight::{Inflight, Reply};
use crate::codec::request::{self, parse_request, RequestHead, RequestParse};
use crate::codec::response;
use crate::codec::{ByteSource, Edits, FrameError, FrameReader, InflightTable, Step};
use crate::config::{Config, FrameErrorPolicy};
use crate::metrics::{len_i64, MetricKey, MetricsSink};
use crate::topics::rules::Peer;
use crate::topics::session::RewriteSession;

/// What the host should do with the chunk it just handed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the chunk as it is.
    Continue,
    /// Replace the chunk's first `prefix_len` bytes with `bytes`, then forward it.
    Rewrite { prefix_len: usize, bytes: Vec<u8> },
    /// Close the connection (both sides); the chunk is not forwarded.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Both streams are framed and interpreted.
    Observing,
    /// A stream could not be framed and policy says forward untouched: nothing is parsed anymore.
    Bypassed,
    /// Policy closed the connection.
    Closed,
}

/// Byte counters are reported in batches, not per chunk: each report is a host call. They are
/// flushed at most a second after a request or response was last seen, once this many bytes are
/// pending (for streams of large messages, which have few headers), and when the connection
/// ends ([`KafkaConnection::flush`]).
const BYTES_FLUSH_THRESHOLD: usize = 8 << 20;
const BYTES_FLUSH_INTERVAL_NS: u64 = 1_000_000_000;

/// The host's clock, read at most once per chunk and only when a frame header needs a time:
/// reading it is a host call, and most chunks of a large message need none.
struct LazyNow<F: FnOnce() -> u64> {
    read: Option<F>,
    value: u64,
}

impl<F: FnOnce() -> u64> LazyNow<F> {
    fn new(read: F) -> Self {
        Self {
            read: Some(read),
            value: 0,
        }
    }

    fn get(&mut self) -> u64 {
        if let Some(read) = self.read.take() {
            self.value = read();
        }
        self.value
    }

    /// The time, if something already needed it.
    fn if_read(&self) -> Option<u64> {
        self.read.is_none().then_some(self.value)
    }
}

pub struct KafkaConnection {
    id: u32,
    config: Rc<Config>,
    requests: FrameReader,
    responses: FrameReader,
    inflight: InflightTable,
    mode: Mode,
    client_id: Option<String>,
    undecodable_logged: bool,
    unreported_request_bytes: usize,
    unreported_response_bytes: usize,
    last_flush_ns: u64,
    /// Reused between chunks so that parsing requests does not allocate per chunk.
    heads: Vec<(RequestHead, Reply)>,
    /// Present when rules are configured: frames may then be held and rewritten.
    session: Option<RewriteSession>,
    edits: Edits,
}

impl KafkaConnection {
    /// `id` only labels log lines.
    pub fn new(id: u32, config: Rc<Config>) -> Self {
        let mut requests = FrameReader::new(request::FIRST_WANT, config.max_frame_bytes);
        let mut responses = FrameReader::new(response::FIRST_WANT, config.max_frame_bytes);
        let session = (!config.rules.is_empty()).then(|| {
            requests.set_hold(true);
            responses.set_hold(true);
            RewriteSession::new(id, config.clone())
        });
        Self {
            id,
            requests,
            responses,
            inflight: InflightTable::new(config.max_inflight_requests),
            mode: Mode::Observing,
            client_id: None,
            undecodable_logged: false,
            unreported_request_bytes: 0,
            unreported_response_bytes: 0,
            last_flush_ns: 0,
            heads: Vec::new(),
            session,
            edits: Edits::default(),
            config,
        }
    }

    /// Whether rules need the peer's identity or address ([`Self::set_peer`]) to match.
    pub fn needs_peer(&self) -> bool {
        self.session.is_some() && self.config.rules.iter().any(|r| r.matcher.needs_peer())
    }

    /// What the connection presents (mTLS identity, source address), for matching rules.
    pub fn set_peer(&mut self, peer: Peer) {
        if let Some(s) = &mut self.session {
            s.set_peer(peer);
        }
    }

    /// The client id of the connection's first decoded request.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// A chunk of bytes from the client. `now_ns`: any nanosecond clock, for latency; called
    /// at most once, and only if the chunk holds a frame header.
    // Not inlined, so that the benchmark's instruction count can name the core's entry points
    // (and they are small: the chunks inside a frame return from `admit`).
    #[inline(never)]
    pub fn on_request_data<S, F>(
        &mut self,
        src: &mut S,
        now_ns: F,
        m: &mut dyn MetricsSink,
    ) -> Verdict
    where
        S: ByteSource + ?Sized,
        F: FnOnce() -> u64,
    {
        match self.admit(Direction::Request, src.len(), m) {
            Some(verdict) => verdict,
            None => self.parse_requests(src, now_ns, m),
        }
    }

    /// The part of [`Self::on_request_data`] for chunks that hold frame boundaries: kept out of
    /// line so that the call for a chunk inside a frame stays a few instructions.
    #[inline(never)]
    fn parse_requests<S, F>(&mut self, src: &mut S, now_ns: F, m: &mut dyn MetricsSink) -> Verdict
    where
        S: ByteSource + ?Sized,
        F: FnOnce() -> u64,
    {
        let mut now = LazyNow::new(now_ns);
        let mut heads = std::mem::take(&mut self.heads);
        let mut edits = std::mem::take(&mut self.edits);
        edits.clear();
        let mut malformed = 0i64;
        let session = &mut self.session;
        let fed = self.requests.feed_editing(
            src,
            |h: &FrameHead<'_>| {
                if h.collected {
                    return match session {
                        Some(s) => s.finish_request(h.prefix, m),
                        None => Step::Done,
                    };
                }
                if let Some(step) = session
                    .as_mut()
                    .and_then(|s| s.continue_request(h.prefix, h.frame_len, h.last_look(), m))
                {
                    return step;
                }
                match parse_request(h.prefix, h.last_look()) {
                    RequestParse::Need(n) => Step::Need(n),
                    RequestParse::Done(head) => {
                        let (step, reply) = match session {
                            Some(s) => {
                                s.decide_request(&head, h.prefix, h.frame_len, h.last_look(), m)
                            }
                            None => (Step::Done, Reply::Forward),
                        };
                        heads.push((head, reply));
                        step
                    }
                    RequestParse::Malformed => {
                        malformed += 1;
                        Step::Done
                    }
                }
            },
            &mut edits,
        );
        if malformed > 0 {
            m.add(MetricKey::FramesUndecodable, malformed);
            self.log_undecodable("request frame too short for a request header");
        }
        for (head, reply) in heads.drain(..) {
            let t = now.get();
            self.on_request(head, reply, t, m);
        }
        self.heads = heads;
        if let Some(s) = &mut self.session {
            for (correlation_id, reply) in s.reply_updates.drain(..) {
                self.inflight.set_reply(correlation_id, reply);
            }
        }
        self.maybe_flush(now.if_read(), m);
        let verdict = match fed {
            Ok(()) => Verdict::Continue,
            Err(e) => self.on_frame_error(Direction::Request, e, m),
        };
        self.finish_chunk(src, edits, verdict, m)
    }

    /// A chunk of bytes from the broker. `now_ns` as for [`Self::on_request_data`].
    #[inline(never)]
    pub fn on_response_data<S, F>(
        &mut self,
        src: &mut S,
        now_ns: F,
        m: &mut dyn MetricsSink,
    ) -> Verdict
    where
        S: ByteSource + ?Sized,
        F: FnOnce() -> u64,
    {
        match self.admit(Direction::Response, src.len(), m) {
            Some(verdict) => verdict,
            None => self.parse_responses(src, now_ns, m),
        }
    }

    /// The part of [`Self::on_response_data`] for chunks that hold frame boundaries.
    #[inline(never)]
    fn parse_responses<S, F>(&mut self, src: &mut S, now_ns: F, m: &mut dyn MetricsSink) -> Verdict
    where
        S: ByteSource + ?Sized,
        F: FnOnce() -> u64,
    {
        let mut now = LazyNow::new(now_ns);
        let mut edits = std::mem::take(&mut self.edits);
        edits.clear();
        let inflight = &mut self.inflight;
        let session = &mut self.session;
        let mut malformed = 0i64;
        let fed = self.responses.feed_editing(
            src,
            |h: &FrameHead<'_>| {
                if h.collected {
                    return match session {
                        Some(s) => s.finish_response(h.prefix, m),
                        None => Step::Done,
                    };
                }
                if let Some(step) = session
                    .as_mut()
                    .and_then(|s| s.continue_response(h.prefix, h.frame_len, h.last_look(), m))
                {
                    return step;
                }
                let Some(id) = response::correlation_id(h.prefix) else {
                    if !h.last_look() {
                        return Step::Need(response::FIRST_WANT);
                    }
                    malformed += 1;
                    // Too short to be answered by anything: under a rule it is dropped.
                    return match session {
                        Some(s) => s.decide_response(None, h.prefix, h.frame_len, true, m),
                        None => Step::Done,
                    };
                };
                let matched = inflight.take(id);
                match &matched {
                    Some(matched) => {
                        let label: ApiLabel = crate::api::classify(matched.request.api_key);
                        m.add(MetricKey::Responses(label), 1);
                        let us = now.get().saturating_sub(matched.request.sent_at_ns) / 1_000;
                        m.record(MetricKey::ResponseLatencyUs(label), us);
                        if matched.skipped > 0 {
                            m.add(MetricKey::RequestsUnanswered, len_i64(matched.skipped));
                        }
                    }
                    None => m.add(MetricKey::ResponsesUnmatched, 1),
                }
                match session {
                    Some(s) => s.decide_response(
                        matched.as_ref().map(|x| &x.request),
                        h.prefix,
                        h.frame_len,
                        h.last_look(),
                        m,
                    ),
                    None => Step::Done,
                }
            },
            &mut edits,
        );
        if malformed > 0 {
            m.add(MetricKey::FramesUndecodable, malformed);
            self.log_undecodable("response frame too short for a response header");
        }
        self.maybe_flush(now.if_read(), m);
        let verdict = match fed {
            Ok(()) => Verdict::Continue,
            Err(e) => self.on_frame_error(Direction::Response, e, m),
        };
        self.finish_chunk(src, edits, verdict, m)
    }

    /// Turn the chunk's edits (if any) into the verdict, and settle a session that must close.
    fn finish_chunk<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        edits: Edits,
        verdict: Verdict,
        m: &mut dyn MetricsSink,
    ) -> Verdict {
        let must_close = self.session.as_ref().is_some_and(|s| s.must_close);
        let verdict = if must_close && self.mode != Mode::Closed {
            m.add(MetricKey::ConnectionsClosedByPolicy, 1);
            self.mode = Mode::Closed;
            self.flush(m);
            Verdict::Close
        } else if verdict == Verdict::Continue && !edits.is_empty() {
            match edits.apply(src) {
                Some((prefix_len, bytes)) => Verdict::Rewrite { prefix_len, bytes },
                None => {
                    // The chunk cannot be rebuilt: forwarding it as it is could leak held-back
                    // or unmapped bytes out of order, so the connection ends.
                    log::error!("connection {}: the host could not provide bytes to rebuild a chunk; closing", self.id);
                    self.mode = Mode::Closed;
                    Verdict::Close
                }
            }
        } else {
            verdict
        };
        self.edits = edits;
        verdict
    }

    /// What both directions do with a chunk before parsing it: count its bytes, let a chunk that
    /// lies inside a frame body through at once (the common case for large messages), and settle
    /// chunks of a connection that is no longer parsed. `None`: parse the chunk.
    #[inline(always)]
    fn admit(&mut self, dir: Direction, len: usize, m: &mut dyn MetricsSink) -> Option<Verdict> {
        let (reader, unreported) = match dir {
            Direction::Request => (&mut self.requests, &mut self.unreported_request_bytes),
            Direction::Response => (&mut self.responses, &mut self.unreported_response_bytes),
        };
        *unreported += len;
        // Cheapest test first; skipping moves a reader that is no longer used once the mode
        // is not `Observing`, so its order does not matter.
        if *unreported < BYTES_FLUSH_THRESHOLD
            && reader.skip_within_frame(len)
            && self.mode == Mode::Observing
        {
            return Some(Verdict::Continue);
        }
        match self.mode {
            Mode::Observing => None,
            Mode::Closed => {
                self.flush(m);
                Some(Verdict::Close)
            }
            Mode::Bypassed => {
                self.flush(m);
                Some(Verdict::Continue)
            }
        }
    }

    fn maybe_flush(&mut self, now_ns: Option<u64>, m: &mut dyn MetricsSink) {
        let pending = self.unreported_request_bytes + self.unreported_response_bytes;
        let due = match now_ns {
            Some(t) => t.saturating_sub(self.last_flush_ns) >= BYTES_FLUSH_INTERVAL_NS,
            None => false,
        };
        if due || pending >= BYTES_FLUSH_THRESHOLD {
            if let Some(t) = now_ns {
                self.last_flush_ns = t;
            }
            self.flush(m);
        }
    }

    /// Report byte counts not yet reported. Hosts call this when the connection ends.
    pub fn flush(&mut self, m: &mut dyn MetricsSink) {
        if self.unreported_request_bytes > 0 {
            m.add(
                MetricKey::RequestBytes,
                len_i64(self.unreported_request_bytes),
            );
            self.unreported_request_bytes = 0;
        }
        if self.unreported_response_bytes > 0 {
            m.add(
                MetricKey::ResponseBytes,
                len_i64(self.unreported_response_bytes),
            );
            self.unreported_response_bytes = 0;
        }
    }

    fn on_request(
        &mut self,
        head: RequestHead,
        reply: Reply,
        now_ns: u64,
        m: &mut dyn MetricsSink,
    ) {
        m.add(MetricKey::Requests(head.api), 1);
        if head.api.is_none() {
            m.add(MetricKey::RequestsUnknownApi, 1);
            log::debug!(
                "connection {}: unknown API key {} v{} (correlation id {}), forwarded untouched",
                self.id,
                head.api_key,
                head.api_version,
                head.correlation_id
            );
        } else if !head.version_known {
            m.add(MetricKey::RequestsUnknownVersion, 1);
            log::debug!(
                "connection {}: {:?} v{} is newer than this filter knows, forwarded untouched",
                self.id,
                head.api,
                head.api_version
            );
        }
        if head.api.is_some() && !head.header_decoded {
            m.add(MetricKey::FramesUndecodable, 1);
            self.log_undecodable("request header could not be decoded");
        }
        if self.client_id.is_none() {
            self.client_id = head.client_id.map(|c| c.as_str().to_string());
        }
        if head.expects_response {
            let evicted = self.inflight.push(Inflight {
                correlation_id: head.correlation_id,
                api_key: head.api_key,
                api_version: head.api_version,
                sent_at_ns: now_ns,
                reply,
            });
            if let Some(evicted) = evicted {
                m.add(MetricKey::InflightOverflow, 1);
                if evicted.reply != Reply::Forward {
                    // Its response could no longer be mapped back.
                    log::warn!(
                        "connection {}: correlation table full under a rule; closing the connection",
                        self.id
                    );
                    if let Some(s) = &mut self.session {
                        s.must_close = true;
                    }
                }
            }
        }
    }

    fn on_frame_error(
        &mut self,
        dir: Direction,
        e: FrameError,
        m: &mut dyn MetricsSink,
    ) -> Verdict {
        match e {
            FrameError::Oversized { .. } => m.add(MetricKey::FramesOversized, 1),
            FrameError::NegativeSize(_) => m.add(MetricKey::FramesInvalidSize, 1),
            FrameError::HostRead => {}
        }
        // Unreadable host buffers are our problem, not the client's: never close for them.
        let policy = match e {
            FrameError::HostRead => FrameErrorPolicy::PassThrough,
            _ => self.config.on_frame_error,
        };
        let client = self.client_id.as_deref().unwrap_or("-");
        match policy {
            FrameErrorPolicy::Close => {
                log::warn!(
                    "connection {} (client_id {client}): {} stream: {e}; closing the connection (on_frame_error=close)",
                    self.id,
                    dir.as_str()
                );
                m.add(MetricKey::ConnectionsClosedByPolicy, 1);
                self.mode = Mode::Closed;
                Verdict::Close
            }
            FrameErrorPolicy::PassThrough => {
                log::warn!(
                    "connection {} (client_id {client}): {} stream: {e}; forwarding the rest of the connection untouched",
                    self.id,
                    dir.as_str()
                );
                m.add(MetricKey::ConnectionsBypassed, 1);
                self.mode = Mode::Bypassed;
                Verdict::Continue
            }
        }
    }

    fn log_undecodable(&mut self, what: &str) {
        // First time per connection at warn, then quietly: a broken client must not flood the log.
        if self.undecodable_logged {
            log::debug!("connection {}: {what}, forwarded untouched", self.id);
        } else {
            self.undecodable_logged = true;
            log::warn!(
                "connection {} (client_id {}): {what}, forwarded untouched (further ones logged at debug)",
                self.id,
                self.client_id.as_deref().unwrap_or("-")
            );
        }
    }
}
