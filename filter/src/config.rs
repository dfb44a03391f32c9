//! Plugin configuration: the JSON document given to Envoy (`configuration`) or to Istio
//! (`WasmPlugin.spec.pluginConfig`). Parsing is a pure function so that every bad document is
//! rejected at configure time, with the offending field named, before any traffic flows.

use std::rc::Rc;

use serde::Deserialize;

use crate::acl::{parse_acls, AclError, Policy, RawAcls};
use crate::api::api_key_named;
use crate::brokers::{self, BrokerAddresses, RawBrokerAddresses};
use crate::limits::{parse_limits, Limit, LimitError, RawLimit};
use crate::matching::RawMatch;
use crate::observers::log_sink::{parse_http_sink, RawHttpSink};
use crate::observers::{
    ClientMetricsConfig, LagConfig, RequestLogConfig, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_LAG_SERIES,
    DEFAULT_MAX_TOPICS,
};
use crate::topics::rules::{parse_rules, RawRule, Rule, RuleError};

/// Kafka's own default for `socket.request.max.bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;
pub const DEFAULT_MAX_INFLIGHT_REQUESTS: usize = 10_000;
/// Large enough for a big cluster's Metadata response and a multi-topic Produce of
/// librdkafka's default `message.max.bytes`, small enough that decoding one stays cheap.
pub const DEFAULT_MAX_HELD_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// All connections of one VM (one Envoy worker) together.
pub const DEFAULT_MAX_HELD_BYTES: usize = 64 * 1024 * 1024;
const MIN_FRAME_BYTES: u64 = 1024;
const MAX_INFLIGHT_LIMIT: u64 = 1_000_000;
/// Distinct clients with series of their own, at most: each costs Envoy a few KiB of stats.
const MAX_MAX_CLIENTS: u64 = 100_000;

/// What to do with a connection whose byte stream can no longer be framed as Kafka (a size field
/// above `max_frame_bytes`, or negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameErrorPolicy {
    /// Close the connection, as a Kafka broker does with an oversized request.
    Close,
    /// Stop interpreting the connection and forward its bytes untouched.
    PassThrough,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub max_frame_bytes: usize,
    pub on_frame_error: FrameErrorPolicy,
    pub max_inflight_requests: usize,
    /// Largest frame a stage may hold whole (to rewrite it); larger ones are refused.
    pub max_held_frame_bytes: usize,
    /// Bytes all connections of one VM may hold at once; past it frames to hold are refused.
    pub max_held_bytes: usize,
    /// Name conversion rules, first match first. Empty: nothing is ever rewritten.
    pub rules: Vec<Rule>,
    /// Rate limits; every one that matches a connection applies.
    pub limits: Vec<Limit>,
    /// Per-client metrics; `None`: not kept.
    pub client_metrics: Option<ClientMetricsConfig>,
    /// Committed consumer lag; `None`: not followed.
    pub consumer_lag: Option<LagConfig>,
    /// The request log; `None`: none written.
    pub request_log: Option<Rc<RequestLogConfig>>,
    /// Kafka-style ACLs; `None`: no authorization (everything the broker allows).
    pub acls: Option<Rc<Policy>>,
    /// The broker addresses clients get; `None`: as the brokers advertise them.
    pub broker_addresses: Option<Rc<BrokerAddresses>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            on_frame_error: FrameErrorPolicy::Close,
            max_inflight_requests: DEFAULT_MAX_INFLIGHT_REQUESTS,
            max_held_frame_bytes: DEFAULT_MAX_HELD_FRAME_BYTES,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            rules: Vec::new(),
            limits: Vec::new(),
            client_metrics: None,
            consumer_lag: None,
            request_log: None,
            acls: None,
            broker_addresses: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    max_frame_bytes: Option<i64>,
    on_frame_error: Option<FrameErrorPolicy>,
    max_inflight_requests: Option<i64>,
    max_held_frame_bytes: Option<i64>,
    max_held_bytes: Option<i64>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    limits: Vec<RawLimit>,
    client_metrics: Option<RawClientMetrics>,
    consumer_lag: Option<RawLag>,
    request_log: Option<RawRequestLog>,
    acls: Option<RawAcls>,
    broker_addresses: Option<RawBrokerAddresses>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequestLog {
    #[serde(rename = "match", default)]
    matcher: RawMatch,
    apis: Option<Vec<String>>,
    topics: Option<Vec<String>>,
    sample: Option<f64>,
    envoy_log: Option<bool>,
    http: Option<RawHttpSink>,
}

