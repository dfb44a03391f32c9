//! Name conversion as a pipeline stage: which rule applies to each request, what to do with it
//! and with its response, and the rewritten frames.
//!
//! A frame to rewrite is held whole, decoded with `kafka-protocol`, rewritten and re-encoded; a
//! single-topic Produce request and Produce or Fetch response is rewritten from its first bytes
//! ([`produce_head`], [`response_head`]), so its records are never held. What a rule cannot
//! rewrite is refused (the pipeline answers it with a Kafka error), never forwarded unmapped.

use std::rc::Rc;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use crate::codec::inflight::Inflight;
use crate::config::Config;
use crate::metrics::{len_i64, MetricKey, MetricsSink};
use crate::pipeline::refusal::framed;
use crate::pipeline::{Decision, FrameView, Identity, RequestCx, ResponseCx, Stage};
use crate::topics::mapping::NameKind;
use crate::topics::rewrite::{self, Coverage};
use crate::topics::rules::{Rule, UnsupportedPolicy};
use crate::topics::{produce_head, response_head, versions};

/// Kafka error codes the stage answers with.
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const INVALID_REQUEST: i16 = 42;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;

const API_VERSIONS: i16 = ApiKey::ApiVersions as i16;
const PRODUCE: i16 = ApiKey::Produce as i16;
const FIND_COORDINATOR: i16 = ApiKey::FindCoordinator as i16;

/// What the stage notes for a response it watches: the kind in the high half, the rule below.
const NOTE_MAP_NAMES: u32 = 1 << 16;
const NOTE_LIMIT_VERSIONS: u32 = 2 << 16;
/// With [`NOTE_MAP_NAMES`]: the FindCoordinator v4+ request asked for groups / transactional ids.
const NOTE_GROUP_KEYS: u32 = 4 << 16;
const NOTE_TXN_KEYS: u32 = 8 << 16;

fn note_hints(note: u32) -> rewrite::Hints {
    let coordinator_keys = if note & NOTE_GROUP_KEYS != 0 {
        Some(NameKind::Group)
    } else if note & NOTE_TXN_KEYS != 0 {
        Some(NameKind::TransactionalId)
    } else {
        None
    };
    rewrite::Hints { coordinator_keys }
}

fn note(kind: u32, rule: u16) -> u32 {
    kind | u32::from(rule)
}

fn note_rule(note: u32) -> u16 {
    (note & 0xffff) as u16
}

/// A request under a rule, between its first look and its decision.
#[derive(Debug)]
struct PendingRequest {
    rule: u16,
    /// A Produce request whose names may be rewritten from its first bytes; cleared when it
    /// must be held whole after all.
    head_only: bool,
}

pub struct RewriteStage {
    id: u32,
    config: Rc<Config>,
    /// The rule for the last client id seen: clients keep one id per connection.
    cached: Option<(Option<StrBytes>, Option<u16>)>,
    /// A request of this connection has been under a rule.
    under_rule: bool,
    pending: Option<PendingRequest>,
    refusal_logged: bool,
}

impl Stage for RewriteStage {
    fn name(&self) -> &'static str {
        "rewrite"
    }

    /// Until a request has been matched against the rules, the connection may be under one.
    fn guards(&self) -> bool {
        self.under_rule || self.cached.is_none()
    }

    fn may_guard(&self) -> bool {
        !self.config.rules.is_empty()
    }

    fn needs_peer(&self) -> bool {
        self.config.rules.iter().any(|r| r.matcher.needs_peer())
    }

    fn on_identity(&mut self, _identity: &Identity) {
        self.cached = None;
    }

    fn on_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        if self.pending.is_none() {
            return self.decide_request(cx, frame, m);
        }
        if frame.collected {
            return self.finish_request(cx, frame, m);
        }
        self.continue_request(cx, frame, m)
    }

    fn on_response(
        &mut self,
        cx: &ResponseCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let req = cx.request;
        let rule = note_rule(cx.note);
        let head_layout = response_head::layout(req.api_key, req.api_version);
        if cx.note & NOTE_MAP_NAMES != 0 && !frame.collected {
            if let Some(layout) = head_layout {
                return self.map_response_head(frame, layout, rule, m);
            }
        }
        if !frame.collected && !frame.whole() {
            return Decision::NeedFrame;
        }
        self.finish_response(req, cx.note, frame, m)
    }
}

