//! The request log: one JSON line per finished request (or per sampled one) that matches its
//! filters, written to Envoy's log (the wasm log, at info): who (connection, mTLS principal,
//! source, client id, client software), what (API, version, topics with bytes and records), how
//! it went (bytes, latency, what the stages decided, the error the filter answered with).

use std::rc::Rc;

use serde_json::{json, Value};

use crate::api::label_name;
use crate::codec::walk::{id_hex, TopicRef, Walked};
use crate::matching::Matcher;
use crate::metrics::MetricsSink;
use crate::observers::log_sink::{HttpSinkConfig, SharedLines, DROPPED};
use crate::pipeline::{Observer, Outcome, RequestRecord};

/// `request_log` in the plugin configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLogConfig {
    /// Which connections (client id, principal, source): the same forms as rules and limits.
    pub matcher: Matcher,
    /// Which APIs (`None`: all).
    pub apis: Option<Vec<i16>>,
    /// Only requests naming one of these topics (`None`: any request).
    pub topics: Option<Vec<String>>,
    /// The share of matching requests logged, 0..=1.
    pub sample: f64,
    /// Lines go to Envoy's log (the default).
    pub envoy_log: bool,
    /// Lines go to an HTTP collector too.
    pub http: Option<HttpSinkConfig>,
}

/// Every line starts with this, so a log pipeline can pick them out.
pub const LINE_PREFIX: &str = "kafka_request_log ";

pub struct RequestLog {
    config: Rc<RequestLogConfig>,
    connection: u32,
    /// The VM's buffer for the HTTP collector, when there is one.
    collector: Option<SharedLines>,
}

impl RequestLog {
    pub fn new(config: Rc<RequestLogConfig>, connection: u32) -> Self {
        Self {
            config,
            connection,
            collector: None,
        }
    }

    /// Deterministic sampling: the same request is in or out whatever else happens.
    fn sampled(&self, correlation_id: i32) -> bool {
        if self.config.sample >= 1.0 {
            return true;
        }
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for b in self
            .connection
            .to_le_bytes()
            .iter()
            .chain(&correlation_id.to_le_bytes())
        {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        (h >> 11) as f64 / (1u64 << 53) as f64 <= self.config.sample
    }

    fn names_a_topic(&self, r: &RequestRecord<'_>) -> bool {
        let Some(wanted) = &self.config.topics else {
            return true;
        };
        [r.produced, r.fetched]
            .into_iter()
            .flatten()
            .flat_map(|w| &w.topics)
            .any(|t| matches!(&t.topic, TopicRef::Name(n) if wanted.iter().any(|w| w == n)))
            || r.commits
                .is_some_and(|c| c.offsets.iter().any(|o| wanted.contains(&o.topic)))
    }
}

fn topics(walked: Option<&Walked>) -> Value {
    let Some(w) = walked else {
        return Value::Null;
    };
    let list: Vec<Value> = w
        .topics
        .iter()
        .map(|t| {
            let name = match &t.topic {
                TopicRef::Name(n) => n.clone(),
                TopicRef::Id(id) => id_hex(id),
            };
            json!({"topic": name, "bytes": t.bytes, "records": t.records})
        })
        .collect();
    Value::Array(list)
}

fn decided(o: Outcome) -> Vec<&'static str> {
    [
        (Outcome::REWRITTEN, "rewritten"),
        (Outcome::REFUSED, "refused"),
        (Outcome::DELAYED, "throttled"),
        (Outcome::HELD, "held"),
        (Outcome::RESPONSE_REWRITTEN, "response_rewritten"),
    ]
    .into_iter()
    .filter(|(flag, _)| o.has(*flag))
    .map(|(_, name)| name)
    .collect()
}

/// One line's JSON.
pub fn line(connection: u32, r: &RequestRecord<'_>) -> Value {
    let id = r.identity;
    json!({
        "time_ms": r.sent_at_ns / 1_000_000,
        "connection": connection,
        "principal": id.peer.principal,
        "source": id.peer.source_ip.map(|ip| ip.to_string()),
        "client_id": id.client_id,
        "client_software": id.software.as_ref().map(|s| format!("{}/{}", s.name, s.version)),
        "api": label_name(r.api),
        "api_key": r.api_key,
        "api_version": r.api_version,
        "correlation_id": r.correlation_id,
        "request_bytes": r.request_bytes,
        "response_bytes": r.response_bytes,
        "latency_us": r.latency_us,
        "error_code": r.error_code,
        "broker_throttle_ms": r.broker_throttle_ms,
        "produced": topics(r.produced),
        "fetched": topics(r.fetched),
        "group": r.commits.map(|c| c.group.clone()),
        "decided": decided(r.outcome),
        "refused_with": r.refused_with,
    })
}

impl Observer for RequestLog {
    fn wants_topics(&self) -> bool {
        true
    }

    fn wants_response_heads(&self) -> bool {
        true
    }

    /// Lines say who: principal and source.
    fn needs_peer(&self) -> bool {
        true
    }

    fn on_finished(&mut self, r: &RequestRecord<'_>, m: &mut dyn MetricsSink) {
        let c = &*self.config;
        if c.apis.as_ref().is_some_and(|a| !a.contains(&r.api_key))
            || !c
                .matcher
                .matches(r.identity.client_id.as_deref(), &r.identity.peer)
            || !self.names_a_topic(r)
            || !self.sampled(r.correlation_id)
        {
            return;
        }
        let line = line(self.connection, r).to_string();
        if self.config.envoy_log {
            crate::client_log::record(format_args!("{LINE_PREFIX}{line}"));
        }
        m.add_named("request_log_lines", 1);
        if let Some(c) = &self.collector {
            // The request's own time: the host's clock is not read again for it.
            if !c.borrow_mut().push(line, r.sent_at_ns) {
                m.add_named(DROPPED, 1);
            }
        }
    }

    fn set_collector(&mut self, lines: &SharedLines) {
        if self.config.http.is_some() {
            self.collector = Some(Rc::clone(lines));
        }
    }
}
