//! The filter's metrics: names, kinds, and the sink the core reports to.
//!
//! Labels are encoded in the metric name (`kafka.api.<Api>.requests`) and turned into Prometheus
//! labels by Envoy `stats_tags` (see `envoy-config/envoy.yaml`); [`STATS_TAGS`] holds the
//! matching regexes so docs, configs and tests use one source.

mod batch;
mod labels;
mod names;
mod recording;

pub use batch::CounterBatch;
pub use labels::{metric_label, software_version_label, topic_label};
pub use names::{MetricKey, MetricKind, STATS_TAGS};
pub use recording::RecordingSink;

/// Where the core reports what it saw. The host caches one metric per key.
pub trait MetricsSink {
    /// Add `delta` to a counter or gauge.
    fn add(&mut self, key: MetricKey, delta: i64);
    /// Record one histogram sample.
    fn record(&mut self, key: MetricKey, value: u64);
    /// Add `delta` to a counter whose name is made at run time (labels from the configuration,
    /// such as a limit's name), under `kafka.`: the host defines it on first use.
    fn add_named(&mut self, name: &str, delta: i64);
    /// Add `delta` to a gauge whose name is made at run time, as [`Self::add_named`].
    fn gauge_named(&mut self, name: &str, delta: i64);
    /// Record one sample of a histogram whose name is made at run time.
    fn record_named(&mut self, name: &str, value: u64);
    /// Set a gauge whose name is made at run time to `value`.
    fn set_gauge_named(&mut self, name: &str, value: u64);
}

/// A size or count as a counter delta (saturating: a delta never wraps negative).
pub fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
