//! Committed consumer lag, kept current from the traffic alone (no request of its own to the
//! broker): per group, topic and partition, the partition's log end (the high watermark of the
//! Fetch responses passing the filter, and where the appends of Produce requests ended) minus the
//! offset the group last committed (OffsetCommit and TxnOffsetCommit requests the broker
//! accepted) -- the definition Burrow and kafka-lag-exporter use.
//!
//! Log ends and commits are kept in the store every worker shares, so a commit seen on one
//! worker and a fetch on another make one figure. A gauge per (group, topic, partition) is set
//! whenever either side moves; distinct series are capped per Envoy process.

use std::collections::HashMap;
use std::rc::Rc;

use super::fetch_lag::FetchLag;
use crate::connection::topic_name;
use crate::limits::BucketStore;
use crate::metrics::{metric_label, topic_label, MetricsSink};
use crate::pipeline::{Observer, Outcome, RequestRecord};

/// `consumer_lag` in the plugin configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagConfig {
    /// Distinct (group, topic, partition) series, per Envoy process (and as many fetch-lag
    /// series).
    pub max_series: u32,
    /// Fetch-position lag per client too (see `fetch_lag`): Fetch requests are read whole.
    pub fetch_lag: bool,
}

pub const DEFAULT_MAX_LAG_SERIES: u32 = 10_000;
const SCOPE: &str = "~lag";
/// Groups followed per partition (their names are kept together in one shared entry).
const MAX_GROUPS_PER_PARTITION: usize = 64;
/// Log ends one connection remembers having reported (so an unchanged one costs nothing).
const MAX_ENDS_PER_CONNECTION: usize = 10_000;
/// How often one connection shares a partition's log end (the rest wait for its flush).
const SHARE_EVERY_NS: u64 = 1_000_000_000;

pub struct ConsumerLag {
    config: LagConfig,
    store: Rc<dyn BucketStore>,
    /// Per partition, the end this connection last shared and when (ns).
    reported_ends: HashMap<(String, i32), (i64, u64)>,
    /// Ends seen within a second of the last one shared, for the next flush.
    pending_ends: HashMap<(String, i32), i64>,
    /// The time of the last request this connection finished (the flush's clock).
    last_ns: u64,
    fetch_lag: Option<FetchLag>,
}

fn end_key(topic: &str, partition: i32) -> String {
    format!("lag/end/{partition}/{topic}")
}

fn commit_key(group: &str, topic: &str, partition: i32) -> String {
    format!("lag/commit/{partition}/{topic}\n{group}")
}

fn groups_key(topic: &str, partition: i32) -> String {
    format!("lag/groups/{partition}/{topic}")
}

impl ConsumerLag {
    pub fn new(config: LagConfig, store: Rc<dyn BucketStore>) -> Self {
        Self {
            fetch_lag: config
                .fetch_lag
                .then(|| FetchLag::new(Rc::clone(&store), config.max_series)),
            config,
            store,
            reported_ends: HashMap::new(),
            pending_ends: HashMap::new(),
            last_ns: 0,
        }
    }

