//! Read-only consumers of finished requests: one record each, never a change to the bytes.

use super::identity::Identity;
use super::plan::Outcome;
use crate::api::classify;
use crate::metrics::{MetricKey, MetricsSink};

/// One request, when its response has been matched to it (or when it was sent, for requests
/// the broker never answers).
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub identity: &'a Identity,
    /// The request frame's size, size field included.
    pub request_bytes: usize,
    /// The response frame's size, size field included; `None` when no response is expected.
    pub response_bytes: Option<usize>,
    pub latency_us: Option<u64>,
    /// The error code the client gets from the filter (a refused request), if any.
    pub refused_with: Option<i16>,
    pub outcome: Outcome,
}

pub trait Observer {
    fn on_finished(&mut self, record: &RequestRecord<'_>, m: &mut dyn MetricsSink);
}

/// The per-API response counters and latency histograms.
#[derive(Debug, Default)]
pub struct ApiMetrics;

impl Observer for ApiMetrics {
    fn on_finished(&mut self, r: &RequestRecord<'_>, m: &mut dyn MetricsSink) {
        if let Some(us) = r.latency_us {
            let label = classify(r.api_key);
            m.add(MetricKey::Responses(label), 1);
            m.record(MetricKey::ResponseLatencyUs(label), us);
        }
    }
}
