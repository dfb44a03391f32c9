//! The name-conversion side of one connection: which rule applies to each request, what to do
//! with it and with its response, and the rewritten frames.
//!
//! A frame to rewrite is held whole (the frame reader collects it), decoded with
//! `kafka-protocol`, rewritten and re-encoded. A request the rule refuses cannot be answered
//! by the filter directly (a wasm network filter cannot inject bytes): it is replaced by an
//! ApiVersions request with the same correlation id, whose response is then replaced by an
//! error response for the original request.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::rewrite::{self, Coverage};
use super::rules::{Peer, Rule, UnsupportedPolicy};
use super::versions;
use super::{produce_head, response_head};
use crate::codec::inflight::{Inflight, Reply};
use crate::codec::{RequestHead, Step};
use crate::config::Config;
use crate::metrics::{len_i64, MetricKey, MetricsSink};

/// Kafka error codes the filter answers with.
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const INVALID_REQUEST: i16 = 42;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;

const API_VERSIONS: i16 = 18;
const PRODUCE: i16 = 0;

#[derive(Debug)]
struct PendingRequest {
    rule: u16,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    header_len: usize,
    expects_response: bool,
    /// Refuse it with this error code instead of rewriting it.
    refuse: Option<i16>,
    /// A Produce request whose names may be rewritten from its first bytes
    /// ([`produce_head`]); cleared when it must be held whole after all.
    head_only: bool,
}

#[derive(Debug)]
enum PendingResponse {
    Reply(Inflight),
    /// A Fetch or Produce response whose topic name may be mapped from its first bytes
    /// ([`response_head`]).
    Head(Inflight),
    /// Answers no request the filter knows of: under a rule it cannot be mapped, so it is dropped.
    Unmatched,
}

pub struct RewriteSession {
    id: u32,
    config: Rc<Config>,
    peer: Peer,
    /// The rule for the last client id seen: clients keep one id per connection.
    cached: Option<(Option<StrBytes>, Option<u16>)>,
    pending_request: Option<PendingRequest>,
    pending_response: Option<PendingResponse>,
    /// Replies changed after the request was decided (it could not be rewritten after all).
    pub reply_updates: Vec<(i32, Reply)>,
    /// A request could neither be rewritten nor refused: the connection must close.
    pub must_close: bool,
    refusal_logged: bool,
}

impl RewriteSession {
    pub fn new(id: u32, config: Rc<Config>) -> Self {
        Self {
            id,
            config,
            peer: Peer::default(),
            cached: None,
            pending_request: None,
            pending_response: None,
            reply_updates: Vec::new(),
            must_close: false,
            refusal_logged: false,
        }
    }

    pub fn set_peer(&mut self, peer: Peer) {
        self.peer = peer;
        self.cached = None;
    }

    fn rule(&self, index: u16) -> Option<&Rule> {
        self.config.rules.get(usize::from(index))
    }

    fn policy(&self, index: u16) -> UnsupportedPolicy {
        self.rule(index)
            .map_or(UnsupportedPolicy::Reject, |r| r.unsupported_apis)
    }

    fn select(&mut self, client_id: Option<&StrBytes>) -> Option<u16> {
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
            .position(|r| r.matcher.matches(client, &self.peer))
            .and_then(|i| u16::try_from(i).ok());
        if let Some(r) = rule.and_then(|i| self.rule(i)) {
            log::debug!(
                "connection {}: client_id {} under rule `{}`",
                self.id,
                client.unwrap_or("-"),
                r.name
            );
        }
        self.cached = Some((client_id.cloned(), rule));
        rule
    }

