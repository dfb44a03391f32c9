//! Fetch-position lag per client, topic and partition: the partition's high watermark (the
//! last stable offset for a read-committed consumer) in a Fetch response, minus the offset the
//! request fetched from -- how far the consumer's position is behind the log, as the client's
//! own `records-lag` metric says, seen from the proxy.
//!
//! Fetch sessions (KIP-227, Fetch v7+) are followed per connection: a full fetch sets the
//! session's partitions and offsets, an incremental one updates those it lists and drops the
//! forgotten ones, and a partition the response leaves out keeps its last figure. Topics fetched
//! by id (v13+) are named from Metadata responses. Gauges are set at most once a second per
//! connection (on flush), only when they changed; distinct series are capped per Envoy process.

use std::collections::HashMap;
use std::rc::Rc;

use crate::connection::topic_name;
use crate::limits::BucketStore;
use crate::metrics::{metric_label, topic_label, MetricsSink};
use crate::pipeline::RequestRecord;

const SCOPE: &str = "~fetch-lag";
/// Partitions one connection's session is followed for (a consumer's assignment).
const MAX_POSITIONS: usize = 4096;
const NONE: &str = "none";
/// Kafka's longest topic name: longer ones name no topic, and are not followed.
const MAX_TOPIC_NAME: usize = 249;

/// A topic name's key in a connection's positions (FNV-1a: not for secrecy, only to keep an
/// entry small whatever the request names).
fn name_key(name: &str) -> Option<u64> {
    (name.len() <= MAX_TOPIC_NAME).then(|| {
        name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    })
}

pub struct FetchLag {
    store: Rc<dyn BucketStore>,
    max_series: u32,
    /// The fetch session's partitions (by a hash of the topic's name: a request may name
    /// topics of any length, and only the response's names are labels) and the offsets last
    /// fetched from.
    positions: HashMap<(u64, i32), i64>,
    /// Figures not reported yet, by gauge name.
    pending: HashMap<String, u64>,
    /// What this connection last set each gauge to (admitted series only).
    reported: HashMap<String, u64>,
}

impl FetchLag {
    pub fn new(store: Rc<dyn BucketStore>, max_series: u32) -> Self {
        Self {
            store,
            max_series,
            positions: HashMap::new(),
            pending: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    /// A finished Fetch: follow its session, and work out the lag of every partition its
    /// response gave a log end for.
    pub fn on_fetch(&mut self, r: &RequestRecord<'_>) {
        let Some(fetch) = r.fetch_positions else {
            return;
        };
        let store = &*self.store;
        if fetch.session_epoch <= 0 {
            // A full fetch: the session (or the sessionless request) is what it lists.
            self.positions.clear();
        }
        for (topic, partition) in &fetch.forgotten {
            if let Some(key) = topic_name(topic, store).and_then(|n| name_key(&n)) {
                self.positions.remove(&(key, *partition));
            }
        }
        for (topic, partition, offset) in &fetch.partitions {
            let Some(key) = topic_name(topic, store).and_then(|n| name_key(&n)) else {
                continue;
            };
            if self.positions.len() < MAX_POSITIONS
                || self.positions.contains_key(&(key, *partition))
            {
                self.positions.insert((key, *partition), *offset);
            }
        }
        let Some(fetched) = r.fetched else {
            return;
        };
        let id = r.identity;
        let client = id
            .client_id
            .as_deref()
            .map_or_else(|| NONE.into(), metric_label);
        let principal = id
            .peer
            .principal
            .as_deref()
            .map_or_else(|| NONE.into(), metric_label);
        for t in &fetched.topics {
            let Some(name) = topic_name(&t.topic, store) else {
                continue;
            };
            let Some(key) = name_key(&name) else {
                continue;
            };
            for p in &t.partitions {
                let (partition, end) = match (fetch.read_committed, p.end, p.stable_end) {
                    (false, Some(end), _) | (true, _, Some(end)) => (p.partition, end),
                    _ => continue,
                };
                let Some(&offset) = self.positions.get(&(key, partition)) else {
                    continue;
                };
                // Where the consumer stands once it has the records this response carries.
                let position = offset.max(p.next_offset);
                let lag = u64::try_from(end.saturating_sub(position)).unwrap_or(0);
                let gauge = format!(
                    "client.{client}.principal.{principal}.topic.{}.partition.{partition}.client_fetch_lag",
                    topic_label(&name)
                );
                if self.pending.len() < MAX_POSITIONS || self.pending.contains_key(&gauge) {
                    self.pending.insert(gauge, lag);
                }
            }
        }
    }

    /// Set the gauges that changed since the last flush.
    pub fn flush(&mut self, m: &mut dyn MetricsSink) {
        for (gauge, lag) in self.pending.drain() {
            match self.reported.get(&gauge) {
                Some(&last) if last == lag => continue,
                Some(_) => {}
                None => {
                    if !self.store.admit(SCOPE, &gauge, self.max_series) {
                        m.add_named("lag_series_overflow", 1);
                        continue;
                    }
                    if self.reported.len() >= MAX_POSITIONS {
                        self.reported.clear();
                    }
                }
            }
            m.set_gauge_named(&gauge, lag);
            self.reported.insert(gauge, lag);
        }
    }
}
