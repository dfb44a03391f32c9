//! The seam every per-request feature plugs into: a [`Stage`] looks at requests (and at the
//! responses it asked for) and returns a [`Decision`]; it never touches the stream itself.

use bytes::Bytes;

use super::identity::Identity;
use super::plan::Plan;
use crate::codec::inflight::Inflight;
use crate::codec::walk::Walked;
use crate::codec::RequestHead;
use crate::metrics::MetricsSink;

/// What a stage wants done with the frame it was shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: the next stage decides (the frame passes if none objects).
    Pass,
    /// Show the frame again with its first `n` bytes (bounded: past the bound the stage is
    /// shown what there is and must decide, or asks for the whole frame).
    NeedHead(usize),
    /// Show the frame again once whole (held in the filter, within the held-bytes limits).
    NeedFrame,
    /// Requests: never forward it; the client gets this Kafka error code instead. Responses:
    /// replace it by an error response with this code.
    Refuse(i16),
    /// Forward these bytes (whole frames, size fields included) instead of the whole frame, which
    /// must have been shown whole.
    Replace(Vec<u8>),
    /// Forward these bytes instead of the frame's size field and the bytes shown, then the rest
    /// of the frame as it is (for a frame not shown whole).
    ReplaceHead(Vec<u8>),
    /// Forward the request, then read nothing more from the client for this many milliseconds.
    Delay(u32),
    /// Close the connection.
    Close,
}

/// A frame as a stage is shown it: its first bytes (after the size field), or all of it.
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    pub bytes: &'a [u8],
    /// The frame's size field.
    pub frame_len: usize,
    /// The frame was held whole after [`Decision::NeedFrame`].
    pub collected: bool,
    /// No more of the frame can be shown without holding it whole.
    pub last_look: bool,
    /// The collected frame as shared bytes: decode from slices of it, not from a copy.
    pub shared: Option<&'a Bytes>,
}

impl FrameView<'_> {
    /// `bytes` is the whole frame.
    pub fn whole(&self) -> bool {
        self.bytes.len() >= self.frame_len
    }

    /// A whole response frame cut after its header: the header's bytes, and the body (decoded
    /// as the header version of `api_key` at `version` says). `None`: the API is not known
    /// (`Err(())` inside: the header does not decode).
    pub fn response_parts(&self, api_key: i16, version: i16) -> Option<Result<(&[u8], Bytes), ()>> {
        use kafka_protocol::messages::{ApiKey, ResponseHeader};
        use kafka_protocol::protocol::Decodable;
        let api = ApiKey::try_from(api_key).ok()?;
        let mut body = self.slice_from(0)?;
        if ResponseHeader::decode(&mut body, api.response_header_version(version)).is_err() {
            return Some(Err(()));
        }
        let header = self
            .bytes
            .get(..self.bytes.len().saturating_sub(body.len()))
            .unwrap_or_default();
        Some(Ok((header, body)))
    }

    /// Bytes `from..` of the frame as `Bytes`: shared with the collected frame, or copied.
    pub fn slice_from(&self, from: usize) -> Option<Bytes> {
        let rest = self.bytes.get(from..)?;
        Some(match self.shared {
            Some(b) if b.len() == self.bytes.len() => b.slice(from..),
            _ => Bytes::copy_from_slice(rest),
        })
    }
}

/// A request as a stage sees it.
pub struct RequestCx<'a> {
    pub head: &'a RequestHead,
    pub identity: &'a Identity,
    /// The host's clock when the request was read, in nanoseconds.
    pub now_ns: u64,
    pub(super) plan: &'a mut Plan,
    pub(super) stage: usize,
    pub(super) held_first: bool,
}

