//! The rate-limit stage: accounts every request (and Fetch response) of a connection to the
//! limits that match it, and holds clients over a rate the way a Kafka broker does (KIP-219):
//! the request goes on, its response carries `throttle_time_ms`, and the connection reads
//! nothing more from the client until the debt is paid (the host pauses it).
//!
//! Connection limits are decided on the connection's first request (its identity, including
//! the mTLS principal, is known by then): a connection over them is closed at once.

use std::rc::Rc;

use kafka_protocol::messages::ApiKey;

use std::collections::HashMap;

use crate::codec::walk::Walked;
use crate::config::Config;
use crate::limits::{BucketStore, Charge, KeyBy, Kind, Limit, Mode, Rate, KINDS};
use crate::metrics::{metric_label, MetricsSink};
use crate::pipeline::{Decision, FrameView, Identity, RequestCx, ResponseCx, Stage, TopicsCx};

mod mutations;
mod names;
mod per_topic;
mod throttle;

use mutations::{is_mutation, Mutation, THROTTLING_QUOTA_EXCEEDED};
use names::{bounded_key, limit_metric, Names};
use throttle::{set_throttle, throttle_at};

const PRODUCE: i16 = ApiKey::Produce as i16;
const FETCH: i16 = ApiKey::Fetch as i16;

/// The note for a watched response: the delay already decided (low bits), whether the
/// response's size is to be charged to fetch-byte limits, and whether a hold from counted
/// topics still running when it comes back is added (see `per_topic`).
const NOTE_FETCH_BYTES: u32 = 1 << 31;
const NOTE_OWED: u32 = 1 << 30;
const NOTE_DELAY_MASK: u32 = (1 << 24) - 1;

/// A limit that applies to this connection, with its bucket key and metric names.
#[derive(Debug)]
struct Active {
    limit: usize,
    /// `<limit>/<key>`, or `<limit>/~other` past the limit's `max_keys`.
    bucket: String,
    names: Names,
    /// Amounts accounted and not yet reported, per [`Kind`].
    pending: [f64; KINDS],
}

/// How often accounted amounts are reported while a connection lives (and when it closes).
const REPORT_EVERY_NS: u64 = 1_000_000_000;

pub struct RateLimitStage {
    id: u32,
    config: Rc<Config>,
    store: Rc<dyn BucketStore>,
    /// The limits for the client id they were chosen with.
    selected: Option<(Option<String>, Vec<Active>)>,
    connection_checked: bool,
    /// Concurrent-connection counters this connection holds, given back when it goes away.
    counted: Vec<String>,
    /// The response being shown (correlation id) and the fetch delay charged for it: a
    /// response shown again with more bytes is not charged twice.
    fetch_charged: Option<(i32, u32)>,
    /// Answers to mutations refused over their rate, by correlation id, until their
    /// stand-in's response comes back.
    refusals: Vec<(i32, Vec<u8>)>,
    /// When accounted amounts were last reported.
    reported_ns: u64,
    /// Per-topic buckets, by active limit and topic (see `per_topic`).
    topic_buckets: HashMap<(usize, String), per_topic::TopicBucket>,
    /// Until when the client is held for its topics' bytes.
    owed_until_ns: u64,
}

/// A limit's rate for one kind (requests need the API too: see `on_request`).
fn rate_of(l: &Limit, kind: Kind) -> Option<Rate> {
    match kind {
        Kind::Requests => l.requests,
        Kind::ProduceBytes => l.produce_bytes,
        Kind::FetchBytes => l.fetch_bytes,
        Kind::TopicMutations => l.topic_mutations,
        Kind::Connections => l.connections,
    }
}

/// Count a limit's delay as its mode says; the delay the client gets (none in dry run).
fn throttled(names: &Names, mode: Mode, limit_delay: u32, m: &mut dyn MetricsSink) -> u32 {
    if limit_delay == 0 {
        return 0;
    }
    match mode {
        Mode::Throttle => {
            let ms = i64::from(limit_delay);
            m.add_named(&names.throttled, 1);
            m.add_named(&names.throttle_ms, ms);
            if let (Some(t), Some(tm)) = (&names.key_throttled, &names.key_throttle_ms) {
                m.add_named(t, 1);
                m.add_named(tm, ms);
            }
            limit_delay
        }
        Mode::DryRun => {
            m.add_named(&names.would_throttle, 1);
            0
        }
    }
}