impl RewriteStage {
    pub fn new(id: u32, config: Rc<Config>) -> Self {
        Self {
            id,
            config,
            cached: None,
            under_rule: false,
            pending: None,
            refusal_logged: false,
        }
    }

    fn rule(&self, index: u16) -> Option<&Rule> {
        self.config.rules.get(usize::from(index))
    }

    fn policy(&self, index: u16) -> UnsupportedPolicy {
        self.rule(index)
            .map_or(UnsupportedPolicy::Reject, |r| r.unsupported_apis)
    }

    fn select(&mut self, client_id: Option<&StrBytes>, identity: &Identity) -> Option<u16> {
        if let Some((cached_id, rule)) = &self.cached {
            if cached_id.as_ref() == client_id {
                return *rule;
            }
        }
        let client = client_id.map(|c| c.as_str());
        let rule = self
            .config
            .rules
            .iter()
            .position(|r| r.matcher.matches(client, &identity.peer))
            .and_then(|i| u16::try_from(i).ok());
        if let Some(r) = rule.and_then(|i| self.rule(i)) {
            log::debug!(
                "connection {}: client_id {} under rule `{}`",
                self.id,
                client.unwrap_or("-"),
                r.name
            );
        }
        self.under_rule |= rule.is_some();
        self.cached = Some((client_id.cloned(), rule));
        rule
    }

