//! Per-client metrics: requests, responses, latency and bytes per client id, mTLS principal and
//! API, and the client software each connection runs (KIP-511), as Envoy stats whose labels the
//! stats tags extract (`kafka_client_id`, `kafka_principal`, `kafka_api`, `kafka_client_software`,
//! `kafka_client_software_version`).
//!
//! A client inventing ids must not grow Envoy's stats without bound (Envoy never deletes a stat
//! a filter defined): the distinct (client id, principal) pairs with series of their own are
//! capped per Envoy process, admitted through the same shared store as rate-limit keys; every
//! later pair is counted under `other`, so the labelled series still add up to the totals.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;

use super::client_topics::TopicCounters;
use crate::api::{label_name, ApiLabel};
use crate::limits::BucketStore;
use crate::metrics::{len_i64, MetricsSink};
use crate::metrics::{metric_label, software_version_label};
use crate::pipeline::{Identity, Observer, RequestRecord};

/// `client_metrics` in the plugin configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientMetricsConfig {
    /// Distinct (client id, principal) pairs with series of their own, per Envoy process.
    pub max_clients: u32,
    /// Whether to keep a latency histogram per client and API (one host call per response).
    pub latency: bool,
    /// Distinct topics with per-client series of their own, per Envoy process; 0: no
    /// per-topic series (Produce requests and Fetch responses are then not walked).
    pub max_topics: u32,
}

pub const DEFAULT_MAX_CLIENTS: u32 = 100;
pub const DEFAULT_MAX_TOPICS: u32 = 1000;
/// Distinct groups with member series of their own, per Envoy process (the rest: `other`).
const MAX_GROUPS: u32 = 1000;
const LEAVE_GROUP: i16 = 13;
/// The admission scope in the shared store: `~` cannot start a limit's name.
const SCOPE: &str = "~clients";
/// Label of everything past the cap, and of a missing client id or principal.
pub const OTHER: &str = "other";
pub const NONE: &str = "none";

/// One API's counts since the last flush, and its metric names (made once per connection).
struct ApiCounts {
    api: ApiLabel,
    requests: i64,
    responses: i64,
    requests_name: String,
    responses_name: String,
    latency_name: String,
    /// Counter names of the error codes seen in this API's responses (few: errors are rare
    /// and Kafka has about 130 codes).
    errors: Vec<(i16, String)>,
}

impl ApiCounts {
    fn new(api: ApiLabel, prefix: &str) -> Self {
        let base = format!("{prefix}api.{}.", label_name(api));
        Self {
            api,
            requests: 0,
            responses: 0,
            requests_name: format!("{base}client_requests"),
            responses_name: format!("{base}client_responses"),
            latency_name: format!("{base}client_response_latency_us"),
            errors: Vec::new(),
        }
    }

    /// The counter of responses with this top-level error code:
    /// `...api.<api>.error.<Name>.client_response_errors`, the name as kafka-protocol spells it.
    fn error_name(&mut self, code: i16, prefix: &str) -> &str {
        let at = match self.errors.iter().position(|(c, _)| *c == code) {
            Some(at) => at,
            None => {
                let name = match ResponseError::try_from_code(code) {
                    // A broker sending codes Kafka does not define must not make series
                    // without bound.
                    Some(ResponseError::Unknown(_)) | None => "unknown".to_string(),
                    Some(e) => format!("{e:?}"),
                };
                self.errors.push((
                    code,
                    format!(
                        "{prefix}api.{}.error.{}.client_response_errors",
                        label_name(self.api),
                        metric_label(&name)
                    ),
                ));
                self.errors.len() - 1
            }
        };
        self.errors
            .get(at)
            .map(|(_, n)| n.as_str())
            .unwrap_or_default()
    }
}

/// The series of one connection: chosen at its first finished request, when its client id and
/// principal are known.
struct Series {
    /// `client.<client id>.principal.<principal>.`
    prefix: String,
    /// The gauge this connection holds up (`...software.<name>.version.<version>.client_connections`).
    connections: String,
    software_known: bool,
    request_bytes_name: String,
    response_bytes_name: String,
    /// `throttle_time_ms` the broker sent: its total, and responses with some.
    broker_throttle_ms_name: String,
    broker_throttled_name: String,
}

pub struct ClientMetrics {
    config: ClientMetricsConfig,
    store: Rc<dyn BucketStore>,
    series: Option<Series>,
    apis: Vec<ApiCounts>,
    request_bytes: usize,
    response_bytes: usize,
    topics: TopicCounters,
    /// The groups this connection is a member of: the gauges it holds up.
    groups: Vec<(String, String)>,
}

impl ClientMetrics {
    pub fn new(config: ClientMetricsConfig, store: Rc<dyn BucketStore>) -> Self {
        Self {
            topics: TopicCounters::new(Rc::clone(&store), config.max_topics),
            config,
            store,
            series: None,
            apis: Vec::new(),
            request_bytes: 0,
            response_bytes: 0,
            groups: Vec::new(),
        }
    }

