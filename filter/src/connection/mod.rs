//! One client connection as the filter sees it: the request stream (client to broker) and the
//! response stream (broker to client), framed, tied together by the correlation table, and
//! every frame run through the decision pipeline ([`crate::pipeline`]).
//!
//! Sans-io: the host hands in each chunk as a [`ByteSource`] plus the current time, and gets back
//! a [`Verdict`]; what the filter saw goes to a [`MetricsSink`]. With no stage configured nothing
//! is rewritten: the chunk is forwarded exactly as it came.

mod examine;
mod fetch_positions;
mod group_ids;
mod headers;
mod log_ends;
mod walking;
mod whole_reads;

pub use whole_reads::{topic_id_key, topic_name};

use std::rc::Rc;

use crate::client_log;
use crate::codec::frame::FrameHead;
use crate::codec::{request, response};
use crate::codec::{ByteSource, Edits, FrameError, FrameReader};
use crate::config::{Config, FrameErrorPolicy};
use crate::limits::{BucketStore, LocalStore};
use crate::metrics::{len_i64, MetricKey, MetricsSink};
use crate::pipeline::held::HeldBudget;
use crate::pipeline::{Identity, Peer};
use examine::ConnState;

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
    /// The connection is closed (by policy, or failing closed).
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
pub(crate) struct LazyNow<F: FnOnce() -> u64> {
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

    pub(crate) fn get(&mut self) -> u64 {
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
    requests: FrameReader,
    responses: FrameReader,
    state: ConnState,
    mode: Mode,
    unreported_request_bytes: usize,
    unreported_response_bytes: usize,
    last_flush_ns: u64,
    edits: Edits,
}

impl KafkaConnection {
    /// A connection with a held-bytes budget of its own (`max_held_bytes`). `id` only labels
    /// log lines.
    pub fn new(id: u32, config: Rc<Config>) -> Self {
        let budget = HeldBudget::new(config.max_held_bytes);
        Self::with_budget(id, config, budget)
    }

    /// A connection sharing `budget` with the other connections of its VM.
    pub fn with_budget(id: u32, config: Rc<Config>, budget: HeldBudget) -> Self {
        let limits: Rc<dyn BucketStore> = Rc::new(LocalStore::default());
        Self::with_shared(id, config, budget, limits)
    }

    /// A connection sharing `budget` with the other connections of its VM, and rate-limit
    /// buckets with every connection that uses `limits`.
    pub fn with_shared(
        id: u32,
        config: Rc<Config>,
        budget: HeldBudget,
        limits: Rc<dyn BucketStore>,
    ) -> Self {
        let mut requests = FrameReader::new(request::FIRST_WANT, config.max_frame_bytes);
        let mut responses = FrameReader::new(response::FIRST_WANT, config.max_frame_bytes);
        let state = ConnState::new(id, config, budget, limits);
        // Frames that a stage may change are held until decided.
        requests.set_hold(state.pipeline.holds());
        responses.set_hold(state.pipeline.holds());
        Self {
            requests,
            responses,
            state,
            mode: Mode::Observing,
            unreported_request_bytes: 0,
            unreported_response_bytes: 0,
            last_flush_ns: 0,
            edits: Edits::default(),
        }
    }

    /// Whether a stage needs the peer's identity or address ([`Self::set_peer`]) to match.
    pub fn needs_peer(&self) -> bool {
        self.state.pipeline.needs_peer()
    }

    /// The VM's buffer of request-log lines for the HTTP collector (see
    /// `observers::log_sink`).
    pub fn set_collector(&mut self, lines: &crate::observers::log_sink::SharedLines) {
        self.state.pipeline.set_collector(lines);
    }

    /// What the connection presents (mTLS identity, source address).
    pub fn set_peer(&mut self, peer: Peer) {
        self.state.identity.peer = peer;
        self.state.pipeline.on_identity(&self.state.identity);
    }

    /// Who the client is, as far as the connection has shown.
    pub fn identity(&self) -> &Identity {
        &self.state.identity
    }

    /// The client id of the connection's first decoded request.
    pub fn client_id(&self) -> Option<&str> {
        self.state.identity.client_id.as_deref()
    }

    pub fn inflight(&self) -> usize {
        self.state.inflight.len()
    }

    /// How long a stage asked the host to stop reading requests (milliseconds), once.
    pub fn take_delay_ms(&mut self) -> Option<u32> {
        let ms = std::mem::take(&mut self.state.delay_ms);
        (ms > 0).then_some(ms)
    }

