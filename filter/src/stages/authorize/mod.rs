//! Authorization as the pipeline's first stage: every request is checked against the `acls`
//! policy the way Kafka's own authorizer checks it (`acl::checks`), by the names the client
//! uses (before any rule converts them), and answered the way a broker answers:
//!
//! - all allowed: forwarded (responses that list more than was asked for are filtered);
//! - some topics (or groups) denied: the rest is forwarded and the denied ones get
//!   `*_AUTHORIZATION_FAILED` entries merged into the broker's response ([`split`]);
//! - a denial that covers the request (its group, transactional id, the cluster), or nothing
//!   left to forward: the request never reaches the broker, the client gets the error;
//! - what the filter cannot read under ACLs (an unknown API key, a version it has no schema for,
//!   a body that does not decode, a topic id it has not seen named): denied.
//!
//! Every decision is counted by operation and resource type; denials and administrative
//! operations are written to the audit log ([`audit`]).

pub mod answers;
pub mod audit;
pub mod fetch_sessions;
pub mod filters;
pub mod split;
pub mod versions;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, MetadataRequest};

use crate::acl::checks::{self, Alternative, Check, Needs, Resource};
use crate::acl::policy::Applicable;
use crate::acl::{Operation, Policy, ResourceType, Verdict};
use crate::api::label_name;
use crate::codec::budgeted;
use crate::codec::walk::TopicRef;
use crate::metrics::MetricsSink;
use crate::pipeline::refusal::framed;
use crate::pipeline::{Decision, FrameView, Identity, Peer, RequestCx, ResponseCx, Stage};
use crate::topics::produce_head;
use audit::{Audit, Event};
use split::{Denied, Limits, Named};

pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const UNKNOWN_SERVER_ERROR: i16 = -1;

/// What the stage notes for a response it watches: kinds in the top byte, a sequence number
/// (of [`AuthorizeStage::waiting`]) below.
const NOTE_VERSIONS: u32 = 1 << 24;
const NOTE_MERGE: u32 = 2 << 24;
const NOTE_METADATA: u32 = 4 << 24;
const NOTE_FILTER: u32 = 8 << 24;
const NOTE_ANSWER: u32 = 16 << 24;
/// The request opens a fetch session: its response says which.
const NOTE_FETCH_SESSION: u32 = 32 << 24;
const SEQ_MASK: u32 = (1 << 24) - 1;

/// What a Produce request's head is read with at first: its names and the first partition's.
const PRODUCE_HEAD_ASK: usize = 256;

/// Resources one request may name under ACLs: past it the request is not read (each is a
/// decision; a 16 MiB frame could name millions).
const MAX_CHECKS: usize = 10_000;
/// Denied partitions (and resources) one request may have answered by the filter.
const MAX_DENIED_PER_REQUEST: usize = 100_000;
/// ... and all the requests of a connection waiting for their responses.
const MAX_DENIED_WAITING: usize = 1_000_000;

const TOO_MANY_DENIED: &str =
    "more denied partitions than the filter answers for (100000 a request, 1000000 waiting)";

/// Warnings a connection may write to Envoy's log; past them the events are only counted (and
/// audited, within the audit log's own bound).
const MAX_WARNINGS: u32 = 5;

/// Kafka's longest topic name: longer ones are not kept for their ids.
const MAX_TOPIC_NAME: usize = 249;

/// Topic ids a connection may have named for it (from its Metadata responses), at most.
const MAX_TOPIC_IDS: usize = 10_000;

/// APIs whose allowed requests are written to the audit log.
fn administrative(api: ApiKey) -> bool {
    use ApiKey::*;
    matches!(
        api,
        CreateTopics
            | DeleteTopics
            | CreatePartitions
            | AlterConfigs
            | IncrementalAlterConfigs
            | CreateAcls
            | DeleteAcls
            | OffsetDelete
            | DeleteRecords
            | DeleteGroups
            | AlterPartitionReassignments
            | ElectLeaders
            | AlterReplicaLogDirs
            | AlterClientQuotas
            | AlterUserScramCredentials
            | UpdateFeatures
    )
}

/// The error a denial on a resource of this type answers with.
fn error_for(t: ResourceType) -> i16 {
    match t {
        ResourceType::Topic => TOPIC_AUTHORIZATION_FAILED,
        ResourceType::Group => GROUP_AUTHORIZATION_FAILED,
        ResourceType::TransactionalId => TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ResourceType::Cluster => CLUSTER_AUTHORIZATION_FAILED,
    }
}

