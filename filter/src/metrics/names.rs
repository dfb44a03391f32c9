use crate::api::{label_name, ApiLabel};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the filter emits. Per-API metrics are labelled by API; unknown API keys share
/// the `unknown` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKey {
    Requests(ApiLabel),
    Responses(ApiLabel),
    ResponseLatencyUs(ApiLabel),
    /// Bytes from clients to brokers.
    RequestBytes,
    /// Bytes from brokers to clients.
    ResponseBytes,
    ConnectionsTotal,
    ConnectionsActive,
    RequestsUnknownApi,
    RequestsUnknownVersion,
    /// Frames whose header could not be decoded (forwarded untouched).
    FramesUndecodable,
    /// Frames over `max_frame_bytes` (the connection's stream is no longer framed).
    FramesOversized,
    /// Size fields that are negative (the stream is not Kafka, or is corrupt).
    FramesInvalidSize,
    /// Responses whose correlation id matches no request in flight.
    ResponsesUnmatched,
    /// Requests that were never answered (overtaken by a later response).
    RequestsUnanswered,
    /// Requests forgotten because the correlation table was full.
    InflightOverflow,
    ConnectionsClosedByPolicy,
    ConnectionsBypassed,
}

/// `(tag_name, regex)` pairs for Envoy `stats_config.stats_tags`.
pub const STATS_TAGS: &[(&str, &str)] = &[("kafka_api", r"^wasmcustom\.kafka\.(api\.([^.]+)\.)")];

impl MetricKey {
    pub fn kind(&self) -> MetricKind {
        match self {
            MetricKey::ResponseLatencyUs(_) => MetricKind::Histogram,
            MetricKey::ConnectionsActive => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }

    /// The name given to the host. Envoy adds the `wasmcustom.` prefix.
    pub fn name(&self) -> String {
        let fixed = match self {
            MetricKey::Requests(api) => return format!("kafka.api.{}.requests", label_name(*api)),
            MetricKey::Responses(api) => {
                return format!("kafka.api.{}.responses", label_name(*api))
            }
            MetricKey::ResponseLatencyUs(api) => {
                return format!("kafka.api.{}.response_latency_us", label_name(*api))
            }
            MetricKey::RequestBytes => "request_bytes",
            MetricKey::ResponseBytes => "response_bytes",
            MetricKey::ConnectionsTotal => "connections_total",
            MetricKey::ConnectionsActive => "connections_active",
            MetricKey::RequestsUnknownApi => "requests_unknown_api",
            MetricKey::RequestsUnknownVersion => "requests_unknown_version",
            MetricKey::FramesUndecodable => "frames_undecodable",
            MetricKey::FramesOversized => "frames_oversized",
            MetricKey::FramesInvalidSize => "frames_invalid_size",
            MetricKey::ResponsesUnmatched => "responses_unmatched",
            MetricKey::RequestsUnanswered => "requests_unanswered",
            MetricKey::InflightOverflow => "inflight_overflow",
            MetricKey::ConnectionsClosedByPolicy => "connections_closed_by_policy",
            MetricKey::ConnectionsBypassed => "connections_bypassed",
        };
        format!("kafka.{fixed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn names_fit_the_stats_tag_regex_shape() {
        assert_eq!(
            MetricKey::Requests(Some(ApiKey::Produce)).name(),
            "kafka.api.Produce.requests"
        );
        assert_eq!(
            MetricKey::ResponseLatencyUs(None).name(),
            "kafka.api.unknown.response_latency_us"
        );
        assert_eq!(MetricKey::RequestBytes.name(), "kafka.request_bytes");
        // Labels must not contain the separator, or the tag regex would cut them.
        for api in ApiKey::iter() {
            let name = MetricKey::Requests(Some(api)).name();
            assert_eq!(name.split('.').count(), 4, "{name}");
        }
    }
}