/// An active limit's entry key, for connection counters.
struct Bucket {
    bucket: String,
}

/// Refusals kept at most (a client that pipelines more loses the oldest: it then gets the
/// generic error response with the same code).
const MAX_REFUSALS: usize = 64;

impl RateLimitStage {
    pub fn new(id: u32, config: Rc<Config>, store: Rc<dyn BucketStore>) -> Self {
        Self {
            id,
            config,
            store,
            selected: None,
            connection_checked: false,
            counted: Vec::new(),
            fetch_charged: None,
            refusals: Vec::new(),
            reported_ns: 0,
            topic_buckets: HashMap::new(),
            owed_until_ns: 0,
        }
    }

    fn limit(&self, i: usize) -> Option<&Limit> {
        self.config.limits.get(i)
    }

    /// The limits matching the request's client id and the connection's peer.
    fn select(&mut self, client_id: Option<&str>, identity: &Identity, m: &mut dyn MetricsSink) {
        if let Some((cached, _)) = &self.selected {
            if cached.as_deref() == client_id {
                return;
            }
        }
        let mut active = Vec::new();
        for (i, l) in self.config.limits.iter().enumerate() {
            if !l.matcher.matches(client_id, &identity.peer) {
                continue;
            }
            let key = match l.key {
                KeyBy::Shared => "*".to_string(),
                KeyBy::ClientId => client_id.unwrap_or("-").to_string(),
                KeyBy::Principal => identity
                    .peer
                    .principal
                    .clone()
                    .unwrap_or_else(|| "-".into()),
                KeyBy::Source => identity
                    .peer
                    .source_ip
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "-".into()),
            };
            let key = bounded_key(key);
            let (bucket, label) = if l.key == KeyBy::Shared {
                (format!("{}/{key}", l.name), None)
            } else if self.store.admit(&l.name, &key, l.max_keys) {
                (format!("{}/{key}", l.name), Some(metric_label(&key)))
            } else {
                m.add_named(&limit_metric(&l.name, "keys_overflow"), 1);
                (format!("{}/~other", l.name), Some("other".to_string()))
            };
            active.push(Active {
                limit: i,
                bucket,
                names: Names::new(&l.name, label.as_deref()),
                pending: [0.0; KINDS],
            });
        }
        self.report(m);
        self.topic_buckets.clear();
        self.selected = Some((client_id.map(str::to_string), active));
    }

    /// Report the accounted amounts not yet reported.
    fn report(&mut self, m: &mut dyn MetricsSink) {
        if let Some((_, active)) = &mut self.selected {
            for a in active {
                for (name, pending) in a.names.accounted.iter().zip(a.pending.iter_mut()) {
                    if *pending > 0.0 {
                        m.add_named(name, *pending as i64);
                        *pending = 0.0;
                    }
                }
            }
        }
    }

    fn active(&self) -> &[Active] {
        self.selected
            .as_ref()
            .map(|(_, a)| a.as_slice())
            .unwrap_or_default()
    }

    /// Charge every active limit the amounts of the kinds it has a rate for (`rate_of`), one
    /// store update per limit; the longest delay of the limits that throttle.
    fn charge(
        &mut self,
        what: &[(Kind, f64)],
        rate_of: impl Fn(&Limit, Kind) -> Option<Rate>,
        now_ns: u64,
        m: &mut dyn MetricsSink,
    ) -> u32 {
        self.charge_owed(what, rate_of, now_ns, m).0
    }

    /// As [`Self::charge`], with the longest debt the throttling limits' buckets already had
    /// before the charge (run up by any connection of the key).
    fn charge_owed(
        &mut self,
        what: &[(Kind, f64)],
        rate_of: impl Fn(&Limit, Kind) -> Option<Rate>,
        now_ns: u64,
        m: &mut dyn MetricsSink,
    ) -> (u32, u32) {
        let mut delay = 0;
        let mut owed = 0;
        let Some((_, active)) = &mut self.selected else {
            return (0, 0);
        };
        for a in active.iter_mut() {
            let Some(l) = self.config.limits.get(a.limit) else {
                continue;
            };
            let mut charges: Vec<Charge> = what
                .iter()
                .filter_map(|&(kind, amount)| {
                    rate_of(l, kind).map(|rate| Charge {
                        kind,
                        rate,
                        amount,
                        delay_ms: 0,
                        owed_ms: 0,
                    })
                })
                .collect();
            if charges.is_empty() {
                continue;
            }
            self.store.charge(&a.bucket, &mut charges, now_ns);
            let mut limit_delay = 0;
            for c in &charges {
                if let Some(p) = a.pending.get_mut(c.kind as usize) {
                    *p += c.amount;
                }
                limit_delay = limit_delay.max(c.delay_ms);
                if l.mode == Mode::Throttle {
                    owed = owed.max(c.owed_ms);
                }
            }
            delay = delay.max(throttled(&a.names, l.mode, limit_delay, m));
        }
        if now_ns.saturating_sub(self.reported_ns) >= REPORT_EVERY_NS {
            self.reported_ns = now_ns;
            self.report(m);
        }
        (delay, owed)
    }

    /// The connection limits, on its first request: false if it must close.
    fn admit_connection(&mut self, now_ns: u64, m: &mut dyn MetricsSink) -> bool {
        self.connection_checked = true;
        let mut refused = false;
        let targets: Vec<(usize, String)> = self
            .active()
            .iter()
            .map(|a| (a.limit, a.bucket.clone()))
            .collect();
        for (limit, bucket) in targets {
            let Some(l) = self.limit(limit).cloned() else {
                continue;
            };
            let a = Bucket { bucket };
            if let Some(rate) = l.connections {
                let mut c = [Charge {
                    kind: Kind::Connections,
                    rate,
                    amount: 1.0,
                    delay_ms: 0,
                    owed_ms: 0,
                }];
                self.store.charge(&a.bucket, &mut c, now_ns);
                if c[0].delay_ms > 0 {
                    refused |= self.refuse_connection(&l, "connections_per_second", m);
                }
            }
            if let Some(max) = l.max_connections {
                let key = format!("{}/connections", a.bucket);
                let n = self.store.add(&key, 1);
                if n > i64::from(max) {
                    self.store.add(&key, -1);
                    refused |= self.refuse_connection(&l, "max_connections", m);
                } else {
                    self.counted.push(key);
                }
            }
        }
        if refused {
            self.release();
        }
        !refused
    }

    /// Count a connection over a limit; true if it is to be closed (not in dry run).
    fn refuse_connection(&self, l: &Limit, what: &str, m: &mut dyn MetricsSink) -> bool {
        match l.mode {
            Mode::Throttle => {
                m.add_named(&limit_metric(&l.name, "connections_refused"), 1);
                crate::client_log::info(
                    self.id,
                    format_args!(
                        "connection {}: over `{what}` of limit `{}`; closing it",
                        self.id, l.name
                    ),
                );
                true
            }
            Mode::DryRun => {
                m.add_named(&limit_metric(&l.name, "would_refuse_connection"), 1);
                false
            }
        }
    }

    fn limits_mutations(&self) -> bool {
        self.active().iter().any(|a| {
            self.limit(a.limit)
                .is_some_and(|l| l.topic_mutations.is_some())
        })
    }

    /// A whole mutation request: over the rate, refused with THROTTLING_QUOTA_EXCEEDED where
    /// the version has it (`Err`); otherwise charged, with the delay for the client.
    fn mutation(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        now: u64,
        m: &mut dyn MetricsSink,
    ) -> Result<u32, Decision> {
        let head = cx.head;
        let Some(mutation) = frame
            .slice_from(head.header_len)
            .and_then(|body| Mutation::decode(head.api_key, head.api_version, body))
        else {
            // Not decodable: the broker answers it (and counts nothing).
            return Ok(0);
        };
        if Mutation::rejects(head.api_key, head.api_version) {
            // Strict, as a broker: a client in debt gets the error without the mutation.
            let owed = self.charge(&[(Kind::TopicMutations, 0.0)], rate_of, now, m);
            if owed > 0 {
                if let Some(answer) = mutation.refusal(head.api_version, head.correlation_id, owed)
                {
                    if self.refusals.len() >= MAX_REFUSALS {
                        self.refusals.remove(0);
                    }
                    self.refusals.push((head.correlation_id, answer));
                    cx.watch_response(0);
                    return Err(Decision::Refuse(THROTTLING_QUOTA_EXCEEDED));
                }
            }
        }
        let (delay, owed) = self.charge_owed(
            &[(Kind::TopicMutations, mutation.partitions())],
            rate_of,
            now,
            m,
        );
        if owed > 0 {
            // A version without the error: it waits for the key's debt before it goes on.
            cx.hold_first();
        }
        Ok(delay)
    }

    fn release(&mut self) {
        for key in self.counted.drain(..) {
            self.store.add(&key, -1);
        }
    }
}