    /// A request's header has been read (`prefix`: the frame's first bytes, of `frame_len`):
    /// what to do with the frame, and with its response.
    pub fn decide_request(
        &mut self,
        head: &RequestHead,
        prefix: &[u8],
        frame_len: usize,
        last_look: bool,
        m: &mut dyn MetricsSink,
    ) -> (Step, Reply) {
        // A header that did not decode has no client id: it is under the rule of the
        // connection's earlier requests (clients keep one id per connection).
        let rule = match (&head.client_id, &self.cached) {
            (None, Some((_, cached))) if !head.header_decoded => *cached,
            _ => self.select(head.client_id.as_ref()),
        };
        let Some(rule_index) = rule else {
            return (Step::Done, Reply::Forward);
        };
        let policy = self.policy(rule_index);
        if head.api_key == API_VERSIONS && head.header_decoded {
            return (Step::Done, Reply::LimitVersions { rule: rule_index });
        }
        let refuse = match rewrite::coverage(head.api_key, head.api_version) {
            Coverage::NameFree => return (Step::Done, Reply::Forward),
            Coverage::Unsupported if policy == UnsupportedPolicy::PassThrough => {
                return (Step::Done, Reply::Forward)
            }
            Coverage::Rewritten if head.header_decoded => None,
            Coverage::Rewritten => Some(INVALID_REQUEST),
            Coverage::Unsupported => Some(CLUSTER_AUTHORIZATION_FAILED),
        };
        self.pending_request = Some(PendingRequest {
            rule: rule_index,
            api_key: head.api_key,
            api_version: head.api_version,
            correlation_id: head.correlation_id,
            header_len: head.header_len,
            expects_response: head.expects_response,
            refuse,
            head_only: refuse.is_none()
                && head.api_key == PRODUCE
                && produce_head::VERSIONS.contains(&head.api_version),
        });
        let reply = match refuse {
            Some(error_code) => Reply::Refuse { error_code },
            None => Reply::MapNames { rule: rule_index },
        };
        let step = self
            .continue_request(prefix, frame_len, last_look, m)
            .unwrap_or(Step::Collect);
        (step, reply)
    }

    /// For a request being read head-first (a Produce request), the next step with more of its
    /// first bytes; `None` when no request is being read that way.
    pub fn continue_request(
        &mut self,
        prefix: &[u8],
        frame_len: usize,
        last_look: bool,
        m: &mut dyn MetricsSink,
    ) -> Option<Step> {
        let p = self.pending_request.as_mut().filter(|p| p.head_only)?;
        let (header, body) = (prefix.get(..p.header_len)?, prefix.get(p.header_len..)?);
        let scan = produce_head::scan(body, p.api_version);
        let whole = |p: &mut PendingRequest| {
            // Several topics (names between records), or not what it should be: the full
            // rewriter decides, on the whole frame.
            p.head_only = false;
            Some(Step::Collect)
        };
        match &scan {
            produce_head::Scan::Need(n) if !last_look => return Some(Step::Need(p.header_len + n)),
            produce_head::Scan::Names { topic_count, .. } if *topic_count <= 1 => {}
            _ => return whole(p),
        }
        let rule = self.config.rules.get(usize::from(p.rule))?;
        match produce_head::rewrite(body, p.api_version, &scan, rule) {
            Ok(None) => {
                self.pending_request = None;
                Some(Step::Done)
            }
            Ok(Some((upto, new_head))) => {
                let rest = body.get(upto..).unwrap_or_default();
                let new_len = frame_len + new_head.len() - upto;
                let mut out = Vec::with_capacity(4 + prefix.len() + new_head.len());
                out.extend_from_slice(&i32::try_from(new_len).unwrap_or(i32::MAX).to_be_bytes());
                out.extend_from_slice(header);
                out.extend_from_slice(&new_head);
                out.extend_from_slice(rest);
                m.add(MetricKey::RewriteRequests, 1);
                m.add(MetricKey::RewriteBytesHeld, len_i64(prefix.len() + 4));
                self.pending_request = None;
                Some(Step::ReplaceHead(out))
            }
            Err(_) => whole(p),
        }
    }

    /// The whole request frame (after its size field) that [`Self::decide_request`] asked for.
    pub fn finish_request(&mut self, frame: &[u8], m: &mut dyn MetricsSink) -> Step {
        let Some(p) = self.pending_request.take() else {
            return Step::Done;
        };
        m.add(MetricKey::RewriteBytesHeld, len_i64(frame.len() + 4));
        let error_code = match p.refuse {
            Some(code) => code,
            None => {
                let (Some(header), Some(body)) =
                    (frame.get(..p.header_len), frame.get(p.header_len..))
                else {
                    return self.refuse(&p, INVALID_REQUEST, m);
                };
                let Some(rule) = self.rule(p.rule) else {
                    return Step::Done;
                };
                match rewrite::rewrite_request(
                    p.api_key,
                    p.api_version,
                    Bytes::copy_from_slice(body),
                    rule,
                ) {
                    Ok(None) => return Step::Done,
                    Ok(Some(new_body)) => {
                        m.add(MetricKey::RewriteRequests, 1);
                        return Step::Replace(framed(&[header, &new_body]));
                    }
                    Err(e) => {
                        m.add(MetricKey::RewriteErrors, 1);
                        log::warn!(
                            "connection {}: {} v{} request (correlation id {}) could not be rewritten under rule `{}`: {e}; refused",
                            self.id,
                            api_name(p.api_key),
                            p.api_version,
                            p.correlation_id,
                            rule.name
                        );
                        INVALID_REQUEST
                    }
                }
            }
        };
        self.refuse(&p, error_code, m)
    }