    /// Whether the hold just taken ([`Self::take_delay_ms`]) starts before the chunk just
    /// handed in: its bytes must wait too (a request of a key already in debt), once.
    pub fn take_hold_first(&mut self) -> bool {
        std::mem::take(&mut self.state.hold_first)
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
            None => self.parse(Direction::Request, src, now_ns, m),
        }
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
            None => {
                // A request whose header has not been read yet may be under a rule, whatever
                // the connection's earlier requests were (found by fuzzing).
                self.state.request_unread = self.requests.awaiting_head();
                self.parse(Direction::Response, src, now_ns, m)
            }
        }
    }

    /// The part of the entry points for chunks that hold frame boundaries: kept out of line so
    /// that the call for a chunk inside a frame stays a few instructions.
    #[inline(never)]
    fn parse<S, F>(
        &mut self,
        dir: Direction,
        src: &mut S,
        now_ns: F,
        m: &mut dyn MetricsSink,
    ) -> Verdict
    where
        S: ByteSource + ?Sized,
        F: FnOnce() -> u64,
    {
        let mut now = LazyNow::new(now_ns);
        let mut edits = std::mem::take(&mut self.edits);
        edits.clear();
        let state = &mut self.state;
        let fed = match dir {
            Direction::Request => self.requests.feed_editing(
                src,
                |h: &FrameHead<'_>| state.examine_request(h, &mut now, m),
                &mut edits,
            ),
            Direction::Response => self.responses.feed_editing(
                src,
                |h: &FrameHead<'_>| state.examine_response(h, &mut now, m),
                &mut edits,
            ),
        };
        let malformed = std::mem::take(&mut self.state.malformed);
        if malformed > 0 {
            m.add(MetricKey::FramesUndecodable, malformed);
            self.state.log_undecodable(&format!(
                "{} frame too short for a {} header",
                dir.as_str(),
                dir.as_str()
            ));
        }
        self.maybe_flush(now.if_read(), m);
        let verdict = match fed {
            Ok(()) => Verdict::Continue,
            Err(e) => self.on_frame_error(dir, e, m),
        };
        self.finish_chunk(src, edits, verdict, m)
    }

    /// Turn the chunk's edits (if any) into the verdict, and close a connection that must.
    fn finish_chunk<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        mut edits: Edits,
        verdict: Verdict,
        m: &mut dyn MetricsSink,
    ) -> Verdict {
        let verdict = if self.state.must_close && self.mode != Mode::Closed {
            m.add(MetricKey::ConnectionsClosedByPolicy, 1);
            self.close(m)
        } else if verdict == Verdict::Continue && !edits.is_empty() {
            match edits.apply(src) {
                Some((prefix_len, bytes)) => Verdict::Rewrite { prefix_len, bytes },
                None => {
                    // The chunk cannot be rebuilt: forwarding it as it is could leak held-back
                    // or unmapped bytes out of order, so the connection ends.
                    let id = self.state.id;
                    client_log::error(
                        id,
                        format_args!("connection {id}: the host could not provide bytes to rebuild a chunk; closing"),
                    );
                    self.close(m)
                }
            }
        } else {
            verdict
        };
        self.edits = edits;
        verdict
    }

    fn close(&mut self, m: &mut dyn MetricsSink) -> Verdict {
        self.mode = Mode::Closed;
        self.state.release_held();
        self.flush(m);
        Verdict::Close
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

    /// The connection has ended (hosts call this once): report everything not yet reported,
    /// and let observers give back what the connection held up.
    pub fn end(&mut self, m: &mut dyn MetricsSink) {
        self.state.end(m);
        self.flush(m);
        client_log::forget(self.state.id);
    }

    /// Report byte counts not yet reported.
    pub fn flush(&mut self, m: &mut dyn MetricsSink) {
        self.state.pipeline.flush(m);
        let suppressed = client_log::take_suppressed();
        if suppressed > 0 {
            m.add(
                MetricKey::LogLinesSuppressed,
                i64::try_from(suppressed).unwrap_or(i64::MAX),
            );
        }
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

    /// A stream that can no longer be framed. Under a rule (or while a connection may still
    /// turn out to be under one) it always closes: its bytes could otherwise reach the broker or
    /// the client unmapped. Elsewhere `on_frame_error` decides; a host read failure passes.
    fn on_frame_error(
        &mut self,
        dir: Direction,
        e: FrameError,
        m: &mut dyn MetricsSink,
    ) -> Verdict {
        match e {
            FrameError::Oversized { .. } => m.add(MetricKey::FramesOversized, 1),
            FrameError::NegativeSize(_) => m.add(MetricKey::FramesInvalidSize, 1),
            FrameError::HostRead => m.add(MetricKey::HostReadErrors, 1),
        }
        let guarded = self.state.pipeline.guarded();
        let (policy, why) = match e {
            _ if guarded => (FrameErrorPolicy::Close, "under a rule"),
            // Unreadable host buffers are our problem, not the client's: never close for them.
            FrameError::HostRead => (FrameErrorPolicy::PassThrough, "host read error"),
            _ if self.state.config.on_frame_error == FrameErrorPolicy::Close => {
                (FrameErrorPolicy::Close, "on_frame_error=close")
            }
            _ => (FrameErrorPolicy::PassThrough, "on_frame_error=pass_through"),
        };
        let id = self.state.id;
        let client = self.state.identity.client_id.as_deref().unwrap_or("-");
        match policy {
            FrameErrorPolicy::Close => {
                client_log::warn(
                    id,
                    format_args!(
                        "connection {id} (client_id {client}): {} stream: {e}; closing the connection ({why})",
                        dir.as_str()
                    ),
                );
                m.add(MetricKey::ConnectionsClosedByPolicy, 1);
                self.mode = Mode::Closed;
                self.state.release_held();
                Verdict::Close
            }
            FrameErrorPolicy::PassThrough => {
                client_log::warn(
                    id,
                    format_args!(
                        "connection {id} (client_id {client}): {} stream: {e}; forwarding the rest of the connection untouched ({why})",
                        dir.as_str()
                    ),
                );
                m.add(MetricKey::ConnectionsBypassed, 1);
                self.mode = Mode::Bypassed;
                Verdict::Continue
            }
        }
    }
}

impl Drop for KafkaConnection {
    fn drop(&mut self) {
        self.state.release_held();
        client_log::forget(self.state.id);
    }
}
