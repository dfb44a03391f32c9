//! Limits as written in the plugin configuration (`limits`), turned into [`Limit`]s: every
//! problem is reported with the limit's index, name and field.

use serde::Deserialize;

use super::bucket::Rate;
use crate::api::api_key_named as api_key;
use crate::matching::{Matcher, RawMatch};

/// Who shares a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyBy {
    /// One bucket for every connection the limit matches.
    Shared,
    /// One bucket per client id (like Kafka's default per-client quotas).
    ClientId,
    /// One bucket per mTLS principal.
    Principal,
    /// One bucket per source address.
    Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Hold clients over the limit (`throttle_time_ms` and a paused connection).
    Throttle,
    /// Count what would have been held; change nothing.
    DryRun,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub name: String,
    pub matcher: Matcher,
    pub key: KeyBy,
    pub mode: Mode,
    /// Distinct keys with a bucket of their own; the rest share one overflow bucket.
    pub max_keys: u32,
    pub produce_bytes: Option<Rate>,
    pub fetch_bytes: Option<Rate>,
    pub requests: Option<Rate>,
    /// The API keys `requests` counts (`None`: every API).
    pub request_apis: Option<Vec<i16>>,
    pub topic_mutations: Option<Rate>,
    pub max_connections: Option<u32>,
    pub connections: Option<Rate>,
    /// Byte rates hold per topic (one bucket per key and topic), charged once a frame's topics
    /// are counted as it passes.
    pub per_topic: bool,
}

impl Limit {
    pub fn needs_peer(&self) -> bool {
        self.matcher.needs_peer() || matches!(self.key, KeyBy::Principal | KeyBy::Source)
    }

    pub fn limits_connections(&self) -> bool {
        self.max_connections.is_some() || self.connections.is_some()
    }
}

pub const DEFAULT_MAX_KEYS: u32 = 1000;
const MAX_MAX_KEYS: u64 = 100_000;
const MAX_LIMITS: usize = 64;
/// Rates are counted in f64: past 2^53 they lose units, far beyond any real rate.
const MAX_RATE: f64 = 9.0e15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit {index} (`{name}`): {message}")]
pub struct LimitError {
    pub index: usize,
    pub name: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    name: String,
    #[serde(rename = "match", default)]
    matcher: RawMatch,
    key: Option<KeyBy>,
    mode: Option<Mode>,
    max_keys: Option<i64>,
    produce_bytes_per_second: Option<RawRate>,
    fetch_bytes_per_second: Option<RawRate>,
    requests_per_second: Option<RawRate>,
    apis: Option<Vec<String>>,
    topic_mutations_per_second: Option<RawRate>,
    max_connections: Option<i64>,
    connections_per_second: Option<RawRate>,
    #[serde(default)]
    per_topic: bool,
}

/// A rate: a number (the burst is one second of it) or `{"rate": r, "burst": b}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRate {
    Number(f64),
    Form(RawRateForm),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateForm {
    rate: f64,
    burst: Option<f64>,
}

fn rate(field: &str, raw: &Option<RawRate>) -> Result<Option<Rate>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let (per_second, burst) = match raw {
        RawRate::Number(r) => (*r, *r),
        RawRate::Form(f) => (f.rate, f.burst.unwrap_or(f.rate)),
    };
    let check = |what: &str, v: f64| {
        if !(v.is_finite() && v > 0.0 && v <= MAX_RATE) {
            return Err(format!(
                "`{field}`: the {what} must be a number above 0 and at most {MAX_RATE:e}, not {v}"
            ));
        }
        Ok(())
    };
    check("rate", per_second)?;
    check("burst", burst)?;
    Ok(Some(Rate { per_second, burst }))
}

