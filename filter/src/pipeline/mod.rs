//! The per-request decision pipeline: every request goes through an ordered list of
//! [`Stage`]s, each returning a [`Decision`]; a response goes back through the stages that asked
//! to see it (latest first); observers get a [`RequestRecord`] per finished request.
//!
//! The pipeline decides; the connection ([`crate::connection`]) frames the streams, keeps the
//! correlation table (one small [`Plan`] per request) and turns the outcome into edits of the
//! stream. A decision that changes the frame (refuse, replace, close) ends the frame's way
//! through the stages: later stages do not see it.

pub mod error_body;
pub mod facts;
pub mod held;
pub mod identity;
pub mod observer;
pub mod plan;
mod progress;
pub mod refusal;
pub mod stage;

use std::rc::Rc;

use crate::codec::inflight::Inflight;
use crate::config::Config;
use crate::limits::BucketStore;
use crate::metrics::MetricsSink;
use crate::observers::{ClientMetrics, ConsumerLag, RequestLog};
use crate::stages::advertise::AdvertiseStage;
use crate::stages::authorize::AuthorizeStage;
use crate::stages::ratelimit::RateLimitStage;
use crate::stages::rewrite::RewriteStage;

pub use identity::{ClientSoftware, Identity, Peer};
pub use observer::{ApiMetrics, Observer, RequestRecord};
pub use plan::{Outcome, Plan, MAX_STAGES};
pub use progress::{Action, Flow, RequestProgress, ResponseProgress};
pub use stage::{Decision, FrameView, RequestCx, ResponseCx, Stage, TopicsCx};

pub struct Pipeline {
    id: u32,
    stages: Vec<Box<dyn Stage>>,
    /// Observers besides [`ApiMetrics`], which every pipeline has.
    observers: Vec<Box<dyn Observer>>,
}

impl Pipeline {
    /// The stages and observers the configuration asks for.
    pub fn for_config(id: u32, config: &Rc<Config>, limits: Rc<dyn BucketStore>) -> Self {
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        // Authorization first: it decides on what the client asked for, and a denied request
        // costs the limits nothing.
        if let Some(policy) = &config.acls {
            let log = config.request_log.as_deref();
            stages.push(Box::new(AuthorizeStage::new(
                id,
                Rc::clone(policy),
                config.max_held_frame_bytes,
                log.is_none_or(|l| l.envoy_log),
                log.is_some_and(|l| l.http.is_some()),
            )));
        }
        // Limits account requests as the client named them, before any rewrite.
        if !config.limits.is_empty() {
            stages.push(Box::new(RateLimitStage::new(
                id,
                Rc::clone(config),
                Rc::clone(&limits),
            )));
        }
        if !config.rules.is_empty() {
            stages.push(Box::new(RewriteStage::new(id, Rc::clone(config))));
        }
        // Last: on responses (latest stage first) broker endpoints are rewritten before anything
        // else looks at them.
        if let Some(b) = &config.broker_addresses {
            stages.push(Box::new(AdvertiseStage::new(
                id,
                Rc::clone(b),
                config.max_held_frame_bytes,
            )));
        }
        let mut observers: Vec<Box<dyn Observer>> = Vec::new();
        if let Some(c) = config.client_metrics {
            observers.push(Box::new(ClientMetrics::new(c, Rc::clone(&limits))));
        }
        if let Some(c) = config.consumer_lag {
            observers.push(Box::new(ConsumerLag::new(c, limits)));
        }
        if let Some(c) = &config.request_log {
            observers.push(Box::new(RequestLog::new(Rc::clone(c), id)));
        }
        Self::new(id, stages, observers)
    }

    /// At most [`MAX_STAGES`] stages; more are left out (with an error log). `observers` come
    /// after [`ApiMetrics`].
    pub fn new(
        id: u32,
        mut stages: Vec<Box<dyn Stage>>,
        observers: Vec<Box<dyn Observer>>,
    ) -> Self {
        if stages.len() > MAX_STAGES {
            log::error!(
                "{} stages configured, at most {MAX_STAGES} are run",
                stages.len()
            );
            stages.truncate(MAX_STAGES);
        }
        Self {
            id,
            stages,
            observers,
        }
    }

    /// Whether an observer counts per topic (see [`Observer::wants_topics`]).
    pub fn wants_topics(&self) -> bool {
        self.observers.iter().any(|o| o.wants_topics())
            || self.stages.iter().any(|s| s.wants_topics())
    }

    /// A walked frame's topics, to the stages that want them; the longest hold they ask for.
    pub fn topics_counted(
        &mut self,
        cx: &TopicsCx,
        walked: &crate::codec::walk::Walked,
        m: &mut dyn MetricsSink,
    ) -> u32 {
        self.stages
            .iter_mut()
            .filter(|s| s.wants_topics())
            .map(|s| s.on_topics(cx, walked, m))
            .max()
            .unwrap_or(0)
    }

