use std::collections::HashMap;

use super::{MetricKey, MetricsSink};

/// A sink that keeps everything in memory: for unit tests and the native benchmarks.
#[derive(Debug, Default)]
pub struct RecordingSink {
    pub values: HashMap<MetricKey, i64>,
    pub samples: HashMap<MetricKey, Vec<u64>>,
    pub named: HashMap<String, i64>,
    pub named_samples: HashMap<String, Vec<u64>>,
}

impl RecordingSink {
    pub fn get(&self, key: MetricKey) -> i64 {
        self.values.get(&key).copied().unwrap_or(0)
    }

    pub fn named(&self, name: &str) -> i64 {
        self.named.get(name).copied().unwrap_or(0)
    }
}

impl MetricsSink for RecordingSink {
    fn add(&mut self, key: MetricKey, delta: i64) {
        *self.values.entry(key).or_insert(0) += delta;
    }

    fn record(&mut self, key: MetricKey, value: u64) {
        self.samples.entry(key).or_default().push(value);
    }

    fn add_named(&mut self, name: &str, delta: i64) {
        *self.named.entry(name.to_string()).or_insert(0) += delta;
    }

    fn gauge_named(&mut self, name: &str, delta: i64) {
        *self.named.entry(name.to_string()).or_insert(0) += delta;
    }

    fn set_gauge_named(&mut self, name: &str, value: u64) {
        self.named
            .insert(name.to_string(), i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn record_named(&mut self, name: &str, value: u64) {
        self.named_samples
            .entry(name.to_string())
            .or_default()
            .push(value);
    }
}