pub fn parse_limits(raw: Vec<RawLimit>) -> Result<Vec<Limit>, LimitError> {
    if raw.len() > MAX_LIMITS {
        return Err(LimitError {
            index: MAX_LIMITS,
            name: String::new(),
            message: format!("at most {MAX_LIMITS} limits may be configured"),
        });
    }
    let mut out: Vec<Limit> = Vec::with_capacity(raw.len());
    for (index, r) in raw.into_iter().enumerate() {
        let fail = |message: String| LimitError {
            index,
            name: r.name.clone(),
            message,
        };
        if r.name.trim().is_empty()
            || r.name
                .contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(fail(
                "`name` must be non-empty ASCII letters, digits, `-` or `_` (it names metrics)"
                    .into(),
            ));
        }
        if out.iter().any(|l| l.name == r.name) {
            return Err(fail("another limit has the same `name`".into()));
        }
        let matcher = r.matcher.parse().map_err(&fail)?;
        let max_keys = match r.max_keys {
            None => DEFAULT_MAX_KEYS,
            Some(n) if (1..=MAX_MAX_KEYS as i64).contains(&n) => n as u32,
            Some(n) => {
                return Err(fail(format!(
                    "`max_keys` must be between 1 and {MAX_MAX_KEYS}, not {n}"
                )))
            }
        };
        let max_connections = match r.max_connections {
            None => None,
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
            Some(n) => {
                return Err(fail(format!(
                    "`max_connections` must be at least 1, not {n}"
                )))
            }
        };
        let request_apis = match &r.apis {
            None => None,
            Some(names) => {
                if names.is_empty() {
                    return Err(fail(
                        "`apis` must not be empty (leave it out for every API)".into(),
                    ));
                }
                let mut keys = Vec::with_capacity(names.len());
                for n in names {
                    keys.push(api_key(n).ok_or_else(|| {
                        fail(format!(
                            "`apis`: `{n}` is not a Kafka API name (as in the metrics, e.g. `Produce`) or key"
                        ))
                    })?);
                }
                Some(keys)
            }
        };
        let requests = rate("requests_per_second", &r.requests_per_second).map_err(&fail)?;
        if request_apis.is_some() && requests.is_none() {
            return Err(fail("`apis` is given without `requests_per_second`".into()));
        }
        let limit = Limit {
            name: r.name.clone(),
            matcher,
            key: r.key.unwrap_or(KeyBy::Shared),
            mode: r.mode.unwrap_or(Mode::Throttle),
            max_keys,
            produce_bytes: rate("produce_bytes_per_second", &r.produce_bytes_per_second)
                .map_err(&fail)?,
            fetch_bytes: rate("fetch_bytes_per_second", &r.fetch_bytes_per_second)
                .map_err(&fail)?,
            requests,
            request_apis,
            topic_mutations: rate("topic_mutations_per_second", &r.topic_mutations_per_second)
                .map_err(&fail)?,
            max_connections,
            connections: rate("connections_per_second", &r.connections_per_second)
                .map_err(&fail)?,
            per_topic: r.per_topic,
        };
        if limit.per_topic && limit.produce_bytes.is_none() && limit.fetch_bytes.is_none() {
            return Err(fail(
                "`per_topic` needs `produce_bytes_per_second` or `fetch_bytes_per_second` \
                 (only byte rates are kept per topic)"
                    .into(),
            ));
        }
        if limit.produce_bytes.is_none()
            && limit.fetch_bytes.is_none()
            && limit.requests.is_none()
            && limit.topic_mutations.is_none()
            && !limit.limits_connections()
        {
            return Err(fail(
                "limits nothing: give at least one of produce_bytes_per_second, \
                 fetch_bytes_per_second, requests_per_second, topic_mutations_per_second, \
                 max_connections, connections_per_second"
                    .into(),
            ));
        }
        out.push(limit);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Vec<Limit>, String> {
        let raw: Vec<RawLimit> = serde_json::from_str(json).map_err(|e| e.to_string())?;
        parse_limits(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn rates_and_defaults() {
        let l = parse(
            r#"[{"name": "p", "produce_bytes_per_second": 1048576,
                 "fetch_bytes_per_second": {"rate": 100, "burst": 1000},
                 "requests_per_second": 5, "apis": ["Produce", "3"], "key": "client_id"}]"#,
        )
        .unwrap();
        let l = &l[0];
        assert_eq!(l.produce_bytes.unwrap().burst, 1048576.0);
        assert_eq!(l.fetch_bytes.unwrap().burst, 1000.0);
        assert_eq!(l.request_apis, Some(vec![0, 3]));
        assert_eq!(
            (l.key, l.mode, l.max_keys),
            (KeyBy::ClientId, Mode::Throttle, 1000)
        );
    }

    #[test]
    fn errors_name_the_limit_and_field() {
        for (json, want) in [
            (r#"[{"name": "a"}]"#, "limits nothing"),
            (
                r#"[{"name": "a", "produce_bytes_per_second": 0}]"#,
                "`produce_bytes_per_second`: the rate",
            ),
            (
                r#"[{"name": "a", "produce_bytes_per_second": -5}]"#,
                "above 0",
            ),
            (
                r#"[{"name": "a", "fetch_bytes_per_second": {"rate": 5, "burst": 0}}]"#,
                "the burst",
            ),
            (
                r#"[{"name": "a", "requests_per_second": 1, "apis": ["Nope"]}]"#,
                "`apis`: `Nope`",
            ),
            (
                r#"[{"name": "a", "requests_per_second": 1, "apis": []}]"#,
                "must not be empty",
            ),
            (
                r#"[{"name": "a", "apis": ["Produce"], "max_connections": 1}]"#,
                "without `requests_per_second`",
            ),
            (
                r#"[{"name": "a", "max_connections": 0}]"#,
                "`max_connections`",
            ),
            (
                r#"[{"name": "a", "max_keys": 0, "max_connections": 1}]"#,
                "`max_keys`",
            ),
            (r#"[{"name": "a b", "max_connections": 1}]"#, "`name`"),
            (
                r#"[{"name": "a", "max_connections": 1}, {"name": "a", "max_connections": 1}]"#,
                "same `name`",
            ),
            (
                r#"[{"name": "a", "max_connections": 1, "match": {"source_cidrs": ["x"]}}]"#,
                "limit 0 (`a`)",
            ),
            (
                r#"[{"name": "a", "requests_per_second": 1, "per_topic": true}]"#,
                "`per_topic` needs",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
            if !e.contains("unknown field") && want != "same `name`" {
                assert!(e.starts_with("limit 0 (`a"), "{json}: {e}");
            }
        }
        assert!(
            parse(r#"[{"name": "a", "max_connections": 1, "burst": 3}]"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