    /// Whether an observer wants what a response's first bytes say (see
    /// [`Observer::wants_response_heads`]).
    pub fn wants_response_heads(&self) -> bool {
        self.observers.iter().any(|o| o.wants_response_heads())
    }

    /// Give the observers that write lines the VM's buffer for the HTTP collector.
    pub fn set_collector(&mut self, lines: &crate::observers::log_sink::SharedLines) {
        for s in &mut self.stages {
            s.set_collector(lines);
        }
        for o in &mut self.observers {
            o.set_collector(lines);
        }
    }

    /// Whether an observer follows log ends (see [`Observer::wants_log_ends`]).
    pub fn wants_log_ends(&self) -> bool {
        self.observers.iter().any(|o| o.wants_log_ends())
    }

    /// Whether an observer follows fetch positions (see [`Observer::wants_fetch_positions`]).
    pub fn wants_fetch_positions(&self) -> bool {
        self.observers.iter().any(|o| o.wants_fetch_positions())
    }

    /// Whether an observer counts group members (see [`Observer::wants_groups`]).
    pub fn wants_groups(&self) -> bool {
        self.observers.iter().any(|o| o.wants_groups())
    }

    /// Whether an observer follows committed offsets (see [`Observer::wants_commits`]).
    pub fn wants_commits(&self) -> bool {
        self.observers.iter().any(|o| o.wants_commits())
    }

    /// Whether any stage may change frames: they must then be held until decided.
    pub fn holds(&self) -> bool {
        !self.stages.is_empty()
    }

    /// Whether the connection must fail closed (see [`Stage::guards`]).
    pub fn guarded(&self) -> bool {
        self.stages.iter().any(|s| s.guards())
    }

    /// Whether a stage has rules that some connection could be under.
    pub fn may_guard(&self) -> bool {
        self.stages.iter().any(|s| s.may_guard())
    }

    pub fn needs_peer(&self) -> bool {
        self.stages.iter().any(|s| s.needs_peer()) || self.observers.iter().any(|o| o.needs_peer())
    }

    pub fn on_identity(&mut self, identity: &Identity) {
        for s in &mut self.stages {
            s.on_identity(identity);
        }
    }

    /// Let every stage and observer report what it keeps counted.
    pub fn flush(&mut self, m: &mut dyn MetricsSink) {
        for s in &mut self.stages {
            s.flush(m);
        }
        for o in &mut self.observers {
            o.flush(m);
        }
    }

    /// The connection has ended: everything is reported, once.
    pub fn end(&mut self, m: &mut dyn MetricsSink) {
        for s in &mut self.stages {
            s.flush(m);
        }
        for o in &mut self.observers {
            o.end(m);
        }
        self.observers.clear();
    }

    pub fn finished(&mut self, record: &RequestRecord<'_>, m: &mut dyn MetricsSink) {
        // The per-API counters are always there: called directly, not through the list.
        ApiMetrics.on_finished(record, m);
        for o in &mut self.observers {
            o.on_finished(record, m);
        }
    }

    /// Ask the stages, from where `p` stands, about a request frame.
    pub fn run_request(
        &mut self,
        p: &mut RequestProgress,
        identity: &Identity,
        frame: &FrameView<'_>,
        now_ns: u64,
        m: &mut dyn MetricsSink,
    ) -> Flow {
        while let Some(stage) = self.stages.get_mut(p.next) {
            let mut cx = RequestCx {
                head: &p.head,
                identity,
                now_ns,
                plan: &mut p.plan,
                stage: p.next,
                held_first: false,
            };
            let decision = stage.on_request(&mut cx, frame, m);
            p.hold_first |= cx.held_first;
            match decision {
                Decision::Pass => {}
                Decision::Delay(ms) => {
                    p.delay_ms = p.delay_ms.max(ms);
                    p.plan.outcome.set(Outcome::DELAYED);
                }
                Decision::Refuse(code) => return Flow::Done(self.refuse_request(p, code)),
                Decision::Close => return Flow::Done(Action::Close),
                d => {
                    let name = stage.name();
                    return match self.frame_flow(d, frame, &mut p.plan, name) {
                        // The stages after it are shown the replacement.
                        Flow::Done(Action::Replace(bytes)) => {
                            p.next += 1;
                            self.run_replaced(p, identity, bytes, now_ns, m)
                        }
                        other => other,
                    };
                }
            }
            p.next += 1;
        }
        Flow::Done(Action::Forward)
    }