    /// A request's header has been read: what to do with the frame, and with its response.
    fn decide_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let head = cx.head;
        // A request of a known API whose header did not decode has no client id to match rules
        // on: it may belong to a rule (a client can change its id at any request), and a broker
        // would close the connection for it anyway. Fail closed. (Found by fuzzing.)
        if head.api.is_some() && !head.header_decoded && head.client_id.is_none() {
            crate::client_log::warn(
                self.id,
                format_args!(
                    "connection {}: a {} v{} request header does not decode under rules; closing the connection",
                    self.id,
                    api_name(head.api_key),
                    head.api_version
                ),
            );
            return Decision::Close;
        }
        let rule = self.select(head.client_id.as_ref(), cx.identity);
        let Some(rule_index) = rule else {
            return Decision::Pass;
        };
        let policy = self.policy(rule_index);
        if head.api_key == API_VERSIONS && head.header_decoded {
            cx.watch_response(note(NOTE_LIMIT_VERSIONS, rule_index));
            return Decision::Pass;
        }
        let refuse = match rewrite::coverage(head.api_key, head.api_version) {
            Coverage::NameFree => return Decision::Pass,
            Coverage::Unsupported if policy == UnsupportedPolicy::PassThrough => {
                return Decision::Pass
            }
            Coverage::Rewritten if head.header_decoded => None,
            Coverage::Rewritten => Some(INVALID_REQUEST),
            Coverage::Unsupported => Some(CLUSTER_AUTHORIZATION_FAILED),
        };
        if let Some(code) = refuse {
            return self.refuse(cx, rule_index, code, m);
        }
        cx.watch_response(note(NOTE_MAP_NAMES, rule_index));
        self.pending = Some(PendingRequest {
            rule: rule_index,
            head_only: head.api_key == PRODUCE
                && produce_head::VERSIONS.contains(&head.api_version),
        });
        if frame.collected {
            return self.finish_request(cx, frame, m);
        }
        self.continue_request(cx, frame, m)
    }

    /// A request being read head-first (a Produce request) with more of its first bytes, or one
    /// that needs its whole frame.
    fn continue_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let Some(p) = self.pending.as_mut() else {
            return Decision::Pass;
        };
        if !p.head_only {
            return Decision::NeedFrame;
        }
        let header_len = cx.head.header_len;
        let (Some(header), Some(body)) =
            (frame.bytes.get(..header_len), frame.bytes.get(header_len..))
        else {
            return Decision::NeedHead(header_len.saturating_add(1));
        };
        let version = cx.head.api_version;
        let scan = produce_head::scan(body, version);
        match &scan {
            produce_head::Scan::Need(n) if !frame.last_look => {
                return Decision::NeedHead(head_ask(header_len.saturating_add(*n), frame))
            }
            produce_head::Scan::Names { topic_count, .. } if *topic_count <= 1 => {}
            // Several topics (names between records), or not what it should be: the full
            // rewriter decides, on the whole frame.
            _ => {
                p.head_only = false;
                return Decision::NeedFrame;
            }
        }
        let rule_index = p.rule;
        let Some(rule) = self.config.rules.get(usize::from(rule_index)) else {
            return Decision::Close;
        };
        match produce_head::rewrite(body, version, &scan, rule) {
            Ok(None) => {
                self.pending = None;
                Decision::Pass
            }
            Ok(Some((upto, new_head))) => {
                let rest = body.get(upto..).unwrap_or_default();
                let new_len = (frame.frame_len + new_head.len()).saturating_sub(upto);
                let mut out = Vec::with_capacity(4 + frame.bytes.len() + new_head.len());
                out.extend_from_slice(&i32::try_from(new_len).unwrap_or(i32::MAX).to_be_bytes());
                out.extend_from_slice(header);
                out.extend_from_slice(&new_head);
                out.extend_from_slice(rest);
                m.add(MetricKey::RewriteRequests, 1);
                m.add(MetricKey::RewriteBytesHeld, len_i64(frame.bytes.len() + 4));
                self.pending = None;
                Decision::ReplaceHead(out)
            }
            Err(_) => {
                if let Some(p) = self.pending.as_mut() {
                    p.head_only = false;
                }
                Decision::NeedFrame
            }
        }
    }

    /// The whole request frame (after its size field).
    fn finish_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let Some(p) = self.pending.take() else {
            return Decision::Pass;
        };
        m.add(MetricKey::RewriteBytesHeld, len_i64(frame.bytes.len() + 4));
        let head = cx.head;
        let (Some(header), Some(body)) = (
            frame.bytes.get(..head.header_len),
            frame.slice_from(head.header_len),
        ) else {
            return self.refuse(cx, p.rule, INVALID_REQUEST, m);
        };
        let Some(rule) = self.rule(p.rule) else {
            return Decision::Close;
        };
        if head.api_key == FIND_COORDINATOR {
            match rewrite::coordinator_key_type(head.api_version, &body) {
                Some(NameKind::Group) => {
                    cx.watch_response(note(NOTE_MAP_NAMES | NOTE_GROUP_KEYS, p.rule))
                }
                Some(NameKind::TransactionalId) => {
                    cx.watch_response(note(NOTE_MAP_NAMES | NOTE_TXN_KEYS, p.rule))
                }
                _ => {}
            }
        }
        match rewrite::rewrite_request_after(
            head.api_key,
            head.api_version,
            body,
            rule,
            &frame_start(header),
        ) {
            Ok(None) => Decision::Pass,
            Ok(Some(new_frame)) => {
                m.add(MetricKey::RewriteRequests, 1);
                Decision::Replace(sized(new_frame))
            }
            Err(e) => {
                m.add(MetricKey::RewriteErrors, 1);
                crate::client_log::warn(
                    self.id,
                    format_args!(
                        "connection {}: {} v{} request (correlation id {}) could not be rewritten under rule `{}`: {e}; refused",
                        self.id,
                        api_name(head.api_key),
                        head.api_version,
                        head.correlation_id,
                        rule.name
                    ),
                );
                self.refuse(cx, p.rule, INVALID_REQUEST, m)
            }
        }
    }

    /// Keep the request from the broker; its client gets `error_code` instead.
    fn refuse(
        &mut self,
        cx: &RequestCx<'_>,
        rule: u16,
        error_code: i16,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        self.pending = None;
        m.add(MetricKey::RewriteRefused, 1);
        let rule = self.rule(rule).map_or("?", |r| r.name.as_str());
        let what = format!(
            "connection {}: {} v{} request (correlation id {}) refused under rule `{rule}` with error {error_code}",
            self.id,
            api_name(cx.head.api_key),
            cx.head.api_version,
            cx.head.correlation_id
        );
        if self.refusal_logged {
            log::debug!("{what}");
        } else {
            self.refusal_logged = true;
            crate::client_log::info(
                self.id,
                format_args!("{what} (further refusals on this connection logged at debug)"),
            );
        }
        Decision::Refuse(error_code)
    }

    /// A Fetch or Produce response whose topic name may be mapped from its first bytes.
    fn map_response_head(
        &mut self,
        frame: &FrameView<'_>,
        layout: response_head::Layout,
        rule: u16,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let prefix = frame.bytes;
        let scan = response_head::scan(prefix, layout);
        if let response_head::Scan::Need(n) = scan {
            if !frame.last_look {
                return Decision::NeedHead(head_ask(n, frame));
            }
        }
        let Some(rule) = self.rule(rule) else {
            return Decision::Close;
        };
        match response_head::map(prefix, frame.frame_len, layout, &scan, rule) {
            response_head::Mapped::Unchanged => Decision::Pass,
            response_head::Mapped::Head { upto, bytes } => {
                m.add(MetricKey::RewriteResponses, 1);
                m.add(MetricKey::RewriteBytesHeld, len_i64(upto + 4));
                let mut out = bytes;
                out.extend_from_slice(prefix.get(upto..).unwrap_or_default());
                Decision::ReplaceHead(out)
            }
            // Several topics, or one to hide: the full rewriter decides on the whole frame.
            response_head::Mapped::Whole => Decision::NeedFrame,
        }
    }

    /// The whole response frame (after its size field).
    fn finish_response(
        &mut self,
        req: &Inflight,
        note: u32,
        view: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let frame = view.bytes;
        m.add(MetricKey::RewriteBytesHeld, len_i64(frame.len() + 4));
        let (header, bytes) = match view.response_parts(req.api_key, req.api_version) {
            Some(Ok(parts)) => parts,
            Some(Err(())) => return self.response_failed(req, "header does not decode", m),
            None => return Decision::Pass,
        };
        let rule = note_rule(note);
        if note & NOTE_LIMIT_VERSIONS != 0 {
            return match versions::limit(req.api_version, &bytes, self.policy(rule)) {
                Some(body) => Decision::Replace(framed(&[header, &body])),
                None => Decision::Pass,
            };
        }
        let Some(rule) = self.rule(rule) else {
            return Decision::Close;
        };
        let result = {
            let before = frame_start(header);
            match rewrite::rewrite_response_after(
                req.api_key,
                req.api_version,
                bytes,
                rule,
                note_hints(note),
                &before,
            ) {
                Ok(r) => {
                    if r.is_some() {
                        m.add(MetricKey::RewriteResponses, 1);
                    }
                    r
                }
                Err(e) => return self.response_failed(req, &e.to_string(), m),
            }
        };
        match result {
            None => Decision::Pass,
            Some(new_frame) => Decision::Replace(sized(new_frame)),
        }
    }

    /// A response under a rule that cannot be mapped must not reach the client as it is (it may
    /// carry physical names): it becomes an error response, or the connection closes.
    fn response_failed(&mut self, req: &Inflight, why: &str, m: &mut dyn MetricsSink) -> Decision {
        m.add(MetricKey::RewriteErrors, 1);
        crate::client_log::warn(
            self.id,
            format_args!(
                "connection {}: {} v{} response (correlation id {}) could not be mapped back: {why}; answered with an error instead",
                self.id,
                api_name(req.api_key),
                req.api_version,
                req.correlation_id
            ),
        );
        Decision::Refuse(UNKNOWN_SERVER_ERROR)
    }
}

/// How much of a frame's head to ask for when `n` bytes are needed: at least
/// [`MIN_HEAD_ASK`] (within the frame), so that a head's fields are read in one or two looks,
/// not one look per field.
fn head_ask(n: usize, frame: &FrameView<'_>) -> usize {
    n.max(MIN_HEAD_ASK.min(frame.frame_len))
}

/// Enough for a request or response header, one topic name and the first partition's fields.
const MIN_HEAD_ASK: usize = 256;

/// A placeholder size field, then `header`: what a rewritten message is encoded after.
fn frame_start(header: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + header.len());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(header);
    v
}

/// The frame encoded after [`frame_start`], with its size field set.
fn sized(frame: BytesMut) -> Vec<u8> {
    let mut frame: Vec<u8> = frame.into();
    let len = i32::try_from(frame.len().saturating_sub(4)).unwrap_or(i32::MAX);
    if let Some(size) = frame.get_mut(..4) {
        size.copy_from_slice(&len.to_be_bytes());
    }
    frame
}

fn api_name(api_key: i16) -> String {
    crate::api::label_name(crate::api::classify(api_key))
}