    /// Keep the request from the broker; its client gets `error_code` instead.
    fn refuse(&mut self, p: &PendingRequest, error_code: i16, m: &mut dyn MetricsSink) -> Step {
        m.add(MetricKey::RewriteRefused, 1);
        let rule = self
            .rule(p.rule)
            .map_or("?", |r| r.name.as_str())
            .to_string();
        let what = format!(
            "connection {}: {} v{} request (correlation id {}) refused under rule `{rule}` with error {error_code}",
            self.id,
            api_name(p.api_key),
            p.api_version,
            p.correlation_id
        );
        if self.refusal_logged {
            log::debug!("{what}");
        } else {
            self.refusal_logged = true;
            log::info!("{what} (further refusals on this connection logged at debug)");
        }
        if !p.expects_response {
            // Nothing will be waited for: leave it out.
            return Step::Replace(Vec::new());
        }
        if rewrite::error_response_body(p.api_key, p.api_version, error_code).is_none() {
            // No schema to answer with: the only safe answer is to end the connection.
            log::warn!(
                "connection {}: cannot build a {} v{} error response; closing the connection",
                self.id,
                api_name(p.api_key),
                p.api_version
            );
            self.must_close = true;
            return Step::Replace(Vec::new());
        }
        self.reply_updates
            .push((p.correlation_id, Reply::Refuse { error_code }));
        Step::Replace(api_versions_v0_request(p.correlation_id))
    }

    /// A response's correlation id has been read and matched (or not). `prefix`: the frame's
    /// first bytes (after its size field), of `frame_len`.
    pub fn decide_response(
        &mut self,
        matched: Option<&Inflight>,
        prefix: &[u8],
        frame_len: usize,
        last_look: bool,
        m: &mut dyn MetricsSink,
    ) -> Step {
        match matched {
            Some(req) if req.reply == Reply::Forward => Step::Done,
            Some(req)
                if matches!(req.reply, Reply::MapNames { .. })
                    && response_head::layout(req.api_key, req.api_version).is_some() =>
            {
                self.pending_response = Some(PendingResponse::Head(*req));
                self.continue_response(prefix, frame_len, last_look, m)
                    .unwrap_or(Step::Collect)
            }
            Some(req) => {
                self.pending_response = Some(PendingResponse::Reply(*req));
                Step::Collect
            }
            None => {
                self.pending_response = Some(PendingResponse::Unmatched);
                Step::Collect
            }
        }
    }

    /// For a response being read head-first (Fetch, Produce), the next step with more of its
    /// first bytes; `None` when no response is being read that way.
    pub fn continue_response(
        &mut self,
        prefix: &[u8],
        frame_len: usize,
        last_look: bool,
        m: &mut dyn MetricsSink,
    ) -> Option<Step> {
        let Some(PendingResponse::Head(req)) = self.pending_response else {
            return None;
        };
        let Reply::MapNames { rule } = req.reply else {
            return None;
        };
        let layout = response_head::layout(req.api_key, req.api_version)?;
        let scan = response_head::scan(prefix, layout);
        if let response_head::Scan::Need(n) = scan {
            if !last_look {
                return Some(Step::Need(n));
            }
        }
        let rule = self.config.rules.get(usize::from(rule))?;
        match response_head::map(prefix, frame_len, layout, &scan, rule) {
            response_head::Mapped::Unchanged => {
                self.pending_response = None;
                Some(Step::Done)
            }
            response_head::Mapped::Head { upto, bytes } => {
                m.add(MetricKey::RewriteResponses, 1);
                m.add(MetricKey::RewriteBytesHeld, len_i64(upto + 4));
                let mut out = bytes;
                out.extend_from_slice(prefix.get(upto..).unwrap_or_default());
                self.pending_response = None;
                Some(Step::ReplaceHead(out))
            }
            response_head::Mapped::Whole => {
                // Several topics, or one to hide: the full rewriter decides on the whole frame.
                self.pending_response = Some(PendingResponse::Reply(req));
                Some(Step::Collect)
            }
        }
    }