/// A denied resource, as the split looks it up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Topic(String),
    TopicId([u8; 16]),
    Group(String),
}

struct Waiting {
    seq: u32,
    denied: Option<Denied>,
    /// A whole answer built from the request (see [`answers`]).
    answer: Option<BytesMut>,
    client: Option<Rc<str>>,
}

/// One check decided.
struct Decided<'a> {
    check: &'a Check,
    allowed: bool,
    entry: Option<usize>,
    reason: Option<&'static str>,
}

pub struct AuthorizeStage {
    id: u32,
    policy: Rc<Policy>,
    /// Fetch responses to merge into are held whole: the forwarded Fetch asks for no more.
    max_held_frame_bytes: usize,
    audit: Audit,
    /// For each response the stage watches, in order: what was taken out of its request (split
    /// or answered here), and the client id the request carried.
    waiting: VecDeque<Waiting>,
    next_seq: u32,
    /// The fetch sessions the broker opened on this connection.
    fetch_sessions: fetch_sessions::Sessions,
    /// The request being decided opens a fetch session (its response is watched for it).
    opens_session: bool,
    /// Warnings logged (the first few per connection; then only counted).
    warned: u32,
    /// What `waiting` holds, in denied entries (see [`Denied::weight`]).
    waiting_weight: usize,
    /// The last client id a watched request carried (shared by its `waiting` entries).
    last_client: Option<Rc<str>>,
    /// Topic ids named by this connection's Metadata responses (as the client names them).
    topic_ids: HashMap<[u8; 16], String>,
    connection_logged: bool,
    /// The entries that apply to the last client id seen (see [`Self::entries`]).
    applicable: RefCell<Option<(Option<String>, Rc<Applicable>)>>,
    /// Decisions counted since the last flush: operation, resource type, allowed, how many.
    decisions: Vec<(Operation, ResourceType, bool, i64)>,
}

impl AuthorizeStage {
    pub fn new(
        id: u32,
        policy: Rc<Policy>,
        max_held_frame_bytes: usize,
        envoy_log: bool,
        collector: bool,
    ) -> Self {
        Self {
            id,
            policy,
            max_held_frame_bytes,
            audit: Audit::new(id, envoy_log, collector),
            waiting: VecDeque::new(),
            waiting_weight: 0,
            fetch_sessions: fetch_sessions::Sessions::default(),
            opens_session: false,
            warned: 0,
            last_client: None,
            next_seq: 0,
            topic_ids: HashMap::new(),
            connection_logged: false,
            applicable: RefCell::new(None),
            decisions: Vec::new(),
        }
    }

    /// The entries that apply to a client: matched once per client id (clients keep one).
    fn entries(&self, client: Option<&str>, peer: &Peer) -> Rc<Applicable> {
        let mut cached = self.applicable.borrow_mut();
        if let Some((c, a)) = cached.as_ref() {
            if c.as_deref() == client {
                return Rc::clone(a);
            }
        }
        let a = Rc::new(self.policy.applicable(client, peer));
        *cached = Some((client.map(str::to_string), Rc::clone(&a)));
        a
    }

    fn client<'a>(cx: &'a RequestCx<'_>) -> Option<&'a str> {
        cx.head.client_id.as_ref().map(|c| c.as_str())
    }

    fn decide(
        &self,
        cx: &RequestCx<'_>,
        check: &Check,
    ) -> (bool, Option<usize>, Option<&'static str>) {
        let client = Self::client(cx);
        let peer = &cx.identity.peer;
        let resource_type = check.resource.resource_type();
        let name = match &check.resource {
            Resource::Topic(TopicRef::Id(id)) => match self.topic_ids.get(id) {
                Some(n) => n.as_str(),
                None => {
                    return (
                        false,
                        None,
                        Some("topic id not named by a Metadata response on this connection"),
                    )
                }
            },
            r => r.name().unwrap_or_default(),
        };
        let v = self.policy.decide_for(
            &self.entries(client, peer),
            check.operation,
            resource_type,
            name,
        );
        let alt = match check.or {
            Alternative::None => None,
            Alternative::Cluster if !v.allowed() => Some(self.policy.decide_for(
                &self.entries(client, peer),
                check.operation,
                ResourceType::Cluster,
                crate::acl::config::CLUSTER_NAME,
            )),
            Alternative::WriteSomeTopic if !v.allowed() => {
                let some = self.policy.allows_some_for(
                    &self.entries(client, peer),
                    Operation::Write,
                    ResourceType::Topic,
                );
                Some(if some { Verdict::Allowed(None) } else { v })
            }
            _ => None,
        };
        match alt.unwrap_or(v) {
            Verdict::Allowed(e) => (true, e, None),
            Verdict::Denied(e) => (false, e, None),
        }
    }