impl RequestCx<'_> {
    /// Show this stage the response, with `note` (the stage's own memory of the request).
    pub fn watch_response(&mut self, note: u32) {
        self.plan.watch(self.stage, note);
    }

    /// The hold a [`Decision::Delay`] asks for starts before this request: it waits in the
    /// host's buffer with whatever the client sends after it (a client whose key is already in
    /// debt gets nothing through until it is paid).
    pub fn hold_first(&mut self) {
        self.held_first = true;
    }
}

/// A response to a request whose plan lists the stage.
pub struct ResponseCx<'a> {
    pub request: &'a Inflight,
    pub identity: &'a Identity,
    /// What the stage noted when it watched the request.
    pub note: u32,
    /// The host's clock when the response was read, in nanoseconds.
    pub now_ns: u64,
    pub(super) hold_ms: std::cell::Cell<u32>,
}

impl ResponseCx<'_> {
    /// Read nothing more from the client for `ms` milliseconds once this response is on its
    /// way (a broker's mute after a throttled response, KIP-219). The longest asked for wins.
    pub fn hold_client(&self, ms: u32) {
        self.hold_ms.set(self.hold_ms.get().max(ms));
    }
}

/// A frame whose topics were counted as it passed (see [`Stage::wants_topics`]).
#[derive(Debug, Clone, Copy)]
pub struct TopicsCx {
    pub correlation_id: i32,
    pub api_key: i16,
    /// A Fetch response (otherwise a Produce request).
    pub response: bool,
    /// The frame's size, size field included: what the topics' record sets do not account for
    /// (their framing, and any part of a walk that stopped early) is the rest of it.
    pub frame_bytes: u64,
    /// The host's clock when the frame was read, in nanoseconds.
    pub now_ns: u64,
}

pub trait Stage {
    fn name(&self) -> &'static str;

    /// Whether the connection is under this stage's rules (or may be, while its identity is not
    /// known yet): the connection then fails closed instead of forwarding bytes it cannot frame.
    fn guards(&self) -> bool;

    /// Whether some connection could be under this stage's rules (a request not read yet
    /// may be, whatever [`Self::guards`] says of the requests read so far).
    fn may_guard(&self) -> bool {
        self.guards()
    }

    /// Whether the stage matches on the peer's mTLS identity or address.
    fn needs_peer(&self) -> bool {
        false
    }

    /// The connection's identity changed (the peer became known).
    fn on_identity(&mut self, _identity: &Identity) {}

    /// The VM's buffer of lines for the request log's HTTP collector (see
    /// `observers::log_sink`), for a stage that writes lines.
    fn set_collector(&mut self, _lines: &crate::observers::log_sink::SharedLines) {}

    /// A request whose header has been read. Called again for the same frame after
    /// [`Decision::NeedHead`] or [`Decision::NeedFrame`].
    fn on_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision;

    /// Report what the stage keeps counted between requests (the host calls this from time to
    /// time and when the connection ends).
    fn flush(&mut self, _m: &mut dyn MetricsSink) {}

    /// The response to a request that was refused (the broker answered a stand-in): the stage
    /// that refused it and watched it may give the whole response frame the client gets
    /// (size field included); `None` leaves the generic error response.
    fn answer_refused(&mut self, _cx: &ResponseCx<'_>) -> Option<Vec<u8>> {
        None
    }

    /// Whether the stage wants the topics of this connection's Produce requests and Fetch
    /// responses counted as they pass (see `codec::walk`), for [`Self::on_topics`].
    fn wants_topics(&self) -> bool {
        false
    }

    /// What a frame passed with, per topic, once counted (after its head was decided: the
    /// records are never held for it). Returns how long to read nothing more from the client.
    fn on_topics(&mut self, _cx: &TopicsCx, _walked: &Walked, _m: &mut dyn MetricsSink) -> u32 {
        0
    }

    /// A response the stage asked to see; like [`Self::on_request`].
    fn on_response(
        &mut self,
        _cx: &ResponseCx<'_>,
        _frame: &FrameView<'_>,
        _m: &mut dyn MetricsSink,
    ) -> Decision {
        Decision::Pass
    }
}
