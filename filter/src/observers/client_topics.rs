//! Per-client, per-topic produced and fetched bytes and records: from the walked Produce
//! requests and Fetch responses (`RequestRecord::produced`, `fetched`), never from the records
//! themselves. Distinct topics with series of their own are capped per Envoy process; the rest
//! count under `other`.

use std::collections::HashMap;
use std::rc::Rc;

use super::clients::OTHER;
use crate::codec::walk::{id_hex, TopicRef, Walked};
use crate::connection::topic_id_key;
use crate::limits::BucketStore;
use crate::metrics::{topic_label, MetricsSink};

/// The admission scope in the shared store (`~` cannot start a limit's name).
const SCOPE: &str = "~topics";
/// Topics one connection keeps a label for (the admitted ones and `other`: series are few).
const MAX_LABELS_PER_CONNECTION: usize = 10_000;

#[derive(Debug, Default)]
struct Counts {
    produced_bytes: i64,
    produced_records: i64,
    fetched_bytes: i64,
    fetched_records: i64,
}

struct Series {
    label: String,
    names: [String; 4],
    counts: Counts,
}

/// One connection's per-topic counts since the last flush, by topic label.
pub struct TopicCounters {
    store: Rc<dyn BucketStore>,
    max_topics: u32,
    /// Topic as the frame names it -> its series (admitted, or `other`).
    labels: HashMap<TopicRef, usize>,
    /// At most one per admitted topic, and `other`.
    series: Vec<Series>,
    last: Option<(TopicRef, usize)>,
}

/// A topic's label: its name (Kafka's legal characters, dots kept); for a topic named by id
/// (Fetch v13+), the name a Metadata response gave it, else `id-<hex>` and `false` (not final:
/// the name may be learned later).
fn label_of(topic: &TopicRef, store: &dyn BucketStore) -> (String, bool) {
    match topic {
        TopicRef::Name(n) => (topic_label(n), true),
        TopicRef::Id(id) => match store.recall(&topic_id_key(id)) {
            Some(name) => (topic_label(&name), true),
            None => (format!("id-{}", id_hex(id)), false),
        },
    }
}

impl TopicCounters {
    pub fn new(store: Rc<dyn BucketStore>, max_topics: u32) -> Self {
        Self {
            store,
            max_topics,
            labels: HashMap::new(),
            series: Vec::new(),
            last: None,
        }
    }

    /// The series of `topic`: the last one asked for is found without hashing (a connection
    /// mostly produces to or fetches from the same topics).
    fn series(&mut self, topic: &TopicRef, prefix: &str) -> Option<&mut Series> {
        let at = match &self.last {
            Some((t, at)) if t == topic => *at,
            _ => {
                let at = self.find(topic, prefix);
                self.last = Some((topic.clone(), at));
                at
            }
        };
        self.series.get_mut(at)
    }

    fn find(&mut self, topic: &TopicRef, prefix: &str) -> usize {
        if let Some(at) = self.labels.get(topic) {
            return *at;
        }
        let (label, known) = label_of(topic, &*self.store);
        let label = if self.store.admit(SCOPE, &label, self.max_topics) {
            label
        } else {
            OTHER.to_string()
        };
        let at = match self.series.iter().position(|s| s.label == label) {
            Some(at) => at,
            None => {
                let base = format!("{prefix}topic.{label}.client_topic_");
                self.series.push(Series {
                    names: [
                        "produced_bytes",
                        "produced_records",
                        "fetched_bytes",
                        "fetched_records",
                    ]
                    .map(|what| format!("{base}{what}")),
                    counts: Counts::default(),
                    label,
                });
                self.series.len() - 1
            }
        };
        // Bounded whatever names a client invents: past the cap they are all `other`.
        if known && self.labels.len() < MAX_LABELS_PER_CONNECTION {
            self.labels.insert(topic.clone(), at);
        }
        at
    }

    /// Count a finished request's walked frames under the client's series `prefix`.
    pub fn count(&mut self, produced: Option<&Walked>, fetched: Option<&Walked>, prefix: &str) {
        for t in produced.map_or(&[][..], |w| &w.topics) {
            let Some(s) = self.series(&t.topic, prefix) else {
                continue;
            };
            let c = &mut s.counts;
            c.produced_bytes = c.produced_bytes.saturating_add(t.bytes as i64);
            c.produced_records = c.produced_records.saturating_add(t.records as i64);
        }
        for t in fetched.map_or(&[][..], |w| &w.topics) {
            let Some(s) = self.series(&t.topic, prefix) else {
                continue;
            };
            let c = &mut s.counts;
            c.fetched_bytes = c.fetched_bytes.saturating_add(t.bytes as i64);
            c.fetched_records = c.fetched_records.saturating_add(t.records as i64);
        }
    }

    pub fn flush(&mut self, m: &mut dyn MetricsSink) {
        for s in &mut self.series {
            let c = std::mem::take(&mut s.counts);
            let values = [
                c.produced_bytes,
                c.produced_records,
                c.fetched_bytes,
                c.fetched_records,
            ];
            for (name, v) in s.names.iter().zip(values) {
                if v > 0 {
                    m.add_named(name, v);
                }
            }
        }
    }
}