impl Drop for RateLimitStage {
    fn drop(&mut self) {
        self.release();
    }
}

impl Stage for RateLimitStage {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn guards(&self) -> bool {
        false
    }

    fn needs_peer(&self) -> bool {
        self.config.limits.iter().any(Limit::needs_peer)
    }

    fn on_identity(&mut self, _identity: &Identity) {
        self.selected = None;
    }

    fn on_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let head = cx.head;
        let client_id = head.client_id.as_ref().map(|c| c.as_str());
        self.select(client_id, cx.identity, m);
        if self.active().is_empty() {
            return Decision::Pass;
        }
        let now = cx.now_ns;
        if !self.connection_checked && !self.admit_connection(now, m) {
            return Decision::Close;
        }
        let size = (frame.frame_len as f64) + 4.0;
        let api = head.api_key;
        let walked = per_topic::walked(api, head.api_version, head.header_decoded);
        // What the decision needs of the frame is asked for before anything is charged: a
        // stage shown the frame again must not charge it twice.
        let mutation = is_mutation(api) && head.header_decoded && self.limits_mutations();
        if mutation && !frame.collected && !frame.whole() {
            return Decision::NeedFrame;
        }
        let topics = if api == PRODUCE && walked && self.limits_per_topic() {
            match only_topic(head.header_len, head.api_version, frame) {
                Ok(topic) => Some(topic),
                Err(n) => return Decision::NeedHead(n),
            }
        } else {
            None
        };
        // The rates this API adds to (a Fetch pays for its response when it comes back, so it
        // is charged nothing now): the same store update tells whether the key already owes
        // for them, whichever of its connections ran the debt up. Only those: a key's fetch
        // debt holds its Fetch requests, not its heartbeats (as a broker mutes only the
        // throttled channel); topic mutations wait or are refused in `mutation`.
        let bytes = match api {
            PRODUCE => Some((Kind::ProduceBytes, size)),
            FETCH => Some((Kind::FetchBytes, 0.0)),
            _ => None,
        };
        let both = [
            (Kind::Requests, 1.0),
            bytes.unwrap_or((Kind::Requests, 0.0)),
        ];
        let what = if bytes.is_some() {
            &both[..]
        } else {
            &both[..1]
        };
        let (mut delay, owed_before) = self.charge_owed(
            what,
            |l, kind| match kind {
                Kind::Requests => l.requests.filter(|_| {
                    l.request_apis
                        .as_ref()
                        .is_none_or(|apis| apis.contains(&api))
                }),
                // Charged per topic once its records have passed.
                k if per_topic::per_topic(l, k, walked) => None,
                other => rate_of(l, other),
            },
            now,
            m,
        );
        let mut owed_before = owed_before;
        if let Some(topic) = topics {
            // A Produce's topics are charged once its records have passed, too late to hold
            // it: its topic's debt (any topic's of the key, for a request naming several or one
            // whose name cannot be read from its head) is checked now, so that a new
            // connection does not get a request through.
            let owed = match topic {
                Some(topic) => self.topic_owed(&topic, now, m),
                None => self.any_topic_owed(now),
            };
            owed_before = owed_before.max(owed);
            delay = delay.max(owed);
        }
        if mutation {
            match self.mutation(cx, frame, now, m) {
                Ok(d) => delay = delay.max(d),
                Err(refused) => return refused,
            }
        }
        let fetch = api == FETCH
            && self.active().iter().any(|a| {
                self.limit(a.limit).is_some_and(|l| {
                    l.fetch_bytes.is_some() && !per_topic::per_topic(l, Kind::FetchBytes, walked)
                })
            });
        let throttle_field = throttle_at(api, head.api_version).is_some();
        // A hold for topics' bytes goes into the response: one still running now, and for a
        // Produce request, the one its own records may bring.
        let owed = throttle_field
            && (self.owed_ms(now) > 0 || (api == PRODUCE && walked && self.limits_per_topic()));
        let throttles = delay > 0 && throttle_field;
        if head.expects_response && (fetch || throttles || owed) {
            let note = (delay.min(NOTE_DELAY_MASK))
                | if fetch { NOTE_FETCH_BYTES } else { 0 }
                | if owed { NOTE_OWED } else { 0 };
            cx.watch_response(note);
        }
        if owed_before > 0 {
            // The key was already in debt (another connection of it, maybe one just closed, ran
            // it up): this request waits too, so reconnecting buys nothing.
            cx.hold_first();
        }
        if delay > 0 {
            Decision::Delay(delay)
        } else {
            Decision::Pass
        }
    }

    fn wants_topics(&self) -> bool {
        self.limits_per_topic()
    }

    fn on_topics(&mut self, cx: &TopicsCx, walked: &Walked, m: &mut dyn MetricsSink) -> u32 {
        self.charge_topics(cx, walked, m)
    }

    fn flush(&mut self, m: &mut dyn MetricsSink) {
        self.report(m);
    }

    fn answer_refused(&mut self, cx: &ResponseCx<'_>) -> Option<Vec<u8>> {
        let at = self
            .refusals
            .iter()
            .position(|(corr, _)| *corr == cx.request.correlation_id)?;
        Some(self.refusals.swap_remove(at).1)
    }

    fn on_response(
        &mut self,
        cx: &ResponseCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let req = cx.request;
        let mut delay = cx.note & NOTE_DELAY_MASK;
        if cx.note & NOTE_FETCH_BYTES != 0 {
            let fetch_delay = match self.fetch_charged {
                Some((corr, d)) if corr == req.correlation_id => d,
                _ => {
                    let size = (frame.frame_len as f64) + 4.0;
                    let walked = per_topic::walked(req.api_key, req.api_version, true);
                    let d = self.charge(
                        &[(Kind::FetchBytes, size)],
                        |l, kind| {
                            (!per_topic::per_topic(l, kind, walked))
                                .then(|| rate_of(l, kind))
                                .flatten()
                        },
                        cx.now_ns,
                        m,
                    );
                    self.fetch_charged = Some((req.correlation_id, d));
                    d
                }
            };
            if fetch_delay > 0 {
                cx.hold_client(fetch_delay);
            }
            delay = delay.max(fetch_delay);
        }
        if cx.note & NOTE_OWED != 0 {
            delay = delay.max(self.owed_ms(cx.now_ns));
        }
        if delay == 0 {
            return Decision::Pass;
        }
        let Some(at) = throttle_at(req.api_key, req.api_version) else {
            return Decision::Pass;
        };
        set_throttle(frame, req.api_key, req.api_version, at, delay)
    }
}

/// The one topic a Produce request names (`Ok(None)`: several, none, or not readable from its
/// first bytes); `Err(n)`: its first `n` bytes are needed.
fn only_topic(
    header_len: usize,
    version: i16,
    frame: &FrameView<'_>,
) -> Result<Option<String>, usize> {
    use crate::topics::produce_head::{scan, Scan, VERSIONS};
    if !VERSIONS.contains(&version) {
        return Ok(None);
    }
    let body = frame.bytes.get(header_len..).unwrap_or_default();
    match scan(body, version) {
        Scan::Need(n) if !frame.last_look && header_len.saturating_add(n) > frame.bytes.len() => {
            Err(header_len.saturating_add(n))
        }
        Scan::Names {
            topic_count: 1,
            first_topic: Some(r),
            ..
        } => Ok(body
            .get(r)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string)),
        _ => Ok(None),
    }
}
