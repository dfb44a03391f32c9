use super::MetricKey;

/// Counter deltas held in the VM between flushes.
///
/// Every host call costs Envoy about a thousand instructions (a V8 boundary crossing each way),
/// and the per-API request and response counters move on every frame: holding them here turns
/// two host calls per request into one per API per flush. Only those hot counters are held;
/// everything rarer (errors, refusals, connection gauges) is reported at once, so an operator
/// never waits for an anomaly to show up.
#[derive(Debug)]
pub struct CounterBatch {
    /// Per [`MetricKey::index`]: the delta not yet reported.
    pending: Vec<i64>,
    /// Keys with a non-zero pending delta, in the order they first moved.
    dirty: Vec<MetricKey>,
}

impl Default for CounterBatch {
    fn default() -> Self {
        Self {
            pending: vec![0; MetricKey::COUNT],
            dirty: Vec::new(),
        }
    }
}

impl CounterBatch {
    /// Whether `key` is held here rather than reported on every change.
    pub fn holds(key: MetricKey) -> bool {
        matches!(key, MetricKey::Requests(_) | MetricKey::Responses(_))
    }

    /// Hold `delta` for `key`; false if `key` is not one that is held (report it directly).
    pub fn add(&mut self, key: MetricKey, delta: i64) -> bool {
        if !Self::holds(key) {
            return false;
        }
        if let Some(slot) = self.pending.get_mut(key.index()) {
            if *slot == 0 {
                self.dirty.push(key);
            }
            *slot = slot.saturating_add(delta);
            true
        } else {
            false
        }
    }

    /// Hand every pending delta to `report` and forget it.
    pub fn drain(&mut self, mut report: impl FnMut(MetricKey, i64)) {
        for key in self.dirty.drain(..) {
            if let Some(slot) = self.pending.get_mut(key.index()) {
                let delta = std::mem::take(slot);
                if delta != 0 {
                    report(key, delta);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn holds_only_the_per_api_counters() {
        let mut b = CounterBatch::default();
        assert!(b.add(MetricKey::Requests(Some(ApiKey::Produce)), 1));
        assert!(b.add(MetricKey::Responses(None), 1));
        assert!(!b.add(MetricKey::ResponseLatencyUs(None), 5));
        assert!(!b.add(MetricKey::ConnectionsActive, 1));
        assert!(!b.add(MetricKey::RewriteRefused, 1));
        assert!(!b.add(MetricKey::FramesUndecodable, 1));
    }

    #[test]
    fn drain_reports_each_key_once_with_its_sum_then_nothing() {
        let mut b = CounterBatch::default();
        let produce = MetricKey::Requests(Some(ApiKey::Produce));
        let fetch = MetricKey::Responses(Some(ApiKey::Fetch));
        for _ in 0..1000 {
            b.add(produce, 1);
        }
        b.add(fetch, 3);
        b.add(MetricKey::Requests(None), 2);
        let mut got = Vec::new();
        b.drain(|k, d| got.push((k, d)));
        assert_eq!(
            got,
            vec![(produce, 1000), (fetch, 3), (MetricKey::Requests(None), 2)]
        );
        assert!(b.is_empty());
        b.drain(|k, d| panic!("{k:?} {d} reported twice"));
        // A key moves again after a drain.
        b.add(produce, 1);
        let mut again = Vec::new();
        b.drain(|k, d| again.push((k, d)));
        assert_eq!(again, vec![(produce, 1)]);
    }
}