    fn choose_series(&self, identity: &Identity) -> Series {
        let client = identity
            .client_id
            .as_deref()
            .map_or_else(|| NONE.to_string(), metric_label);
        let principal = identity
            .peer
            .principal
            .as_deref()
            .map_or_else(|| NONE.to_string(), metric_label);
        let admitted = self.store.admit(
            SCOPE,
            &format!("{client}/{principal}"),
            self.config.max_clients,
        );
        let prefix = if admitted {
            format!("client.{client}.principal.{principal}.")
        } else {
            format!("client.{OTHER}.principal.{OTHER}.")
        };
        Series {
            connections: connections_name(&prefix, identity),
            software_known: identity.software.is_some(),
            request_bytes_name: format!("{prefix}client_request_bytes"),
            broker_throttle_ms_name: format!("{prefix}client_broker_throttle_ms"),
            broker_throttled_name: format!("{prefix}client_broker_throttled"),
            response_bytes_name: format!("{prefix}client_response_bytes"),
            prefix,
        }
    }
}

impl ClientMetrics {
    /// A group request: the connection joins the group's members (once), or leaves it.
    fn note_group(&mut self, group: &str, leaving: bool, prefix: &str, m: &mut dyn MetricsSink) {
        let at = self.groups.iter().position(|(g, _)| g == group);
        match (at, leaving) {
            (Some(at), true) => {
                let (_, gauge) = self.groups.swap_remove(at);
                m.gauge_named(&gauge, -1);
            }
            (None, false) if self.groups.len() < 64 => {
                let label = metric_label(group);
                let label = if self.store.admit("~groups", &label, MAX_GROUPS) {
                    label
                } else {
                    OTHER.to_string()
                };
                let gauge = format!("{prefix}group.{label}.client_group_members");
                m.gauge_named(&gauge, 1);
                self.groups.push((group.to_string(), gauge));
            }
            _ => {}
        }
    }
}

/// `<prefix>software.<name>.version.<version>.client_connections`, `unknown` for a client that
/// has not named itself (ApiVersions before v3, or not sent yet).
fn connections_name(prefix: &str, identity: &Identity) -> String {
    let (name, version) = match &identity.software {
        Some(s) => (metric_label(&s.name), software_version_label(&s.version)),
        None => ("unknown".to_string(), "unknown".to_string()),
    };
    format!("{prefix}software.{name}.version.{version}.client_connections")
}

impl Observer for ClientMetrics {
    fn on_finished(&mut self, r: &RequestRecord<'_>, m: &mut dyn MetricsSink) {
        let series = match self.series.take() {
            Some(mut s) => {
                if !s.software_known && r.identity.software.is_some() {
                    // The client named itself after its first request: move the connection.
                    m.gauge_named(&s.connections, -1);
                    s.connections = connections_name(&s.prefix, r.identity);
                    s.software_known = true;
                    m.gauge_named(&s.connections, 1);
                }
                s
            }
            None => {
                let s = self.choose_series(r.identity);
                m.gauge_named(&s.connections, 1);
                s
            }
        };
        if let Some(group) = r.group {
            self.note_group(group, r.api_key == LEAVE_GROUP, &series.prefix, m);
        }
        if r.produced.is_some() || r.fetched.is_some() {
            self.topics.count(r.produced, r.fetched, &series.prefix);
        }
        self.request_bytes += r.request_bytes;
        self.response_bytes += r.response_bytes.unwrap_or(0);
        if !self.apis.iter().any(|c| c.api == r.api) {
            self.apis.push(ApiCounts::new(r.api, &series.prefix));
        }
        let latency = self.config.latency;
        if let Some(c) = self.apis.iter_mut().find(|c| c.api == r.api) {
            c.requests += 1;
            if let Some(us) = r.latency_us {
                c.responses += 1;
                if latency {
                    m.record_named(&c.latency_name, us);
                }
            }
            // Fetch answers per partition too: its first partition in error, when the
            // response as a whole has none.
            let partition_error = || {
                r.fetched
                    .into_iter()
                    .flat_map(|w| &w.topics)
                    .flat_map(|t| &t.partitions)
                    .map(|p| p.error_code)
                    .find(|c| *c != 0)
            };
            if let Some(code) = r.error_code.filter(|c| *c != 0).or_else(partition_error) {
                m.add_named(c.error_name(code, &series.prefix), 1);
            }
        }
        if let Some(ms) = r.broker_throttle_ms.filter(|ms| *ms > 0) {
            m.add_named(&series.broker_throttled_name, 1);
            m.add_named(&series.broker_throttle_ms_name, i64::from(ms));
        }
        self.series = Some(series);
    }

    fn wants_topics(&self) -> bool {
        self.config.max_topics > 0
    }

    fn wants_response_heads(&self) -> bool {
        true
    }

    /// The principal is a label.
    fn needs_peer(&self) -> bool {
        true
    }

    fn wants_groups(&self) -> bool {
        true
    }

    fn flush(&mut self, m: &mut dyn MetricsSink) {
        let Some(series) = &self.series else { return };
        self.topics.flush(m);
        for c in &mut self.apis {
            if c.requests > 0 {
                m.add_named(&c.requests_name, std::mem::take(&mut c.requests));
            }
            if c.responses > 0 {
                m.add_named(&c.responses_name, std::mem::take(&mut c.responses));
            }
        }
        if self.request_bytes > 0 {
            let n = len_i64(std::mem::take(&mut self.request_bytes));
            m.add_named(&series.request_bytes_name, n);
        }
        if self.response_bytes > 0 {
            let n = len_i64(std::mem::take(&mut self.response_bytes));
            m.add_named(&series.response_bytes_name, n);
        }
    }

    fn end(&mut self, m: &mut dyn MetricsSink) {
        self.flush(m);
        for (_, gauge) in self.groups.drain(..) {
            m.gauge_named(&gauge, -1);
        }
        if let Some(s) = self.series.take() {
            m.gauge_named(&s.connections, -1);
        }
    }
}
