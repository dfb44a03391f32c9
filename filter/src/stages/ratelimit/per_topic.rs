//! Byte rates kept per topic (`"per_topic": true`): one bucket per limit key and topic, charged
//! with each topic's record bytes once the frame's topics are counted as it passes (a Produce
//! request as it streams to the broker, a Fetch response as it streams back), never by holding
//! it.
//!
//! A request's debt is known only once its records have passed, after its head (and its
//! `throttle_time_ms`) was decided, as a broker knows it only after appending them: the client
//! is held from then on, and the debt still running when the response comes back goes into the
//! response (Produce's `throttle_time_ms` follows its results). A Fetch response's own debt
//! cannot go into it (the field comes before the records): the client is held, and the next
//! response it gets while the hold runs carries what is left.
//!
//! What the topics do not account for is not let through: the frame's framing (its headers and
//! topic names) and whatever a walk that stopped early (past `MAX_PARTITIONS` partitions, a field
//! too large) did not count go to the key's `~other` topic bucket; so do topics past
//! [`MAX_TOPICS_PER_FRAME`]; and frames that are not walked at all (versions the walkers do not
//! read) are charged whole to the key's bucket at their head, as a limit without `per_topic`
//! does. A frame is so charged its full size, as without `per_topic`.

use crate::codec::walk::{id_hex, walks_request, walks_response, TopicRef, Walked};
use crate::connection::topic_id_key;
use crate::limits::{Charge, Kind, Limit, Mode};
use crate::metrics::{topic_label, MetricsSink};
use crate::pipeline::TopicsCx;

use super::names::limit_metric;
use super::RateLimitStage;

/// Distinct topics of one frame charged each to their own bucket; the rest share the key's
/// `~other` topic bucket (a frame naming thousands of topics costs a bounded number of store
/// updates).
pub(super) const MAX_TOPICS_PER_FRAME: usize = 64;
/// Topic buckets a connection remembers (their names and admission); past this they are
/// worked out again per frame.
const MAX_CACHED: usize = 1024;
const OTHER: &str = "~other";

/// A topic's bucket under one active limit, and its counters.
#[derive(Debug)]
pub(super) struct TopicBucket {
    bucket: String,
    throttled: String,
    throttle_ms: String,
}

/// Whether the frame's topics will be counted as it passes (then a `per_topic` limit is charged
/// per topic; otherwise whole, at its head).
pub(super) fn walked(api_key: i16, version: i16, header_decoded: bool) -> bool {
    walks_request(api_key, version, header_decoded) || walks_response(api_key, version)
}

/// Whether `l` charges this kind per topic, for a frame whose topics are counted.
pub(super) fn per_topic(l: &Limit, kind: Kind, walked: bool) -> bool {
    walked && l.per_topic && matches!(kind, Kind::ProduceBytes | Kind::FetchBytes)
}

/// A topic as buckets and labels name it: its name, or for one fetched by id the name a
/// Metadata response gave it (`id-<hex>` until one has).
fn topic_name(topic: &TopicRef, stage: &RateLimitStage) -> String {
    match topic {
        TopicRef::Name(n) => n.clone(),
        TopicRef::Id(id) => stage
            .store
            .recall(&topic_id_key(id))
            .unwrap_or_else(|| format!("id-{}", id_hex(id))),
    }
}

/// Bytes per distinct topic, in frame order, at most [`MAX_TOPICS_PER_FRAME`] of them; the
/// rest (later topics, and what a walk cut short did not count) under [`OTHER`].
fn bytes_per_topic(stage: &RateLimitStage, cx: &TopicsCx, walked: &Walked) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut other = 0u64;
    for t in &walked.topics {
        let name = topic_name(&t.topic, stage);
        if let Some((_, b)) = out.iter_mut().find(|(n, _)| *n == name) {
            *b = b.saturating_add(t.bytes);
        } else if out.len() < MAX_TOPICS_PER_FRAME {
            out.push((name, t.bytes));
        } else {
            other = other.saturating_add(t.bytes);
        }
    }
    // What the record sets do not account for: the frame's framing (topic names among it, which
    // a client could make most of a frame), and whatever a walk cut short did not count.
    let counted: u64 = walked.topics.iter().map(|t| t.bytes).sum();
    other = other.saturating_add(cx.frame_bytes.saturating_sub(counted));
    if other > 0 {
        out.push((OTHER.to_string(), other));
    }
    out
}

impl RateLimitStage {
    /// Whether a limit active on this connection keeps byte rates per topic.
    pub(super) fn limits_per_topic(&self) -> bool {
        self.active()
            .iter()
            .any(|a| self.limit(a.limit).is_some_and(|l| l.per_topic))
    }

    /// The bucket of `topic` under active limit `ai`: admitted under the limit's `max_keys`
    /// (key and topic pairs), `~other` of the key past it.
    fn topic_bucket(
        &mut self,
        ai: usize,
        topic: &str,
        m: &mut dyn MetricsSink,
    ) -> Option<&TopicBucket> {
        let cache_key = (ai, topic.to_string());
        if !self.topic_buckets.contains_key(&cache_key) {
            let a = self.selected.as_ref()?.1.get(ai)?;
            let l = self.config.limits.get(a.limit)?;
            let admitted = topic == OTHER
                || self.store.admit(
                    &format!("{}/~topics", l.name),
                    &format!("{}/{topic}", a.bucket),
                    l.max_keys,
                );
            let (topic, label) = if admitted {
                (topic, topic_label(topic))
            } else {
                m.add_named(&limit_metric(&l.name, "keys_overflow"), 1);
                (OTHER, "other".to_string())
            };
            let label = if topic == OTHER {
                "other".to_string()
            } else {
                label
            };
            let b = TopicBucket {
                bucket: format!("{}/topic/{topic}", a.bucket),
                throttled: format!("limit.{}.topic.{label}.limit_topic_throttled", l.name),
                throttle_ms: format!("limit.{}.topic.{label}.limit_topic_throttle_ms", l.name),
            };
            if self.topic_buckets.len() >= MAX_CACHED {
                self.topic_buckets.clear();
            }
            self.topic_buckets.insert(cache_key.clone(), b);
        }
        self.topic_buckets.get(&cache_key)
    }

