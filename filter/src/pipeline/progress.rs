//! Where a request and a response stand on their way through the stages, and what the
//! stages' decisions come to for the frame.

use super::facts::Facts;
use super::plan::{Plan, MAX_STAGES};
use crate::codec::inflight::Inflight;
use crate::codec::RequestHead;

/// A request on its way through the stages.
#[derive(Debug)]
pub struct RequestProgress {
    pub head: RequestHead,
    pub plan: Plan,
    /// The stage to ask next (the one that asked for more bytes, when resumed).
    pub(super) next: usize,
    /// The longest hold any stage asked for.
    pub delay_ms: u32,
    /// A stage asked for the hold to start before this request (`RequestCx::hold_first`).
    pub hold_first: bool,
    /// The client software has been looked for (ApiVersions v3+).
    pub software_read: bool,
    /// What was read of the request for observers (an OffsetCommit's offsets).
    pub facts: Option<Box<Facts>>,
    /// The request has been read for observers, where they want it.
    pub facts_read: bool,
}

impl RequestProgress {
    pub fn new(head: RequestHead) -> Self {
        Self {
            head,
            plan: Plan::default(),
            next: 0,
            delay_ms: 0,
            hold_first: false,
            software_read: false,
            facts: None,
            facts_read: false,
        }
    }
}

/// A response on its way back through the stages that watch it.
#[derive(Debug)]
pub struct ResponseProgress {
    pub request: Inflight,
    /// Stages `0..upper` are still to be asked, from the top.
    pub(super) upper: usize,
    /// How long the client is to be held once the response is on its way.
    pub delay_ms: u32,
    /// The host's clock when the response was matched to its request.
    pub now_ns: u64,
}

/// Where a frame stands after the stages looked at it.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Show the frame again with its first `n` bytes.
    Head(usize),
    /// Show the frame again whole (if it may be held).
    Frame,
    Done(Action),
}

/// What becomes of a decided frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// Instead of the whole frame (shown whole).
    Replace(Vec<u8>),
    /// Instead of the frame's size field and the bytes shown; the rest passes.
    ReplaceHead(Vec<u8>),
    /// Instead of the frame, whose bytes are dropped as they stream through (never held).
    Discard(Vec<u8>),
    Close,
}

impl ResponseProgress {
    pub fn new(request: Inflight, now_ns: u64) -> Self {
        Self {
            request,
            upper: MAX_STAGES,
            delay_ms: 0,
            now_ns,
        }
    }
}
