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
    /// Requests whose names a rule rewrote.
    RewriteRequests,
    /// Responses whose names a rule rewrote (renamed or hid entries).
    RewriteResponses,
    /// Requests a rule refused (answered by the filter with a Kafka error).
    RewriteRefused,
    /// Frames under a rule that could not be decoded or mapped (refused, or the connection closed).
    RewriteErrors,
    /// Bytes of frames held whole in the filter to be rewritten (copied into the VM).
    RewriteBytesHeld,
    /// Frames a stage needed whole that were larger than `max_held_frame_bytes` (refused).
    HeldFrameTooLarge,
    /// Frames a stage needed whole when the VM's `max_held_bytes` was used up (refused).
    HeldBudgetExhausted,
    /// Chunks whose bytes the host could not provide.
    HostReadErrors,
    /// Requests reusing the correlation id of a request still waiting for its answer.
    RequestsDuplicateCorrelation,
    /// Answers to acks=0 Produce requests (Kafka sends none): dropped with stages configured.
    ResponsesAcks0,
    /// Log lines a client caused that were written at debug level instead (see `client_log`).
    LogLinesSuppressed,
}

/// `(tag_name, regex)` pairs for Envoy `stats_config.stats_tags`.
pub const STATS_TAGS: &[(&str, &str)] = &[
    // Per-API series, and per client and API (`kafka.client.<id>.principal.<p>.api.<api>.`).
    (
        "kafka_api",
        r"^wasmcustom\.kafka\.(?:client\.[^.]+\.principal\.[^.]+\.)?(api\.([^.]+)\.)",
    ),
    ("kafka_limit", r"^wasmcustom\.kafka\.(limit\.([^.]+)\.)"),
    (
        "kafka_limit_key",
        r"^wasmcustom\.kafka\.limit\.[^.]+\.(key\.([^.]+)\.)",
    ),
    (
        "kafka_client_id",
        r"^wasmcustom\.kafka\.(client\.([^.]+)\.)principal\.",
    ),
    (
        "kafka_principal",
        r"^wasmcustom\.kafka\.client\.[^.]+\.(principal\.([^.]+)\.)",
    ),
    (
        "kafka_client_software",
        r"^wasmcustom\.kafka\.client\.[^.]+\.principal\.[^.]+\.(software\.([^.]+)\.)version\.",
    ),
    // A topic keeps its dots (Kafka allows them): it is read up to what follows it, in the
    // per-client topic series and in the lag series.
    (
        "kafka_topic",
        r"^wasmcustom\.kafka\.(?:client\.[^.]+\.principal\.[^.]+|group\.[^.]+|limit\.[^.]+)\.(topic\.(.+)\.)(?:client_topic_[a-z_]+|partition\.[0-9]+\.(?:group_lag|client_fetch_lag)|limit_topic_[a-z_]+)$",
    ),
    (
        "kafka_group",
        r"^wasmcustom\.kafka\.(?:client\.[^.]+\.principal\.[^.]+\.)?(group\.([^.]+)\.)(?:topic\.|client_group_members$)",
    ),
    (
        "kafka_partition",
        r"^wasmcustom\.kafka\.(?:group\.[^.]+|client\.[^.]+\.principal\.[^.]+)\.topic\..+\.(partition\.([0-9]+)\.)(?:group_lag|client_fetch_lag)$",
    ),
    // The version keeps its dots: it is the last label, read up to the metric's own name.
    (
        "kafka_client_software_version",
        r"^wasmcustom\.kafka\.client\.[^.]+\.principal\.[^.]+\.software\.[^.]+\.(version\.(.+)\.)client_connections$",
    ),
    // A response's top-level error code, per client and API.
    (
        "kafka_error",
        r"^wasmcustom\.kafka\.client\.[^.]+\.principal\.[^.]+\.api\.[^.]+\.(error\.([^.]+)\.)client_response_errors$",
    ),
    // ACL decisions, by operation and resource type (`kafka.acl.operation.<Op>.resource.<t>.`).
    (
        "kafka_acl_operation",
        r"^wasmcustom\.kafka\.acl\.(operation\.([^.]+)\.)",
    ),
    (
        "kafka_acl_resource",
        r"^wasmcustom\.kafka\.acl\.operation\.[^.]+\.(resource\.([^.]+)\.)",
    ),
];

/// Slots per per-API family: every API key the crate knows plus `unknown`.
const API_SLOTS: usize = 256;
const FIXED_BASE: usize = 3 * API_SLOTS;

impl MetricKey {
    /// Number of distinct [`MetricKey::index`] values: hosts can keep metric ids in a flat array.
    pub const COUNT: usize = FIXED_BASE + 25;