    /// Charge a counted frame's topics to every active `per_topic` limit with a rate for its
    /// kind; the longest hold of those that throttle.
    pub(super) fn charge_topics(
        &mut self,
        cx: &TopicsCx,
        walked: &Walked,
        m: &mut dyn MetricsSink,
    ) -> u32 {
        let kind = if cx.response {
            Kind::FetchBytes
        } else {
            Kind::ProduceBytes
        };
        let limits: Vec<(usize, usize)> = self
            .active()
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                self.limit(a.limit)
                    .is_some_and(|l| l.per_topic && super::rate_of(l, kind).is_some())
            })
            .map(|(ai, a)| (ai, a.limit))
            .collect();
        if limits.is_empty() {
            return 0;
        }
        let topics = bytes_per_topic(self, cx, walked);
        let store = std::rc::Rc::clone(&self.store);
        let mut delay = 0;
        for (ai, li) in limits {
            let Some(l) = self.config.limits.get(li).cloned() else {
                continue;
            };
            let Some(rate) = super::rate_of(&l, kind) else {
                continue;
            };
            let mut limit_delay = 0;
            for (topic, bytes) in &topics {
                let Some(b) = self.topic_bucket(ai, topic, m) else {
                    continue;
                };
                let mut c = [Charge {
                    kind,
                    rate,
                    amount: *bytes as f64,
                    delay_ms: 0,
                    owed_ms: 0,
                }];
                store.charge(&b.bucket, &mut c, cx.now_ns);
                let d = c[0].delay_ms;
                if d > 0 && l.mode == Mode::Throttle {
                    m.add_named(&b.throttled, 1);
                    m.add_named(&b.throttle_ms, i64::from(d));
                }
                limit_delay = limit_delay.max(d);
            }
            let total: u64 = topics.iter().map(|(_, b)| *b).sum();
            if let Some(a) = self.selected.as_mut().and_then(|(_, a)| a.get_mut(ai)) {
                if let Some(p) = a.pending.get_mut(kind as usize) {
                    *p += total as f64;
                }
            }
            if let Some(a) = self.active().get(ai) {
                delay = delay.max(super::throttled(&a.names, l.mode, limit_delay, m));
            }
        }
        if delay > 0 {
            let until = cx.now_ns.saturating_add(u64::from(delay) * 1_000_000);
            self.owed_until_ns = self.owed_until_ns.max(until);
            if !cx.response {
                // For the key's other connections: until when some topic of it owes.
                let marker = self.owed_marker();
                let until_ms = i64::try_from(until / 1_000_000).unwrap_or(i64::MAX);
                for key in marker {
                    self.store.raise_number(&key, until_ms);
                }
            }
        }
        delay
    }

    /// The store keys under which the key's latest per-topic Produce debt is kept, one per
    /// active `per_topic` limit that throttles.
    fn owed_marker(&self) -> Vec<String> {
        self.active()
            .iter()
            .filter(|a| {
                self.limit(a.limit).is_some_and(|l| {
                    l.per_topic && l.produce_bytes.is_some() && l.mode == Mode::Throttle
                })
            })
            .map(|a| format!("{}/~topics_owed_until_ms", a.bucket))
            .collect()
    }

    /// How long until no topic of the key owes (for a Produce whose topics cannot all be known
    /// from its head), in milliseconds.
    pub(super) fn any_topic_owed(&self, now_ns: u64) -> u32 {
        let now_ms = i64::try_from(now_ns / 1_000_000).unwrap_or(i64::MAX);
        self.owed_marker()
            .iter()
            .filter_map(|key| self.store.number(key))
            .map(|until| u32::try_from(until.saturating_sub(now_ms).max(0)).unwrap_or(u32::MAX))
            .max()
            .unwrap_or(0)
    }

    /// The debt the key already has for `topic` under its `per_topic` Produce byte rates (any
    /// connection of the key ran it up), as a delay; nothing is charged.
    pub(super) fn topic_owed(&mut self, topic: &str, now_ns: u64, m: &mut dyn MetricsSink) -> u32 {
        let limits: Vec<(usize, crate::limits::Rate)> = self
            .active()
            .iter()
            .enumerate()
            .filter_map(|(ai, a)| {
                let l = self.limit(a.limit)?;
                let rate = l.produce_bytes.filter(|_| l.per_topic)?;
                (l.mode == Mode::Throttle).then_some((ai, rate))
            })
            .collect();
        let store = std::rc::Rc::clone(&self.store);
        let mut owed = 0;
        for (ai, rate) in limits {
            let Some(b) = self.topic_bucket(ai, topic, m) else {
                continue;
            };
            let mut c = [Charge {
                kind: Kind::ProduceBytes,
                rate,
                amount: 0.0,
                delay_ms: 0,
                owed_ms: 0,
            }];
            store.charge(&b.bucket, &mut c, now_ns);
            owed = owed.max(c[0].owed_ms);
        }
        owed
    }

    /// What is left of a hold from counted topics at `now_ns`, in milliseconds.
    pub(super) fn owed_ms(&self, now_ns: u64) -> u32 {
        let ms = self
            .owed_until_ns
            .saturating_sub(now_ns)
            .div_ceil(1_000_000);
        u32::try_from(ms).unwrap_or(u32::MAX)
    }
}