    /// The stages from `p.next` on, shown a request a stage before them replaced (whole).
    fn run_replaced(
        &mut self,
        p: &mut RequestProgress,
        identity: &Identity,
        mut replaced: Vec<u8>,
        now_ns: u64,
        m: &mut dyn MetricsSink,
    ) -> Flow {
        while p.next < self.stages.len() {
            let action = Action::Replace(replaced);
            let view = replaced_view(&action, &EMPTY_VIEW);
            let mut decision = Decision::Pass;
            // A stage that asks for more of a frame it was shown whole is asked again.
            for _ in 0..2 {
                let Some(stage) = self.stages.get_mut(p.next) else {
                    break;
                };
                let mut cx = RequestCx {
                    head: &p.head,
                    identity,
                    now_ns,
                    plan: &mut p.plan,
                    stage: p.next,
                    held_first: false,
                };
                decision = stage.on_request(&mut cx, &view, m);
                p.hold_first |= cx.held_first;
                if !matches!(decision, Decision::NeedHead(_) | Decision::NeedFrame) {
                    break;
                }
            }
            let Action::Replace(bytes) = action else {
                return Flow::Done(Action::Close);
            };
            replaced = bytes;
            match decision {
                Decision::Pass => {}
                Decision::Delay(ms) => {
                    p.delay_ms = p.delay_ms.max(ms);
                    p.plan.outcome.set(Outcome::DELAYED);
                }
                Decision::Refuse(code) => return Flow::Done(self.refuse_request(p, code)),
                Decision::Close => return Flow::Done(Action::Close),
                Decision::Replace(bytes) => replaced = bytes,
                d => {
                    let name = self.stages.get(p.next).map_or("?", |s| s.name());
                    return self.misapplied(name, decision_name(&d));
                }
            }
            p.next += 1;
        }
        Flow::Done(Action::Replace(replaced))
    }