fn parse_request_log(raw: RawRequestLog) -> Result<RequestLogConfig, ConfigError> {
    let field = |field: &'static str, message: String| ConfigError::Field { field, message };
    let matcher = raw
        .matcher
        .parse()
        .map_err(|e| field("request_log.match", e))?;
    let apis = match raw.apis {
        None => None,
        Some(names) if names.is_empty() => {
            return Err(field("request_log.apis", "must not be empty (leave it out for every API)".into()))
        }
        Some(names) => Some(
            names
                .iter()
                .map(|n| {
                    api_key_named(n).ok_or_else(|| {
                        field(
                            "request_log.apis",
                            format!("`{n}` is not a Kafka API name (as in the metrics, e.g. `Produce`) or key"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    if raw.topics.as_ref().is_some_and(|t| t.is_empty()) {
        return Err(field(
            "request_log.topics",
            "must not be empty (leave it out for every topic)".into(),
        ));
    }
    let sample = raw.sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample) {
        return Err(field(
            "request_log.sample",
            format!("{sample} is out of range, expected 0..=1"),
        ));
    }
    let http = match raw.http {
        None => None,
        Some(h) => Some(parse_http_sink(h).map_err(|(f, message)| field(f, message))?),
    };
    let envoy_log = raw.envoy_log.unwrap_or(true);
    if !envoy_log && http.is_none() {
        return Err(field(
            "request_log.envoy_log",
            "is false and no `http` collector is given: the lines would go nowhere".into(),
        ));
    }
    Ok(RequestLogConfig {
        matcher,
        apis,
        topics: raw.topics,
        sample,
        envoy_log,
        http,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLag {
    max_series: Option<i64>,
    fetch_lag: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientMetrics {
    max_clients: Option<i64>,
    latency_histograms: Option<bool>,
    max_topics: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid plugin configuration at `{path}`: {message}")]
    Json { path: String, message: String },
    #[error("invalid plugin configuration: field `{field}`: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("invalid plugin configuration: {0}")]
    Rule(#[from] RuleError),
    #[error("invalid plugin configuration: `limits`: {0}")]
    Limit(#[from] LimitError),
    #[error("invalid plugin configuration: {0}")]
    Acl(#[from] AclError),
    #[error("invalid plugin configuration: field `broker_addresses.{0}`: {1}")]
    Brokers(String, String),
}

/// Parse the plugin configuration. Empty (or whitespace) means all defaults.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(Config::default()),
        Some(b'{') => {}
        Some(_) => {
            return Err(ConfigError::Json {
                path: ".".into(),
                message: "the plugin configuration must be a JSON object".into(),
            })
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Json {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    let defaults = Config::default();
    let rules = parse_rules(raw.rules)?;
    let limits = parse_limits(raw.limits)?;
    let acls = match raw.acls {
        None => None,
        Some(a) => Some(Rc::new(parse_acls(a)?)),
    };
    if raw.on_frame_error == Some(FrameErrorPolicy::PassThrough) && raw.broker_addresses.is_some() {
        return Err(ConfigError::Field {
            field: "on_frame_error",
            message: "\"pass_through\" cannot be used with `broker_addresses`: a connection \
                      passed through would give clients the brokers' own addresses"
                .into(),
        });
    }
    if raw.on_frame_error == Some(FrameErrorPolicy::PassThrough) && acls.is_some() {
        return Err(ConfigError::Field {
            field: "on_frame_error",
            message: "\"pass_through\" cannot be used with `acls`: a connection under ACLs \
                      must never be forwarded unchecked, so a stream that cannot be framed always \
                      closes there"
                .into(),
        });
    }
    if raw.on_frame_error == Some(FrameErrorPolicy::PassThrough) && !limits.is_empty() {
        return Err(ConfigError::Field {
            field: "on_frame_error",
            message: "\"pass_through\" cannot be used with `limits`: a client could escape its \
                      limits by sending one frame it cannot be framed past, so a stream that \
                      cannot be framed always closes there"
                .into(),
        });
    }
    if raw.on_frame_error == Some(FrameErrorPolicy::PassThrough) && !rules.is_empty() {
        return Err(ConfigError::Field {
            field: "on_frame_error",
            message: "\"pass_through\" cannot be used with `rules`: a connection under a rule \
                      must never be forwarded unmapped, so a stream that cannot be framed always \
                      closes there"
                .into(),
        });
    }
    let max_held_frame_bytes = in_range(
        "max_held_frame_bytes",
        raw.max_held_frame_bytes,
        MIN_FRAME_BYTES,
        i32::MAX as u64,
    )?
    .unwrap_or(defaults.max_held_frame_bytes);
    let max_held_bytes = in_range(
        "max_held_bytes",
        raw.max_held_bytes,
        MIN_FRAME_BYTES,
        i32::MAX as u64,
    )?
    .unwrap_or(defaults.max_held_bytes);
    if max_held_bytes < max_held_frame_bytes {
        return Err(ConfigError::Field {
            field: "max_held_bytes",
            message: format!(
                "{max_held_bytes} is less than max_held_frame_bytes {max_held_frame_bytes}: \
                 a frame that may be held would never fit"
            ),
        });
    }
    Ok(Config {
        max_frame_bytes: in_range(
            "max_frame_bytes",
            raw.max_frame_bytes,
            MIN_FRAME_BYTES,
            i32::MAX as u64,
        )?
        .unwrap_or(defaults.max_frame_bytes),
        on_frame_error: raw.on_frame_error.unwrap_or(defaults.on_frame_error),
        max_inflight_requests: in_range(
            "max_inflight_requests",
            raw.max_inflight_requests,
            1,
            MAX_INFLIGHT_LIMIT,
        )?
        .unwrap_or(defaults.max_inflight_requests),
        max_held_frame_bytes,
        max_held_bytes,
        rules,
        limits,
        client_metrics: match raw.client_metrics {
            None => None,
            Some(c) => Some(ClientMetricsConfig {
                max_clients: in_range(
                    "client_metrics.max_clients",
                    c.max_clients,
                    0,
                    MAX_MAX_CLIENTS,
                )?
                .map_or(DEFAULT_MAX_CLIENTS, |n| n as u32),
                latency: c.latency_histograms.unwrap_or(true),
                max_topics: in_range(
                    "client_metrics.max_topics",
                    c.max_topics,
                    0,
                    MAX_MAX_CLIENTS,
                )?
                .map_or(DEFAULT_MAX_TOPICS, |n| n as u32),
            }),
        },
        request_log: match raw.request_log {
            None => None,
            Some(r) => Some(Rc::new(parse_request_log(r)?)),
        },
        acls,
        broker_addresses: match raw.broker_addresses {
            None => None,
            Some(b) => Some(Rc::new(
                brokers::parse(b).map_err(|(f, msg)| ConfigError::Brokers(f, msg))?,
            )),
        },
        consumer_lag: match raw.consumer_lag {
            None => None,
            Some(l) => Some(LagConfig {
                max_series: in_range("consumer_lag.max_series", l.max_series, 1, MAX_MAX_CLIENTS)?
                    .map_or(DEFAULT_MAX_LAG_SERIES, |n| n as u32),
                fetch_lag: l.fetch_lag.unwrap_or(true),
            }),
        },
    })
}

fn in_range(
    field: &'static str,
    value: Option<i64>,
    min: u64,
    max: u64,
) -> Result<Option<usize>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    match u64::try_from(v) {
        Ok(u) if (min..=max).contains(&u) => {
            usize::try_from(u)
                .map(Some)
                .map_err(|_| ConfigError::Field {
                    field,
                    message: format!("{v} does not fit this platform"),
                })
        }
        _ => Err(ConfigError::Field {
            field,
            message: format!("{v} is out of range, expected {min}..={max}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        assert_eq!(parse(b"").unwrap(), Config::default());
        assert_eq!(parse(b"  \n").unwrap(), Config::default());
        assert_eq!(parse(b"{}").unwrap(), Config::default());
    }

    #[test]
    fn full_document() {
        let c = parse(
            br#"{"max_frame_bytes": 2048, "on_frame_error": "pass_through", "max_inflight_requests": 5}"#,
        )
        .unwrap();
        assert_eq!(c.max_frame_bytes, 2048);
        assert_eq!(c.on_frame_error, FrameErrorPolicy::PassThrough);
        assert_eq!(c.max_inflight_requests, 5);
    }

    #[test]
    fn bad_documents_name_the_field() {
        let table: &[(&str, &str)] = &[
            (r#"{"max_frame_bytez": 5}"#, "max_frame_bytez"),
            (r#"{"max_frame_bytes": -1}"#, "max_frame_bytes"),
            (r#"{"max_frame_bytes": 10}"#, "max_frame_bytes"),
            (r#"{"max_frame_bytes": 4294967296}"#, "max_frame_bytes"),
            (r#"{"max_frame_bytes": "big"}"#, "max_frame_bytes"),
            (r#"{"on_frame_error": "drop"}"#, "on_frame_error"),
            (r#"{"max_inflight_requests": 0}"#, "max_inflight_requests"),
            (r#"{"max_inflight_requests": 1.5}"#, "max_inflight_requests"),
            (r#"[1, 2]"#, "."),
            (r#"{"max_frame_bytes": 2048"#, "line 1"),
            ("not json", "JSON object"),
            (r#"{"on_frame_error": 3} trailing"#, "on_frame_error"),
            (r#"{"max_held_frame_bytes": 100}"#, "max_held_frame_bytes"),
            (r#"{"max_held_bytes": 3000000000}"#, "max_held_bytes"),
            (
                r#"{"max_held_frame_bytes": 4096, "max_held_bytes": 2048}"#,
                "max_held_bytes",
            ),
            (
                r#"{"on_frame_error": "pass_through", "rules": [{"name": "a", "topics": {"prefix": "a."}}]}"#,
                "on_frame_error",
            ),
            (
                r#"{"on_frame_error": "pass_through", "limits": [{"name": "a", "requests_per_second": 5}]}"#,
                "on_frame_error",
            ),
        ];
        for (doc, needle) in table {
            let err = parse(doc.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{doc}: {err}");
        }
    }
}