    /// A dense index, so hosts find a metric's id without hashing on the hot path.
    pub fn index(&self) -> usize {
        let api_slot = |api: &ApiLabel| match api {
            // Known API keys are small non-negative numbers (0..=92 today); the last slot is
            // `unknown`, and so is anything that would not fit.
            Some(key) => usize::try_from(*key as i16)
                .ok()
                .filter(|k| *k < API_SLOTS - 1)
                .unwrap_or(API_SLOTS - 1),
            None => API_SLOTS - 1,
        };
        match self {
            MetricKey::Requests(api) => api_slot(api),
            MetricKey::Responses(api) => API_SLOTS + api_slot(api),
            MetricKey::ResponseLatencyUs(api) => 2 * API_SLOTS + api_slot(api),
            MetricKey::RequestBytes => FIXED_BASE,
            MetricKey::ResponseBytes => FIXED_BASE + 1,
            MetricKey::ConnectionsTotal => FIXED_BASE + 2,
            MetricKey::ConnectionsActive => FIXED_BASE + 3,
            MetricKey::RequestsUnknownApi => FIXED_BASE + 4,
            MetricKey::RequestsUnknownVersion => FIXED_BASE + 5,
            MetricKey::FramesUndecodable => FIXED_BASE + 6,
            MetricKey::FramesOversized => FIXED_BASE + 7,
            MetricKey::FramesInvalidSize => FIXED_BASE + 8,
            MetricKey::ResponsesUnmatched => FIXED_BASE + 9,
            MetricKey::RequestsUnanswered => FIXED_BASE + 10,
            MetricKey::InflightOverflow => FIXED_BASE + 11,
            MetricKey::ConnectionsClosedByPolicy => FIXED_BASE + 12,
            MetricKey::ConnectionsBypassed => FIXED_BASE + 13,
            MetricKey::RewriteRequests => FIXED_BASE + 14,
            MetricKey::RewriteResponses => FIXED_BASE + 15,
            MetricKey::RewriteRefused => FIXED_BASE + 16,
            MetricKey::RewriteErrors => FIXED_BASE + 17,
            MetricKey::RewriteBytesHeld => FIXED_BASE + 18,
            MetricKey::HeldFrameTooLarge => FIXED_BASE + 19,
            MetricKey::HeldBudgetExhausted => FIXED_BASE + 20,
            MetricKey::HostReadErrors => FIXED_BASE + 21,
            MetricKey::RequestsDuplicateCorrelation => FIXED_BASE + 22,
            MetricKey::ResponsesAcks0 => FIXED_BASE + 23,
            MetricKey::LogLinesSuppressed => FIXED_BASE + 24,
        }
    }

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
            MetricKey::RewriteRequests => "rewrite.requests",
            MetricKey::RewriteResponses => "rewrite.responses",
            MetricKey::RewriteRefused => "rewrite.refused",
            MetricKey::RewriteErrors => "rewrite.errors",
            MetricKey::RewriteBytesHeld => "rewrite.bytes_held",
            MetricKey::HeldFrameTooLarge => "held.frames_too_large",
            MetricKey::HeldBudgetExhausted => "held.budget_exhausted",
            MetricKey::HostReadErrors => "host_read_errors",
            MetricKey::RequestsDuplicateCorrelation => "requests_duplicate_correlation",
            MetricKey::ResponsesAcks0 => "responses_acks0",
            MetricKey::LogLinesSuppressed => "log_lines_suppressed",
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

    #[test]
    fn shipped_bootstrap_carries_the_stats_tags() {
        for yaml in [
            include_str!("../../../envoy-config/envoy.yaml"),
            include_str!("../../../envoy-config/envoy-brokers.yaml"),
        ] {
            for (tag, regex) in STATS_TAGS {
                assert!(
                    yaml.contains(&format!("- tag_name: {tag}\n    regex: '{regex}'")),
                    "{tag}"
                );
            }
        }
    }

    #[test]
    fn indexes_are_dense_and_distinct() {
        let mut keys = vec![
            MetricKey::RequestBytes,
            MetricKey::ResponseBytes,
            MetricKey::ConnectionsTotal,
            MetricKey::ConnectionsActive,
            MetricKey::RequestsUnknownApi,
            MetricKey::RequestsUnknownVersion,
            MetricKey::FramesUndecodable,
            MetricKey::FramesOversized,
            MetricKey::FramesInvalidSize,
            MetricKey::ResponsesUnmatched,
            MetricKey::RequestsUnanswered,
            MetricKey::InflightOverflow,
            MetricKey::ConnectionsClosedByPolicy,
            MetricKey::ConnectionsBypassed,
            MetricKey::RewriteRequests,
            MetricKey::RewriteResponses,
            MetricKey::RewriteRefused,
            MetricKey::RewriteErrors,
            MetricKey::RewriteBytesHeld,
            MetricKey::HeldFrameTooLarge,
            MetricKey::HeldBudgetExhausted,
            MetricKey::HostReadErrors,
            MetricKey::RequestsDuplicateCorrelation,
            MetricKey::ResponsesAcks0,
            MetricKey::LogLinesSuppressed,
        ];
        for api in ApiKey::iter().map(Some).chain([None]) {
            keys.push(MetricKey::Requests(api));
            keys.push(MetricKey::Responses(api));
            keys.push(MetricKey::ResponseLatencyUs(api));
        }
        let mut seen = std::collections::HashMap::new();
        for k in keys {
            assert!(k.index() < MetricKey::COUNT, "{k:?}");
            if let Some(other) = seen.insert(k.index(), k) {
                panic!("{k:?} and {other:?} share index {}", k.index());
            }
        }
    }
}
