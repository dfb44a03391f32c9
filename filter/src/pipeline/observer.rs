//! Read-only consumers of finished requests: one record each, never a change to the bytes.

use super::facts::{Commits, FetchPositions};
use super::identity::Identity;
use super::plan::Outcome;
use crate::api::ApiLabel;
use crate::codec::inflight::Inflight;
use crate::codec::walk::Walked;
use crate::metrics::{MetricKey, MetricsSink};

/// One request, when its response has been matched to it (or when it was sent, for requests
/// the broker never answers).
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub api_key: i16,
    /// The API as metrics label it (`None`: a key the filter does not know).
    pub api: ApiLabel,
    pub api_version: i16,
    pub correlation_id: i32,
    /// When the request was read (the host's clock: nanoseconds since the Unix epoch).
    pub sent_at_ns: u64,
    pub identity: &'a Identity,
    /// The request frame's size, size field included.
    pub request_bytes: usize,
    /// The response frame's size, size field included; `None` when no response is expected.
    pub response_bytes: Option<usize>,
    pub latency_us: Option<u64>,
    /// The error code the client gets from the filter (a refused request), if any.
    pub refused_with: Option<i16>,
    pub outcome: Outcome,
    /// A Produce request's topics and records, when observers count per topic.
    pub produced: Option<&'a Walked>,
    /// A Fetch response's topics and records, when observers count per topic.
    pub fetched: Option<&'a Walked>,
    /// The offsets a group committed (an OffsetCommit the broker accepted), when observers
    /// follow consumer lag.
    pub commits: Option<&'a Commits>,
    /// The group a group request is about, when observers count group members.
    pub group: Option<&'a str>,
    /// A Fetch request's positions, when observers follow fetch-position lag.
    pub fetch_positions: Option<&'a FetchPositions>,
    /// Log ends a Produce request's response told (topic, partition, end), when observers
    /// follow log ends.
    pub log_ends: &'a [(String, i32, i64)],
    /// `throttle_time_ms` as the broker sent it, where the response leads with it (read only
    /// when observers want it).
    pub broker_throttle_ms: Option<i32>,
    /// The response's top-level `error_code`, where it has one near its start (likewise).
    pub error_code: Option<i16>,
}

impl<'a> RequestRecord<'a> {
    /// The record of `request`, answered by a response of `response_bytes` after
    /// `latency_us` (both `None` for a request the broker does not answer).
    pub fn of(
        request: &'a Inflight,
        identity: &'a Identity,
        response_bytes: Option<usize>,
        latency_us: Option<u64>,
    ) -> Self {
        Self {
            api_key: request.api_key,
            api: request.api,
            api_version: request.api_version,
            correlation_id: request.correlation_id,
            sent_at_ns: request.sent_at_ns,
            identity,
            request_bytes: request.request_bytes as usize,
            response_bytes,
            latency_us,
            refused_with: request.plan.refused,
            outcome: request.plan.outcome,
            produced: request.facts.as_ref().and_then(|f| f.produced.as_ref()),
            fetched: None,
            commits: request.facts.as_ref().and_then(|f| f.commits.as_ref()),
            group: request.facts.as_ref().and_then(|f| f.group.as_deref()),
            fetch_positions: request.facts.as_ref().and_then(|f| f.fetch.as_ref()),
            log_ends: request
                .facts
                .as_ref()
                .map_or(&[], |f| f.log_ends.as_slice()),
            broker_throttle_ms: request.response_head.throttle_ms,
            error_code: request.response_head.error_code,
        }
    }

    pub fn with_fetched(self, fetched: &'a Walked) -> Self {
        Self {
            fetched: Some(fetched),
            ..self
        }
    }
}

pub trait Observer {
    fn on_finished(&mut self, record: &RequestRecord<'_>, m: &mut dyn MetricsSink);

    /// Whether it counts per topic: Produce requests and Fetch responses are then walked
    /// (`RequestRecord::produced`, `fetched`), at the cost of a few host reads per frame.
    fn wants_topics(&self) -> bool {
        false
    }

    /// Whether it reads the connection's mTLS principal or source address (the host then
    /// reads them for it, two property reads per connection).
    fn needs_peer(&self) -> bool {
        false
    }

    /// Whether it reads the broker's throttle time and top-level error code from responses
    /// (`RequestRecord::broker_throttle_ms`, `RequestRecord::error_code`): a few more bytes of
    /// each response's head are then looked at.
    fn wants_response_heads(&self) -> bool {
        false
    }

    /// The VM's buffer of lines for an HTTP collector (observers that write lines keep it).
    fn set_collector(&mut self, _lines: &crate::observers::log_sink::SharedLines) {}

    /// Whether it follows partitions' log ends: Produce responses are then read whole for their
    /// base offsets (`RequestRecord::log_ends`).
    fn wants_log_ends(&self) -> bool {
        false
    }

    /// Whether it follows consumers' fetch positions: Fetch requests are then read whole
    /// (`RequestRecord::fetch_positions`).
    fn wants_fetch_positions(&self) -> bool {
        false
    }

    /// Whether it counts group members: group requests' group ids are then read
    /// (`RequestRecord::group`).
    fn wants_groups(&self) -> bool {
        false
    }

    /// Whether it follows committed offsets: OffsetCommit requests and their responses are then
    /// read whole (`RequestRecord::commits`).
    fn wants_commits(&self) -> bool {
        false
    }

    /// Report what is kept counted (about once a second, and when the connection ends).
    fn flush(&mut self, _m: &mut dyn MetricsSink) {}

    /// The connection has ended: report everything, give back what it held up (gauges).
    fn end(&mut self, m: &mut dyn MetricsSink) {
        self.flush(m);
    }
}

/// The per-API response counters and latency histograms.
#[derive(Debug, Default)]
pub struct ApiMetrics;

impl Observer for ApiMetrics {
    fn on_finished(&mut self, r: &RequestRecord<'_>, m: &mut dyn MetricsSink) {
        if let Some(us) = r.latency_us {
            m.add(MetricKey::Responses(r.api), 1);
            m.record(MetricKey::ResponseLatencyUs(r.api), us);
        }
    }
}