    fn event<'a>(
        cx: &RequestCx<'_>,
        event: &'static str,
        operation: &'a str,
        resource_type: &'a str,
        resource: &'a str,
        outcome: &'static str,
    ) -> Event<'a> {
        Event {
            event,
            api: label_name(cx.head.api),
            api_version: cx.head.api_version,
            correlation_id: cx.head.correlation_id,
            operation,
            resource_type,
            resource,
            outcome,
            entry: None,
            reason: None,
        }
    }

    /// The connection's first request past its setup: who it is, once.
    fn log_connection(&mut self, cx: &RequestCx<'_>, m: &mut dyn MetricsSink) {
        if self.connection_logged {
            return;
        }
        self.connection_logged = true;
        let e = Self::event(
            cx,
            "connection",
            "Connect",
            "cluster",
            crate::acl::config::CLUSTER_NAME,
            "allowed",
        );
        self.audit
            .write(cx.identity, Self::client(cx), cx.now_ns, &e, m);
    }

    /// Warn for the connection's first few events, then only log them at debug.
    fn warn_level(&mut self) -> log::Level {
        self.warned = self.warned.saturating_add(1);
        if self.warned <= MAX_WARNINGS {
            log::Level::Warn
        } else {
            log::Level::Debug
        }
    }

    /// A request the filter cannot read under ACLs: denied, with `decision`.
    fn unreadable(
        &mut self,
        cx: &RequestCx<'_>,
        reason: &'static str,
        decision: Decision,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let level = self.warn_level();
        log::log!(
            level,
            "connection {}: API key {} v{} (correlation id {}) denied under ACLs: {reason}",
            self.id,
            cx.head.api_key,
            cx.head.api_version,
            cx.head.correlation_id
        );
        m.add_named("acl_unreadable_denied", 1);
        m.add_named("acl_requests_denied", 1);
        let mut e = Self::event(
            cx,
            "denied",
            "Unknown",
            "cluster",
            crate::acl::config::CLUSTER_NAME,
            "denied",
        );
        if cx.head.api.is_none() {
            e.api = cx.head.api_key.to_string();
        }
        e.reason = Some(reason);
        self.audit
            .write(cx.identity, Self::client(cx), cx.now_ns, &e, m);
        decision
    }

    /// Watch the request's response (`kind`), remembering `denied` for it.
    fn watch(&mut self, cx: &mut RequestCx<'_>, kind: u32, denied: Option<Denied>) {
        if !cx.head.expects_response {
            return;
        }
        let seq = self.next_seq & SEQ_MASK;
        self.next_seq = self.next_seq.wrapping_add(1);
        // Clients keep one id: the stage keeps one copy of it.
        let client = Self::client(cx);
        if self.last_client.as_deref() != client {
            self.last_client = client.map(Rc::from);
        }
        self.waiting_weight += denied.as_ref().map_or(0, Denied::weight);
        self.waiting.push_back(Waiting {
            seq,
            denied,
            answer: None,
            client: self.last_client.clone(),
        });
        let session = if std::mem::take(&mut self.opens_session) {
            NOTE_FETCH_SESSION
        } else {
            0
        };
        cx.watch_response(kind | session | seq);
    }

    /// Whether remembering `d` for a response would keep more than the stage allows (a request
    /// naming a huge number of denied partitions, or many such requests unanswered): the
    /// answers are built in the VM, so they are bounded like the frames it holds.
    fn too_much(&self, d: &Denied) -> bool {
        let w = d.weight();
        w > MAX_DENIED_PER_REQUEST || self.waiting_weight.saturating_add(w) > MAX_DENIED_WAITING
    }

    /// What the stage kept for the response that carries `note`.
    fn take_waiting(&mut self, note: u32) -> Option<Waiting> {
        let seq = note & SEQ_MASK;
        // Responses come in request order; anything older was never answered.
        while let Some(w) = self.waiting.pop_front() {
            let weight = w.denied.as_ref().map_or(0, Denied::weight)
                + w.answer.as_ref().map_or(0, |a| a.len() / 16);
            self.waiting_weight = self.waiting_weight.saturating_sub(weight);
            if w.seq == seq {
                return Some(w);
            }
        }
        None
    }

    /// Count and audit the decided checks.
    fn account(
        &mut self,
        cx: &RequestCx<'_>,
        decided: &[Decided<'_>],
        admin: bool,
        m: &mut dyn MetricsSink,
    ) {
        for d in decided {
            // Kept until the next flush: a host call per request would cost more than the
            // decision itself.
            let key = (
                d.check.operation,
                d.check.resource.resource_type(),
                d.allowed,
            );
            match self.decisions.iter_mut().find(|c| (c.0, c.1, c.2) == key) {
                Some(c) => c.3 += 1,
                None => self.decisions.push((key.0, key.1, key.2, 1)),
            }
            if d.allowed && !admin {
                continue;
            }
            let name = match &d.check.resource {
                Resource::Topic(TopicRef::Id(id)) => {
                    format!("id:{}", crate::codec::walk::id_hex(id))
                }
                r => r.name().unwrap_or_default().to_string(),
            };
            let (event, outcome) = if d.allowed {
                ("admin", "allowed")
            } else {
                ("denied", "denied")
            };
            let mut e = Self::event(
                cx,
                event,
                d.check.operation.name(),
                d.check.resource.resource_type().name(),
                &name,
                outcome,
            );
            e.entry = d.entry;
            e.reason = d.reason;
            self.audit
                .write(cx.identity, Self::client(cx), cx.now_ns, &e, m);
        }
    }

    /// The whole request frame (after its size field) has been read.
    fn decide_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let head = cx.head;
        let Some(body) = frame.slice_from(head.header_len) else {
            return self.unreadable(
                cx,
                "the request is shorter than its header",
                Decision::Close,
                m,
            );
        };
        self.log_connection(cx, m);
        self.opens_session = false;
        if head.api_key == ApiKey::Fetch as i16 {
            match self.fetch_sessions.request(head.api_version, &body) {
                fetch_sessions::Use::Fine => {}
                fetch_sessions::Use::Opens => self.opens_session = true,
                fetch_sessions::Use::Foreign(id) => return self.foreign_session(cx, id, m),
            }
        }
        let (checks, filtered) = match checks::needs(head.api_key, head.api_version, &body) {
            Needs::Nothing => return Decision::Pass,
            Needs::Unknown => {
                return self.unreadable(
                    cx,
                    "the request does not decode, or its API is not in the filter's table",
                    Decision::Refuse(CLUSTER_AUTHORIZATION_FAILED),
                    m,
                )
            }
            Needs::Checks { checks, filtered } => (checks, filtered),
        };
        if checks.len() > MAX_CHECKS {
            return self.unreadable(
                cx,
                "the request names more resources than the filter checks in one request (10000)",
                Decision::Close,
                m,
            );
        }
        let api = ApiKey::try_from(head.api_key).ok();
        let decided: Vec<Decided<'_>> = checks
            .iter()
            .map(|c| {
                let (allowed, entry, reason) = self.decide(cx, c);
                Decided {
                    check: c,
                    allowed,
                    entry,
                    reason,
                }
            })
            .collect();
        self.account(cx, &decided, api.is_some_and(administrative), m);
        // Groups and transactional ids are resources of their own only where a request names
        // several (DescribeGroups, FindCoordinator); elsewhere a denied group, transactional id
        // or cluster covers the whole request.
        let per_key = matches!(api, Some(ApiKey::DescribeGroups | ApiKey::FindCoordinator));
        let whole = decided.iter().find(|d| {
            !d.allowed
                && match d.check.resource {
                    Resource::Topic(_) => false,
                    Resource::Group(_) | Resource::TransactionalId(_) => !per_key,
                    Resource::Cluster => true,
                }
        });
        let denied: HashMap<Key, i16> = decided
            .iter()
            .filter(|d| !d.allowed)
            .filter_map(|d| {
                let key = match &d.check.resource {
                    Resource::Topic(TopicRef::Name(n)) => Key::Topic(n.clone()),
                    Resource::Topic(TopicRef::Id(id)) => Key::TopicId(*id),
                    Resource::Group(g) | Resource::TransactionalId(g) => Key::Group(g.clone()),
                    Resource::Cluster => return None,
                };
                Some((key, error_for(d.check.resource.resource_type())))
            })
            .collect();
        let splits =
            split::splits(head.api_key) && split::mergeable(head.api_key, head.api_version);
        if let Some(w) = whole {
            let code = error_for(w.check.resource.resource_type());
            m.add_named("acl_requests_denied", 1);
            if splits {
                // Every resource of the request gets the error.
                let all = |_: Named<'_>| Some(code);
                if let Some(s) = split::split(
                    head.api_key,
                    head.api_version,
                    &body,
                    &all,
                    Limits::default(),
                ) {
                    return self.answer_here(cx, s.denied, code, m);
                }
            }
            return self.deny_whole(cx, &body, code, m);
        }
        if denied.is_empty() {
            return self.allowed(cx, frame, &body, filtered, m);
        }
        if !splits {
            m.add_named("acl_requests_denied", 1);
            let code = decided
                .iter()
                .find(|d| !d.allowed)
                .map_or(TOPIC_AUTHORIZATION_FAILED, |d| {
                    error_for(d.check.resource.resource_type())
                });
            return self.deny_whole(cx, &body, code, m);
        }
        let lookup = |n: Named<'_>| {
            let key = match n {
                Named::Topic(t) => Key::Topic(t.to_string()),
                Named::TopicId(id) => Key::TopicId(*id),
                Named::Group(g) => Key::Group(g.to_string()),
            };
            denied.get(&key).copied()
        };
        let limits = Limits {
            no_auto_create: api == Some(ApiKey::Metadata) && !self.may_auto_create(cx, &body),
            fetch_max_bytes: self.fetch_max_bytes(),
        };
        let Some(s) = split::split(head.api_key, head.api_version, &body, &lookup, limits) else {
            m.add_named("acl_requests_denied", 1);
            return Decision::Refuse(TOPIC_AUTHORIZATION_FAILED);
        };
        match s.forward {
            None => {
                m.add_named("acl_requests_denied", 1);
                self.answer_here(cx, s.denied, TOPIC_AUTHORIZATION_FAILED, m)
            }
            Some(_) if self.too_much(&s.denied) => {
                self.unreadable(cx, TOO_MANY_DENIED, Decision::Close, m)
            }
            Some(forward) => {
                m.add_named("acl_requests_split", 1);
                let header = frame.bytes.get(..head.header_len).unwrap_or_default();
                let kind = if api == Some(ApiKey::Metadata) {
                    NOTE_MERGE | NOTE_METADATA | NOTE_FILTER
                } else {
                    NOTE_MERGE
                };
                self.watch(cx, kind, Some(s.denied));
                Decision::Replace(framed(&[header, &forward]))
            }
        }
    }

    /// A Produce request of one topic, from its first bytes (the names come before the records):
    /// allowed, it passes without being held or decoded (also when its bytes are all there). `None`: it must be held whole and decided there
    /// (several topics, a denial to answer per partition, or names that do not scan).
    fn produce_head(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Option<Decision> {
        if !produce_head::VERSIONS.contains(&cx.head.api_version) {
            return None;
        }
        let body = frame.bytes.get(cx.head.header_len..)?;
        let (txn, topic) = match produce_head::scan(body, cx.head.api_version) {
            produce_head::Scan::Need(n) if !frame.last_look => {
                let want = cx
                    .head
                    .header_len
                    .saturating_add(n)
                    .max(PRODUCE_HEAD_ASK.min(frame.frame_len));
                return Some(Decision::NeedHead(want));
            }
            produce_head::Scan::Names {
                transactional_id,
                topic_count: 1,
                first_topic: Some(topic),
                ..
            } => (transactional_id, topic),
            _ => return None,
        };
        let text = |r: std::ops::Range<usize>| {
            body.get(r)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
        };
        let mut checks = Vec::with_capacity(2);
        if let Some(r) = txn {
            checks.push(Check {
                operation: Operation::Write,
                resource: Resource::TransactionalId(text(r)?),
                or: Alternative::None,
            });
        }
        checks.push(Check {
            operation: Operation::Write,
            resource: Resource::Topic(TopicRef::Name(text(topic)?)),
            or: Alternative::None,
        });
        let decided: Vec<(bool, Option<usize>, Option<&'static str>)> =
            checks.iter().map(|c| self.decide(cx, c)).collect();
        if !decided.iter().all(|d| d.0) {
            return None;
        }
        self.log_connection(cx, m);
        let decided: Vec<Decided<'_>> = checks
            .iter()
            .zip(decided)
            .map(|(check, (allowed, entry, reason))| Decided {
                check,
                allowed,
                entry,
                reason,
            })
            .collect();
        self.account(cx, &decided, false, m);
        Some(Decision::Pass)
    }

    /// Fetch responses the stage merges into are held whole: the forwarded Fetch asks for no
    /// more than can be held (less a margin for what a broker may add past `max_bytes`).
    fn fetch_max_bytes(&self) -> i32 {
        i32::try_from(
            self.max_held_frame_bytes
                .saturating_sub(64 * 1024)
                .max(1024),
        )
        .unwrap_or(i32::MAX)
    }

    /// Whether a Metadata request that lets the broker create topics may: Create on every
    /// topic it names, or on the cluster (as Kafka checks it).
    fn may_auto_create(&self, cx: &RequestCx<'_>, body: &Bytes) -> bool {
        let Some(r) = budgeted::decode::<MetadataRequest>(&mut body.clone(), cx.head.api_version)
        else {
            return false;
        };
        if !r.allow_auto_topic_creation {
            return true;
        }
        let client = Self::client(cx);
        let peer = &cx.identity.peer;
        let cluster = self
            .policy
            .decide_for(
                &self.entries(client, peer),
                Operation::Create,
                ResourceType::Cluster,
                crate::acl::config::CLUSTER_NAME,
            )
            .allowed();
        cluster
            || r.topics.iter().flatten().all(|t| {
                t.name.as_ref().is_some_and(|n| {
                    self.policy
                        .decide_for(
                            &self.entries(client, peer),
                            Operation::Create,
                            ResourceType::Topic,
                            n.as_str(),
                        )
                        .allowed()
                })
            })
    }

    /// Everything the request names is allowed.
    fn allowed(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        body: &Bytes,
        filtered: bool,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let head = cx.head;
        let api = ApiKey::try_from(head.api_key).ok();
        if api == Some(ApiKey::Metadata) {
            // Filtered even when it names its topics: a broker may answer with more than was
            // asked for (tansu answers an empty list with every topic).
            let kind = NOTE_METADATA | NOTE_FILTER;
            if !filtered && !self.may_auto_create(cx, body) {
                let none = |_: Named<'_>| None;
                let limits = Limits {
                    no_auto_create: true,
                    fetch_max_bytes: 0,
                };
                if let Some(s) = split::split(head.api_key, head.api_version, body, &none, limits) {
                    if let Some(forward) = s.forward {
                        m.add_named("acl_auto_create_prevented", 1);
                        self.watch(cx, kind, None);
                        let header = frame.bytes.get(..head.header_len).unwrap_or_default();
                        return Decision::Replace(framed(&[header, &forward]));
                    }
                }
                return Decision::Refuse(TOPIC_AUTHORIZATION_FAILED);
            }
            self.watch(cx, kind, None);
            return Decision::Pass;
        }
        if filtered {
            self.watch(cx, NOTE_FILTER, None);
        } else if self.opens_session {
            self.watch(cx, 0, None);
        }
        Decision::Pass
    }

    /// An incremental Fetch of a session the broker did not open on this connection.
    fn foreign_session(
        &mut self,
        cx: &RequestCx<'_>,
        id: i32,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        m.add_named("acl_fetch_sessions_refused", 1);
        m.add_named("acl_requests_denied", 1);
        let session = id.to_string();
        let mut e = Self::event(cx, "denied", "Read", "fetch_session", &session, "denied");
        e.reason = Some("a fetch session not opened on this connection");
        self.audit
            .write(cx.identity, Self::client(cx), cx.now_ns, &e, m);
        Decision::Refuse(fetch_sessions::FETCH_SESSION_ID_NOT_FOUND)
    }

    /// A request of an API not split, denied whole: every resource it names gets `code` where
    /// the API answers per resource, else the API's generic error response.
    fn deny_whole(
        &mut self,
        cx: &mut RequestCx<'_>,
        body: &Bytes,
        code: i16,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let built = match cx.head.expects_response {
            true => answers::deny_all(cx.head.api_key, cx.head.api_version, body, code),
            false => None,
        };
        let Some(answer) = built else {
            return Decision::Refuse(code);
        };
        let d = Denied::Groups(Vec::new());
        if self.waiting_weight.saturating_add(answer.len() / 16) > MAX_DENIED_WAITING {
            return self.unreadable(cx, TOO_MANY_DENIED, Decision::Close, m);
        }
        self.watch(cx, NOTE_ANSWER, Some(d));
        if let Some(w) = self.waiting.back_mut() {
            self.waiting_weight += answer.len() / 16;
            w.answer = Some(answer);
        }
        Decision::Refuse(code)
    }

    /// The request never reaches the broker; its answer is the denied entries alone.
    fn answer_here(
        &mut self,
        cx: &mut RequestCx<'_>,
        denied: Denied,
        code: i16,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        if self.too_much(&denied) {
            return self.unreadable(cx, TOO_MANY_DENIED, Decision::Close, m);
        }
        self.watch(cx, NOTE_ANSWER, Some(denied));
        Decision::Refuse(code)
    }

    /// Whether the identity may Describe the resource `name` of type `t`.
    fn may_describe(
        &self,
        cx: &ResponseCx<'_>,
        client: Option<&str>,
        t: ResourceType,
        name: &str,
    ) -> bool {
        self.policy
            .decide_for(
                &self.entries(client, &cx.identity.peer),
                Operation::Describe,
                t,
                name,
            )
            .allowed()
    }

    fn response_failed(
        &mut self,
        cx: &ResponseCx<'_>,
        what: &str,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let level = self.warn_level();
        log::log!(
            level,
            "connection {}: the response to API key {} v{} (correlation id {}) {what}; answering with an error",
            self.id, cx.request.api_key, cx.request.api_version, cx.request.correlation_id
        );
        m.add_named("acl_response_errors", 1);
        Decision::Refuse(UNKNOWN_SERVER_ERROR)
    }
}

impl Stage for AuthorizeStage {
    fn name(&self) -> &'static str {
        "authorize"
    }

    /// Every connection is under the policy.
    fn guards(&self) -> bool {
        true
    }

    /// Audit lines say who: principal and source, whatever the entries match on.
    fn needs_peer(&self) -> bool {
        true
    }

    fn set_collector(&mut self, lines: &crate::observers::log_sink::SharedLines) {
        self.audit.set_collector(lines);
    }

    /// The peer became known: the entries that apply are matched again.
    fn on_identity(&mut self, _identity: &Identity) {
        self.applicable.replace(None);
    }

    fn flush(&mut self, m: &mut dyn MetricsSink) {
        for (op, rt, allowed, n) in self.decisions.drain(..) {
            let outcome = if allowed { "allowed" } else { "denied" };
            m.add_named(
                &format!(
                    "acl.operation.{}.resource.{}.{outcome}",
                    op.name(),
                    rt.name()
                ),
                n,
            );
        }
    }

    fn on_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let head = cx.head;
        let Ok(api) = ApiKey::try_from(head.api_key) else {
            return self.unreadable(cx, "unknown API key", Decision::Close, m);
        };
        if !head.header_decoded {
            return self.unreadable(cx, "the request header does not decode", Decision::Close, m);
        }
        // ApiVersions of any version: it is how a client learns which versions there are (a
        // broker answers a newer one with v0 and UNSUPPORTED_VERSION).
        if api == ApiKey::ApiVersions {
            cx.watch_response(NOTE_VERSIONS);
            return Decision::Pass;
        }
        if !head.version_known {
            return self.unreadable(
                cx,
                "a version the filter has no schema for",
                Decision::Refuse(UNSUPPORTED_VERSION),
                m,
            );
        }
        if matches!(
            api,
            ApiKey::SaslHandshake
                | ApiKey::SaslAuthenticate
                | ApiKey::GetTelemetrySubscriptions
                | ApiKey::PushTelemetry
        ) {
            return Decision::Pass;
        }
        if !frame.collected && api == ApiKey::Produce {
            if let Some(d) = self.produce_head(cx, frame, m) {
                return d;
            }
        }
        if !frame.collected && !frame.whole() {
            return Decision::NeedFrame;
        }
        self.decide_request(cx, frame, m)
    }

    fn on_response(
        &mut self,
        cx: &ResponseCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let note = cx.note;
        if note & NOTE_FETCH_SESSION != 0 {
            let read = self
                .fetch_sessions
                .response(cx.request.api_version, frame.bytes);
            if read.is_none() && !frame.collected && !frame.whole() && !frame.last_look {
                return Decision::NeedHead(fetch_sessions::HEAD.min(frame.frame_len));
            }
            if note & (NOTE_MERGE | NOTE_FILTER | NOTE_METADATA | NOTE_VERSIONS) == 0 {
                self.take_waiting(note);
                return Decision::Pass;
            }
        }
        if !frame.collected && !frame.whole() {
            return Decision::NeedFrame;
        }
        let req = cx.request;
        let Ok(api) = ApiKey::try_from(req.api_key) else {
            return Decision::Pass;
        };
        let (header, body) = match frame.response_parts(req.api_key, req.api_version) {
            Some(Ok(parts)) => parts,
            Some(Err(())) => {
                return self.response_failed(cx, "has a header that does not decode", m)
            }
            None => return Decision::Close,
        };
        let v = req.api_version;
        if note & NOTE_VERSIONS != 0 {
            return match versions::limit(v, &body) {
                Some(b) => Decision::Replace(framed(&[header, &b])),
                // Versions name no resource: an unexpected answer leaks nothing.
                None => Decision::Pass,
            };
        }
        let Some(waiting) = self.take_waiting(note) else {
            return self.response_failed(cx, "was not expected", m);
        };
        let denied = waiting.denied;
        let client = waiting.client.as_deref();
        let result = if note & NOTE_METADATA != 0 {
            let mut learned: Vec<([u8; 16], String)> = Vec::new();
            let r = {
                let filter = |n: &str| self.may_describe(cx, client, ResourceType::Topic, n);
                let keep: Option<filters::Keep<'_>> = (note & NOTE_FILTER != 0).then_some(&filter);
                filters::metadata(v, &body, keep, denied.as_ref(), &mut |id, n| {
                    learned.push((*id, n.to_string()))
                })
            };
            for (id, n) in learned {
                if n.len() > MAX_TOPIC_NAME {
                    continue;
                }
                if self.topic_ids.len() < MAX_TOPIC_IDS || self.topic_ids.contains_key(&id) {
                    self.topic_ids.insert(id, n);
                }
            }
            r
        } else if let Some(d) = &denied {
            split::merge(req.api_key, v, Some(&body), d)
                .ok_or(filters::Undecodable)
                .map(Some)
        } else if note & NOTE_FILTER != 0 {
            match api {
                ApiKey::ListGroups => filters::list_groups(v, &body, &|g| {
                    self.may_describe(cx, client, ResourceType::Group, g)
                }),
                ApiKey::ListTransactions => filters::list_transactions(v, &body, &|t| {
                    self.may_describe(cx, client, ResourceType::TransactionalId, t)
                }),
                ApiKey::OffsetFetch => filters::offset_fetch(v, &body, &|t| {
                    self.may_describe(cx, client, ResourceType::Topic, t)
                }),
                _ => Ok(None),
            }
        } else {
            Ok(None)
        };
        match result {
            Ok(None) => Decision::Pass,
            Ok(Some(b)) => Decision::Replace(framed(&[header, &b])),
            Err(filters::Undecodable) => self.response_failed(cx, "does not decode", m),
        }
    }

    fn answer_refused(&mut self, cx: &ResponseCx<'_>) -> Option<Vec<u8>> {
        if cx.note & NOTE_ANSWER == 0 {
            return None;
        }
        let w = self.take_waiting(cx.note)?;
        let req = cx.request;
        let api = ApiKey::try_from(req.api_key).ok()?;
        let body = match w.answer {
            Some(a) => a,
            None => split::merge(req.api_key, req.api_version, None, &w.denied?)?,
        };
        let corr = req.correlation_id.to_be_bytes();
        let tagged: &[u8] = if api.response_header_version(req.api_version) >= 1 {
            &[0]
        } else {
            &[]
        };
        Some(framed(&[&corr, tagged, &body]))
    }
}