    fn groups(&self, topic: &str, partition: i32) -> Vec<String> {
        self.store
            .text(&groups_key(topic, partition))
            .map(|s| s.split('\n').map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn follow_group(&self, topic: &str, partition: i32, group: &str) {
        let mut groups = self.groups(topic, partition);
        if groups.iter().any(|g| g == group) || groups.len() >= MAX_GROUPS_PER_PARTITION {
            return;
        }
        groups.push(group.to_string());
        self.store
            .set_text(&groups_key(topic, partition), &groups.join("\n"));
    }

    /// A partition's log end seen at `now_ns` (a Fetch response's high watermark, where a
    /// Produce request's append ended, a ListOffsets answer): shared at once if this connection
    /// has not shared one for the partition within [`SHARE_EVERY_NS`], kept for the next flush
    /// otherwise (a busy producer would otherwise update the shared store on every request).
    fn log_end(
        &mut self,
        topic: &str,
        partition: i32,
        end: i64,
        now_ns: u64,
        m: &mut dyn MetricsSink,
    ) {
        let seen = (topic.to_string(), partition);
        match self.reported_ends.get(&seen) {
            Some(&(last, _)) if last >= end => return,
            Some(&(_, at)) if now_ns.saturating_sub(at) < SHARE_EVERY_NS => {
                if self.pending_ends.len() < MAX_ENDS_PER_CONNECTION {
                    let e = self.pending_ends.entry(seen).or_insert(end);
                    *e = (*e).max(end);
                }
                return;
            }
            _ => {}
        }
        self.share_end(seen, end, now_ns, m);
    }

    /// Ends kept for later, shared now (before a commit is reported, and on flush).
    fn share_pending(&mut self, now_ns: u64, m: &mut dyn MetricsSink) {
        let pending: Vec<_> = self.pending_ends.drain().collect();
        for (seen, end) in pending {
            self.share_end(seen, end, now_ns, m);
        }
    }

    /// Raise the shared end, and set the lag of the groups following the partition.
    fn share_end(&mut self, seen: (String, i32), end: i64, now_ns: u64, m: &mut dyn MetricsSink) {
        if self.reported_ends.len() >= MAX_ENDS_PER_CONNECTION {
            self.reported_ends.clear();
        }
        let (topic, partition) = (seen.0.clone(), seen.1);
        let topic = topic.as_str();
        self.reported_ends.insert(seen, (end, now_ns));
        let end = self.store.raise_number(&end_key(topic, partition), end);
        for group in self.groups(topic, partition) {
            if let Some(c) = self.store.number(&commit_key(&group, topic, partition)) {
                self.report(&group, topic, partition, end, c, m);
            }
        }
    }

    /// Set the lag gauge of one group's partition, if its series is admitted.
    fn report(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        end: i64,
        committed: i64,
        m: &mut dyn MetricsSink,
    ) {
        let (group, topic) = (metric_label(group), topic_label(topic));
        let series = format!("{group}/{partition}/{topic}");
        if !self.store.admit(SCOPE, &series, self.config.max_series) {
            m.add_named("lag_series_overflow", 1);
            return;
        }
        let lag = u64::try_from(end.saturating_sub(committed)).unwrap_or(0);
        let name = format!("group.{group}.topic.{topic}.partition.{partition}.group_lag");
        m.set_gauge_named(&name, lag);
    }
}

impl Observer for ConsumerLag {
    fn wants_topics(&self) -> bool {
        true
    }

    fn wants_commits(&self) -> bool {
        true
    }

    fn wants_log_ends(&self) -> bool {
        true
    }

    fn wants_fetch_positions(&self) -> bool {
        self.fetch_lag.is_some()
    }

    fn flush(&mut self, m: &mut dyn MetricsSink) {
        if let Some(f) = &mut self.fetch_lag {
            f.flush(m);
        }
        self.share_pending(self.last_ns, m);
    }

    fn on_finished(&mut self, r: &RequestRecord<'_>, m: &mut dyn MetricsSink) {
        self.last_ns = self.last_ns.max(r.sent_at_ns);
        if let Some(f) = &mut self.fetch_lag {
            f.on_fetch(r);
        }
        // Log ends and commits live in the store every connection shares, under the names the
        // client used: a request or response a name-conversion rule rewrote names the client's
        // view (a canary's `orders` is the broker's `orders-canary`), which must not move the
        // figures of the topic and group the broker knows by that name. A refused request
        // committed nothing.
        if r.outcome.has(Outcome::REWRITTEN)
            || r.outcome.has(Outcome::RESPONSE_REWRITTEN)
            || r.refused_with.is_some()
        {
            return;
        }
        for t in r.fetched.map_or(&[][..], |w| &w.topics) {
            let Some(topic) = topic_name(&t.topic, &*self.store) else {
                continue;
            };
            for p in &t.partitions {
                if let Some(end) = p.end {
                    self.log_end(&topic, p.partition, end, r.sent_at_ns, m);
                }
            }
        }
        for (topic, partition, end) in r.log_ends {
            self.log_end(topic, *partition, *end, r.sent_at_ns, m);
        }
        if let Some(c) = r.commits {
            // The commit's lag against the latest ends this connection saw.
            self.share_pending(r.sent_at_ns, m);
            for o in &c.offsets {
                self.store
                    .set_number(&commit_key(&c.group, &o.topic, o.partition), o.offset);
                self.follow_group(&o.topic, o.partition, &c.group);
                if let Some(end) = self.store.number(&end_key(&o.topic, o.partition)) {
                    self.report(&c.group, &o.topic, o.partition, end, o.offset, m);
                }
            }
        }
    }
}