    /// Ask the stages that watch the request, latest first, about its response.
    pub fn run_response(
        &mut self,
        p: &mut ResponseProgress,
        identity: &Identity,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Flow {
        let now_ns = p.now_ns;
        if let Some(code) = p.request.plan.refused {
            return Flow::Done(self.answer_refused(p, identity, now_ns, code));
        }
        // What the stages seen so far replaced the frame with: the next stage is shown that.
        let mut replaced: Option<Action> = None;
        while p.upper > 0 {
            let i = p.upper - 1;
            if let (Some(note), Some(stage)) =
                (p.request.plan.watched_by(i), self.stages.get_mut(i))
            {
                let cx = ResponseCx {
                    request: &p.request,
                    identity,
                    note,
                    now_ns,
                    hold_ms: std::cell::Cell::new(0),
                };
                let decision = match &replaced {
                    None => stage.on_response(&cx, frame, m),
                    Some(action) => stage.on_response(&cx, &replaced_view(action, frame), m),
                };
                p.delay_ms = p.delay_ms.max(cx.hold_ms.get());
                match decision {
                    Decision::Pass | Decision::Delay(_) => {}
                    Decision::Refuse(code) => {
                        return Flow::Done(self.refuse_response(&p.request, code))
                    }
                    Decision::Close => return Flow::Done(Action::Close),
                    Decision::NeedHead(_) | Decision::NeedFrame if replaced.is_some() => {
                        // A later stage needs more than the earlier one's replacement shows:
                        // hold the frame whole and show it to every stage again.
                        if frame.collected {
                            let name = stage.name();
                            return self.misapplied(name, "NeedFrame");
                        }
                        p.upper = MAX_STAGES;
                        p.request.plan.outcome.set(Outcome::HELD);
                        return Flow::Frame;
                    }
                    d => {
                        let name = stage.name();
                        let plan = &mut p.request.plan;
                        let flow = match &replaced {
                            None => self.frame_flow(d, frame, plan, name),
                            Some(action) => {
                                self.frame_flow(d, &replaced_view(action, frame), plan, name)
                            }
                        };
                        match flow {
                            // Shown to the stages below that watch it, if any.
                            Flow::Done(action @ (Action::Replace(_) | Action::ReplaceHead(_)))
                                if p.request.plan.watched_below(i) =>
                            {
                                replaced = Some(action)
                            }
                            other => return other,
                        }
                    }
                }
            }
            p.upper -= 1;
        }
        Flow::Done(replaced.unwrap_or(Action::Forward))
    }

    /// A refused request's answer: from the stage that refused it if it has one, else the
    /// generic error response.
    fn answer_refused(
        &mut self,
        p: &ResponseProgress,
        identity: &Identity,
        now_ns: u64,
        code: i16,
    ) -> Action {
        for (i, stage) in self.stages.iter_mut().enumerate().rev() {
            let Some(note) = p.request.plan.watched_by(i) else {
                continue;
            };
            let cx = ResponseCx {
                request: &p.request,
                identity,
                note,
                now_ns,
                hold_ms: std::cell::Cell::new(0),
            };
            if let Some(frame) = stage.answer_refused(&cx) {
                return Action::Discard(frame);
            }
        }
        self.refuse_response(&p.request, code)
    }

    fn misapplied(&self, stage: &str, decision: &str) -> Flow {
        crate::client_log::error(
            self.id,
            format_args!(
                "connection {}: stage {stage} returned {decision} for a frame it cannot apply to; closing the connection",
                self.id
            ),
        );
        Flow::Done(Action::Close)
    }

    /// A request that must not reach the broker: substituted, or dropped when no answer is
    /// expected, or the connection closed when no answer can be built.
    pub fn refuse_request(&self, p: &mut RequestProgress, code: i16) -> Action {
        p.plan.outcome.set(Outcome::REFUSED);
        let h = &p.head;
        if !h.expects_response {
            return Action::Discard(Vec::new());
        }
        if !refusal::can_answer(h.api_key, h.api_version) {
            crate::client_log::warn(
                self.id,
                format_args!(
                    "connection {}: API key {} v{} (correlation id {}) must be refused but has no error response to answer with; closing the connection",
                    self.id, h.api_key, h.api_version, h.correlation_id
                ),
            );
            return Action::Close;
        }
        p.plan.refused = Some(code);
        Action::Discard(refusal::substitute_request(h.correlation_id))
    }

    /// A response replaced by an error response for its request.
    pub fn refuse_response(&self, request: &Inflight, code: i16) -> Action {
        match refusal::error_response(
            request.api_key,
            request.api_version,
            request.correlation_id,
            code,
        ) {
            Some(frame) => Action::Discard(frame),
            None => {
                crate::client_log::warn(
                    self.id,
                    format_args!(
                        "connection {}: cannot build an error response for API key {} v{}; closing the connection",
                        self.id, request.api_key, request.api_version
                    ),
                );
                Action::Close
            }
        }
    }

    /// The frame-shaped decisions, checked against what the stage was shown: a stage that asks
    /// for what cannot be had fails the frame closed, never open.
    fn frame_flow(&self, d: Decision, frame: &FrameView<'_>, plan: &mut Plan, stage: &str) -> Flow {
        let shown_whole = frame.collected || frame.whole();
        match d {
            Decision::NeedHead(n) if n > frame.bytes.len() && !frame.last_look => Flow::Head(n),
            Decision::NeedHead(_) | Decision::NeedFrame if !frame.collected => {
                plan.outcome.set(Outcome::HELD);
                Flow::Frame
            }
            Decision::Replace(bytes) if shown_whole => {
                plan.outcome.set(Outcome::REWRITTEN);
                Flow::Done(Action::Replace(bytes))
            }
            Decision::ReplaceHead(bytes) if !frame.collected => {
                plan.outcome.set(Outcome::REWRITTEN);
                Flow::Done(Action::ReplaceHead(bytes))
            }
            other => self.misapplied(stage, decision_name(&other)),
        }
    }
}

/// What [`replaced_view`] starts from when there is no frame of its own to fall back on.
const EMPTY_VIEW: FrameView<'static> = FrameView {
    bytes: &[],
    frame_len: 0,
    collected: true,
    last_look: true,
    shared: None,
};

fn decision_name(d: &Decision) -> &'static str {
    match d {
        Decision::Pass => "Pass",
        Decision::NeedHead(_) => "NeedHead",
        Decision::NeedFrame => "NeedFrame",
        Decision::Refuse(_) => "Refuse",
        Decision::Replace(_) => "Replace",
        Decision::ReplaceHead(_) => "ReplaceHead",
        Decision::Delay(_) => "Delay",
        Decision::Close => "Close",
    }
}

/// What a stage after one that replaced the frame is shown: the replacement, after its size
/// field (whole for [`Action::Replace`]; the new head of a frame not shown whole otherwise).
fn replaced_view<'a>(action: &'a Action, frame: &FrameView<'a>) -> FrameView<'a> {
    let (bytes, whole) = match action {
        Action::Replace(b) => (b.as_slice(), true),
        Action::ReplaceHead(b) => (b.as_slice(), false),
        _ => return *frame,
    };
    let body = bytes.get(4..).unwrap_or_default();
    let frame_len = if whole {
        body.len()
    } else {
        // The replaced head's size field, for the whole new frame.
        bytes
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .map(i32::from_be_bytes)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(body.len())
    };
    FrameView {
        bytes: body,
        frame_len,
        collected: whole,
        last_look: true,
        shared: None,
    }
}