    /// The whole response frame (after its size field) that [`Self::decide_response`] asked for.
    pub fn finish_response(&mut self, frame: &[u8], m: &mut dyn MetricsSink) -> Step {
        let req = match self.pending_response.take() {
            None => return Step::Done,
            Some(PendingResponse::Unmatched) => {
                log::debug!(
                    "connection {}: dropped a response that answers no request",
                    self.id
                );
                return Step::Replace(Vec::new());
            }
            Some(PendingResponse::Reply(req) | PendingResponse::Head(req)) => req,
        };
        m.add(MetricKey::RewriteBytesHeld, len_i64(frame.len() + 4));
        let Some(api) = ApiKey::try_from(req.api_key).ok() else {
            return Step::Done;
        };
        let header_version = api.response_header_version(req.api_version);
        if let Reply::Refuse { error_code } = req.reply {
            return match error_response(&req, header_version, error_code) {
                Some(frame) => Step::Replace(frame),
                None => Step::Done,
            };
        }
        let mut bytes = Bytes::copy_from_slice(frame);
        if ResponseHeader::decode(&mut bytes, header_version).is_err() {
            return self.response_failed(&req, header_version, "header does not decode", m);
        }
        let header_len = frame.len() - bytes.len();
        let header = frame.get(..header_len).unwrap_or_default();
        let result = match req.reply {
            Reply::LimitVersions { rule } => {
                match versions::limit(req.api_version, bytes, self.policy(rule)) {
                    Ok(r) => r,
                    // Versions carry no names: forwarding an unexpected one leaks nothing.
                    Err(_) => return Step::Done,
                }
            }
            Reply::MapNames { rule } => {
                let Some(rule) = self.rule(rule) else {
                    return Step::Done;
                };
                match rewrite::rewrite_response(req.api_key, req.api_version, bytes, rule) {
                    Ok(r) => {
                        if r.is_some() {
                            m.add(MetricKey::RewriteResponses, 1);
                        }
                        r
                    }
                    Err(e) => return self.response_failed(&req, header_version, &e.to_string(), m),
                }
            }
            Reply::Forward | Reply::Refuse { .. } => None,
        };
        match result {
            None => Step::Done,
            Some(body) => Step::Replace(framed(&[header, &body])),
        }
    }

    /// A response under a rule that cannot be mapped must not reach the client as it is (it may
    /// carry physical names): it becomes an error response, or the connection closes.
    fn response_failed(
        &mut self,
        req: &Inflight,
        header_version: i16,
        why: &str,
        m: &mut dyn MetricsSink,
    ) -> Step {
        m.add(MetricKey::RewriteErrors, 1);
        log::warn!(
            "connection {}: {} v{} response (correlation id {}) could not be mapped back: {why}; answered with an error instead",
            self.id,
            api_name(req.api_key),
            req.api_version,
            req.correlation_id
        );
        match error_response(req, header_version, UNKNOWN_SERVER_ERROR) {
            Some(frame) => Step::Replace(frame),
            None => {
                self.must_close = true;
                Step::Replace(Vec::new())
            }
        }
    }
}

fn error_response(req: &Inflight, header_version: i16, error_code: i16) -> Option<Vec<u8>> {
    let body = rewrite::error_response_body(req.api_key, req.api_version, error_code)?;
    let corr = req.correlation_id.to_be_bytes();
    // Response header v1 adds an empty tagged-field section.
    let header: &[u8] = if header_version >= 1 { &[0] } else { &[] };
    Some(framed(&[&corr, header, &body]))
}

/// ApiVersions v0 (request header v1, null client id): every broker answers it, and its answer
/// carries no names.
fn api_versions_v0_request(correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(10);
    body.extend_from_slice(&API_VERSIONS.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    framed(&[&body])
}

/// A frame: the size field, then the parts.
fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

fn api_name(api_key: i16) -> String {
    crate::api::label_name(crate::api::classify(api_key))
}
