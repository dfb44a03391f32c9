//! What must hold of the bytes a connection forwarded, in both directions, under a rule.
//!
//! The checks read the streams the way the broker and the client would (kafka-protocol decoding
//! what it can), against a model of the rule written from the README, not from the filter:
//!
//! * requests: every forwarded request from a client under the rule is a name-free API, a
//!   rewritten API whose every topic, group and transactional id is a broker-side name of the
//!   tenant, or the ApiVersions v0 request that stands in for a refused one; forwarded requests
//!   are the client's, in order; a client under no rule is forwarded byte for byte;
//! * responses: every name shown to a client under the rule is the client-side name of a name
//!   the broker sent in the response it answers (so neither an unmapped broker-side name nor a
//!   name the client must not see); a refused request gets an error response of its own API;
//!   ApiVersions offers only what the rule lets through; a client under no rule gets the broker's
//!   bytes.

use std::collections::VecDeque;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::Decodable;

use crate::drive::Conn;
use crate::frames::{self, Req};
use crate::names::{self, Kind, Treatment};

/// A rule as the README describes it.
pub struct Model {
    pub config: &'static str,
    /// The client ids the rule applies to.
    pub is_tenant: fn(&str) -> bool,
    /// Whether a name may reach the broker in a request from a client under the rule.
    pub request_ok: fn(Kind, &str) -> bool,
    /// What the client may be shown for a name the broker sent; `None`: nothing (hidden).
    pub to_client: fn(Kind, &str) -> Option<String>,
    /// Client ids of generated requests.
    pub clients: &'static [Option<&'static str>],
    /// Names clients use.
    pub logical: &'static [&'static str],
    /// Names the broker answers with.
    pub physical: &'static [&'static str],
}

/// The tenant rule of the prefix target.
pub const PREFIX: Model = Model {
    // With per-topic counting (per-client metrics, and a per-topic limit that never trips):
    // frames whose head or whole is rewritten are walked as the client sees them.
    config: r#"{"rules":[{"name":"t","match":{"client_id":{"prefix":"team-a-"}},"topics":{"prefix":"team-a."}}],
        "client_metrics":{"max_clients":4,"max_topics":4},
        "limits":[{"name":"l","per_topic":true,"max_keys":4,"produce_bytes_per_second":1e15,"fetch_bytes_per_second":1e15}]}"#,
    is_tenant: |c| c.starts_with("team-a-"),
    request_ok: |_, n| n.starts_with("team-a."),
    to_client: |_, n| match n.strip_prefix("team-a.") {
        Some(rest) if !rest.is_empty() => Some(rest.to_string()),
        _ => None,
    },
    clients: &[
        Some("team-a-x"),
        Some("team-a-x"),
        Some("team-a-x"),
        Some("team-a-x"),
        Some("team-a-"),
        Some("team-b-x"),
        Some("team-a"),
        Some("other"),
        None,
    ],
    logical: &[
        "x", "orders", "events", "g1", "t1", "", "team-a.x", "team-b.y", "a.b", "_x", "-", ".",
    ],
    physical: &[
        "team-a.x",
        "team-a.orders",
        "team-a.events",
        "team-a.g1",
        "team-a.t1",
        "team-b.x",
        "other",
        "team-a.",
        "team-a",
        "team-a.team-a.x",
        "team-a.team-b.y",
        "__consumer_offsets",
        "",
        "Team-a.x",
    ],
};

fn strip_canary(n: &str) -> Option<String> {
    match n.strip_suffix("-canary") {
        Some(rest) if !rest.is_empty() => Some(rest.to_string()),
        _ => None,
    }
}

/// The canary rule of the canary target (README's example): topic `orders` is `orders-canary`
/// on the broker, groups (and so transactional ids) get a `-canary` suffix.
pub const CANARY: Model = Model {
    config: r#"{"rules":[{"name":"c","match":{"client_id":{"exact":"checkout-canary"}},"topics":{"map":{"orders":"orders-canary"}},"groups":{"add_suffix":"-canary"}}]}"#,
    is_tenant: |c| c == "checkout-canary",
    request_ok: |k, n| match k {
        Kind::Topic => n != "orders",
        Kind::Group | Kind::Txn | Kind::Key => n.ends_with("-canary"),
    },
    to_client: |k, n| match k {
        Kind::Topic => match n {
            "orders-canary" => Some("orders".into()),
            // The production topic the canary's own stands in for.
            "orders" => None,
            _ => Some(n.to_string()),
        },
        Kind::Group | Kind::Txn | Kind::Key => strip_canary(n),
    },
    clients: &[
        Some("checkout-canary"),
        Some("checkout-canary"),
        Some("checkout-canary"),
        Some("checkout-canary"),
        Some("checkout"),
        Some("checkout-canary-2"),
        Some("other"),
        None,
    ],
    logical: &[
        "orders",
        "orders",
        "payments",
        "orders-canary",
        "g",
        "g-canary",
        "t",
        "",
        "-canary",
    ],
    physical: &[
        "orders-canary",
        "orders",
        "payments",
        "payments-canary",
        "g-canary",
        "t-canary",
        "g",
        "-canary",
        "orders-canary-canary",
        "",
    ],
};

macro_rules! violation {
    ($($t:tt)*) => {
        panic!("ORACLE: {}", format!($($t)*))
    };
}

/// The ApiVersions v0 request (null client id) that stands in for a refused request.
fn is_refusal_stand_in(frame: &[u8]) -> bool {
    frame.len() == 10 && frame[0..4] == [0, 18, 0, 0] && frame[8..10] == [0xff, 0xff]
}

/// Every complete frame of a stream, and the readable start of an incomplete last one (the
/// filter matches a response to a request as soon as it has read the request's header, and
/// answers a refused request as soon as the broker's response to its stand-in begins).
fn with_partial(stream: &[u8]) -> Vec<Bytes> {
    frames_at(stream).into_iter().map(|(_, f)| f).collect()
}

/// [`with_partial`] with the stream offset each frame (its size field) starts at.
pub fn frames_at(stream: &[u8]) -> Vec<(usize, Bytes)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for f in frames::split(stream) {
        let len = f.len();
        out.push((at, f));
        at += 4 + len;
    }
    if let Some(size) = stream.get(at..at + 4) {
        if i32::from_be_bytes([size[0], size[1], size[2], size[3]]) >= 0 {
            out.push((at, Bytes::copy_from_slice(&stream[at + 4..])));
        }
    }
    out
}

fn tenant_of(m: &Model, r: &Req) -> Option<bool> {
    // A header kafka-protocol cannot decode: the broker cannot read it either; no verdict.
    if r.api.is_some() && r.header.is_none() {
        return None;
    }
    if known("header-tags") && r.tag_bytes > 1 {
        return None;
    }
    r.client_id.as_deref().map(m.is_tenant)
}

/// Checks everything above; panics (a libFuzzer crash) with what went wrong. With
/// `KAFKA_FUZZ_VERBOSE` set, the four streams' frames are printed first (for triage).
pub fn check(m: &Model, c: &Conn) {
    if std::env::var_os("KAFKA_FUZZ_VERBOSE").is_some() {
        eprintln!("{}", describe(c));
    }
    if std::env::var_os("KAFKA_FUZZ_DUMP").is_some() {
        // Whole streams in hex, to replay a finding in a unit test.
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        eprintln!("client sent: {}", hex(&c.orig_req));
        eprintln!("broker sent: {}", hex(&c.orig_resp));
    }
    check_requests(m, c);
    check_responses(m, c);
}

/// The frames of the four streams, one line each.
pub fn describe(c: &Conn) -> String {
    let mut metrics: Vec<String> = c
        .sink
        .values
        .iter()
        .map(|(k, v)| format!("{k:?}={v}"))
        .collect();
    metrics.sort();
    let mut out = format!("closed: {:?}\nmetrics: {}\n", c.closed, metrics.join(" "));
    for (what, stream) in [("client sent", &c.orig_req), ("broker got", &c.fwd_req)] {
        out += &format!("{what} ({} bytes):\n", stream.len());
        for f in with_partial(stream) {
            match frames::request(&f) {
                Some(r) => {
                    out += &format!(
                        "  api {} v{} corr {} client {:?} header {} acks0 {} len {} head {:02x?}\n",
                        r.api_key,
                        r.version,
                        r.correlation_id,
                        r.client_id,
                        r.header.is_some(),
                        r.acks0,
                        f.len(),
                        &f[..f.len().min(40)]
                    )
                }
                None => out += &format!("  short frame {:?}\n", &f[..]),
            }
        }
    }
    for (what, stream) in [("broker sent", &c.orig_resp), ("client got", &c.fwd_resp)] {
        out += &format!("{what} ({} bytes):\n", stream.len());
        for f in frames::split(stream) {
            let head = &f[..f.len().min(24)];
            out += &format!(
                "  corr {:?} len {} head {head:02x?}\n",
                frames::response_correlation_id(&f),
                f.len()
            );
        }
    }
    out
}

fn check_requests(m: &Model, c: &Conn) {
    // The client's frames, the start of an incomplete last one included (a refused request is
    // substituted as soon as its header is read).
    let orig: Vec<(Bytes, Req)> = with_partial(&c.orig_req)
        .into_iter()
        .filter_map(|f| frames::request(&f).map(|r| (f, r)))
        .collect();
    let mut next = 0usize;
    for (j, f) in frames::split(&c.fwd_req).iter().enumerate() {
        let Some(fr) = frames::request(f) else {
            continue;
        };
        let corr = fr.correlation_id;
        // The client's frames, in order: the forwarded one is one of them (rewritten or not),
        // or the stand-in for one.
        let Some(first) = orig[next..]
            .iter()
            .position(|(_, o)| o.correlation_id == corr)
        else {
            violation!(
                "request frame #{j} reached the broker with correlation id {corr}, which the \
                 client did not send (or not in this order)"
            );
        };
        let candidates: Vec<&(Bytes, Req)> = orig[next + first..]
            .iter()
            .filter(|(_, o)| o.correlation_id == corr)
            .collect();
        next += first + 1;
        if is_refusal_stand_in(f) {
            continue;
        }
        let Some(tenant) = tenant_of(m, &fr) else {
            continue;
        };
        if !tenant {
            if fr.api.is_some() && !candidates.iter().any(|(o, _)| o == f) {
                violation!(
                    "request #{j} (api {} v{}, client {:?}) of a client under no rule was changed",
                    fr.api_key,
                    fr.version,
                    fr.client_id
                );
            }
            continue;
        }
        if known("tag-overflow")
            && candidates.iter().any(|(_, o)| match (o.api, &o.body) {
                (Some(k), Some(b)) => names::has_overflowing_tag(k, o.version, b, true),
                _ => false,
            })
        {
            continue;
        }
        let Some(key) = fr.api else {
            violation!(
                "request #{j} with unknown API key {} from client {:?} under the rule reached the \
                 broker (it cannot be answered: the connection must close)",
                fr.api_key,
                fr.client_id
            );
        };
        match names::treatment(fr.api_key, fr.version) {
            Treatment::NameFree => {}
            Treatment::Refused => violation!(
                "{key:?} v{} request #{j} from client {:?} under the rule reached the broker: it \
                 must be refused",
                fr.version,
                fr.client_id
            ),
            Treatment::Rewritten => {
                let body = fr.body.clone().unwrap_or_default();
                match names::request_names(key, fr.version, &body) {
                    Ok(found) => {
                        if let Some(u) = found.unmappable.first() {
                            violation!(
                                "{key:?} v{} request #{j} with an unmappable {u} reached the broker",
                                fr.version
                            );
                        }
                        for (kind, name) in &found.names {
                            if !(m.request_ok)(*kind, name) {
                                violation!(
                                    "{key:?} v{} request #{j} reached the broker with {kind:?} \
                                     `{name}`, not a broker-side name of the rule ({:?})",
                                    fr.version,
                                    found.names
                                );
                            }
                        }
                    }
                    Err(e) => check_produce_head(m, key, &fr, &body, j, &e),
                }
            }
        }
    }
}

/// A forwarded request under the rule that does not decode: only a single-topic Produce request
/// is rewritten from its head (its records are not parsed): its head must be right.
fn check_produce_head(m: &Model, key: ApiKey, fr: &Req, body: &Bytes, j: usize, e: &str) {
    let head = (key == ApiKey::Produce && fr.version <= 12)
        .then(|| frames::produce_request_head(body, fr.version))
        .flatten();
    let Some(head) = head.filter(|h| h.topic_count <= 1) else {
        violation!(
            "{key:?} v{} request #{j} from a client under the rule reached the broker but does \
             not decode ({e}): it must be refused",
            fr.version
        );
    };
    for (kind, name) in [(Kind::Txn, &head.txn), (Kind::Topic, &head.first_topic)] {
        if let Some(name) = name {
            if !(m.request_ok)(kind, name) {
                violation!(
                    "Produce v{} request #{j} reached the broker with {kind:?} `{name}` in its head",
                    fr.version
                );
            }
        }
    }
}

/// Findings the oracles accept while they are open (see fuzz/README.md, "Findings"), so that a
/// run can look past them: `KAFKA_FUZZ_KNOWN`, a comma-separated list (none by default: every
/// finding so far is fixed; the names stay so that a run can check an old build).
///
/// * `coordinator-keys`: a FindCoordinator v4+ key that neither the group nor the
///   transactional-id mapping maps back is shown to the client as the broker sent it.
/// * `tag-overflow`: an unknown tagged field whose tag is 2^31 or more is counted but not written
///   when the filter re-encodes a message (kafka-protocol), which shifts what the reader parses.
/// * `header-tags`: a request header v2 whose tagged-field section is more than its one-byte
///   count of zero (tagged fields, or a count in a longer varint) is taken as undecodable by the
///   filter.
pub fn known(finding: &str) -> bool {
    thread_local! {
        static KNOWN: Vec<String> = std::env::var("KAFKA_FUZZ_KNOWN")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    KNOWN.with(|k| k.iter().any(|k| k == finding))
}

/// The multiset of what the client may be shown, from what the broker sent.
fn expected_names(m: &Model, key: ApiKey, v: i16, broker: &[&Bytes]) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    for b in broker {
        let Some((_, body)) = frames::response_body(b, key, v) else {
            continue;
        };
        if let Ok(found) = names::response_names(key, v, &body) {
            for (kind, name) in found.names {
                match (m.to_client)(kind, &name) {
                    Some(shown) => out.push((kind, shown)),
                    // Finding `coordinator-keys` (see [`known`], fixed): a broker only echoes
                    // the broker-side keys it was asked for, so this needs a misbehaving broker.
                    None if kind == Kind::Key && known("coordinator-keys") => {
                        out.push((kind, name))
                    }
                    None => {}
                }
            }
        }
    }
    out
}

fn check_responses(m: &Model, c: &Conn) {
    // The client's requests, each with the stream offset from which the filter may have read
    // its header (it matches responses against the requests it has read so far): its fixed
    // fields. Erring early keeps the check sound (a request read later only makes a response
    // the filter saw as unmatched look matched).
    let mut table: VecDeque<(usize, Req)> = frames_at(&c.orig_req)
        .iter()
        .filter_map(|(at, f)| Some((at + 4 + 8, frames::request(f)?)))
        .filter(|(_, r)| !r.acks0)
        .collect();
    let tenant_from = table
        .iter()
        .find(|(_, r)| tenant_of(m, r) == Some(true))
        .map(|(at, _)| *at);
    let broker = frames_at(&c.orig_resp);
    let mut next = 0usize;
    for (j, f) in frames::split(&c.fwd_resp).iter().enumerate() {
        let Some(corr) = frames::response_correlation_id(f) else {
            // Too short for a correlation id: the broker's next such frame.
            let Some(k) = broker[next..].iter().position(|(_, b)| b.len() < 4) else {
                violation!("response #{j} of {} bytes reached the client, but the broker sent none so short", f.len());
            };
            let (at, b) = &broker[next + k];
            let sent = c.requests_when(at + 4 + b.len());
            next += k + 1;
            if tenant_from.is_some_and(|t| t <= sent) {
                violation!(
                    "response #{j} of {} bytes (no correlation id) reached a client under the rule",
                    f.len()
                );
            }
            continue;
        };
        let Some(first) = broker[next..]
            .iter()
            .position(|(_, b)| frames::response_correlation_id(b) == Some(corr))
        else {
            violation!("response #{j} with correlation id {corr} reached the client, but the broker sent none (in this order)");
        };
        let candidates: Vec<&Bytes> = broker[next + first..]
            .iter()
            .filter(|(_, b)| frames::response_correlation_id(b) == Some(corr))
            .map(|(_, b)| b)
            .collect();
        // What the client had sent when the filter read this response's correlation id.
        let sent = c.requests_when(broker[next + first].0 + 8);
        next += first + 1;
        // The client's request it answers (Kafka answers in order: older ones are passed over).
        let Some(at) = table
            .iter()
            .take_while(|(read_at, _)| *read_at <= sent)
            .position(|(_, r)| r.correlation_id == corr)
        else {
            if tenant_from.is_some_and(|t| t <= sent) {
                violation!("response #{j} (correlation id {corr}) answers no request of the client, yet reached a client under the rule");
            }
            continue;
        };
        table.drain(..at);
        let Some((_, r)) = table.pop_front() else {
            continue;
        };
        let Some(tenant) = tenant_of(m, &r) else {
            continue;
        };
        if !tenant {
            if r.api.is_some() && !candidates.contains(&f) {
                violation!(
                    "response #{j} to api {} v{} of client {:?} under no rule was changed",
                    r.api_key,
                    r.version,
                    r.client_id
                );
            }
            continue;
        }
        let Some(key) = r.api else {
            violation!(
                "response #{j} to unknown API key {} of a client under the rule was forwarded (the \
                 connection must close)",
                r.api_key
            );
        };
        let v = r.version;
        if known("tag-overflow")
            && candidates.iter().any(|b| {
                frames::response_body(b, key, v)
                    .is_some_and(|(_, body)| names::has_overflowing_tag(key, v, &body, false))
            })
        {
            continue;
        }
        match names::treatment(r.api_key, v) {
            Treatment::NameFree => {
                if key == ApiKey::ApiVersions {
                    check_api_versions(f, v, j);
                }
            }
            Treatment::Refused => {
                if !names::has_response_schema(r.api_key, v) {
                    violation!("response #{j} to {key:?} v{v} (no schema: refused by closing) reached the client");
                }
                let Some((_, body)) = frames::response_body(f, key, v) else {
                    violation!("the error response #{j} to refused {key:?} v{v} has no header");
                };
                if let Err(e) = names::response_decodes(key, v, &body) {
                    violation!(
                        "the error response #{j} to refused {key:?} v{v} does not decode: {e}"
                    );
                }
            }
            Treatment::Rewritten => {
                let Some((_, body)) = frames::response_body(f, key, v) else {
                    violation!("response #{j} to {key:?} v{v} has no header");
                };
                match names::response_names(key, v, &body) {
                    Ok(found) => {
                        let mut expected = expected_names(m, key, v, &candidates);
                        for (kind, name) in &found.names {
                            match expected.iter().position(|(k, n)| k == kind && n == name) {
                                Some(i) => {
                                    expected.swap_remove(i);
                                }
                                None => violation!(
                                    "response #{j} to {key:?} v{v} shows the client {kind:?} \
                                     `{name}`, which is not the client-side name of anything \
                                     the broker sent (shown {:?}, broker sent {:?})",
                                    found.names,
                                    candidates
                                        .iter()
                                        .filter_map(|b| frames::response_body(b, key, v))
                                        .map(|(_, b)| names::response_names(key, v, &b)
                                            .map(|f| f.names))
                                        .collect::<Vec<_>>()
                                ),
                            }
                        }
                    }
                    Err(e) => check_response_head(m, key, v, &body, &candidates, j, &e),
                }
            }
        }
    }
}

/// A forwarded response under the rule that does not decode: only single-topic Produce and
/// Fetch responses are mapped from their heads.
fn check_response_head(
    m: &Model,
    key: ApiKey,
    v: i16,
    body: &Bytes,
    broker: &[&Bytes],
    j: usize,
    e: &str,
) {
    let Some(head) = frames::response_head(key, body, v).filter(|h| h.topic_count <= 1) else {
        violation!("response #{j} to {key:?} v{v} reached a client under the rule but does not decode ({e})");
    };
    let Some(shown) = head.first_topic else {
        return;
    };
    let ok = broker.iter().any(|b| {
        frames::response_body(b, key, v)
            .and_then(|(_, bb)| frames::response_head(key, &bb, v))
            .and_then(|h| h.first_topic)
            .and_then(|n| (m.to_client)(Kind::Topic, &n))
            .is_some_and(|n| n == shown)
    });
    if !ok {
        violation!("response #{j} to {key:?} v{v} shows topic `{shown}` in its head, not the client-side name of the broker's");
    }
}

/// Under a rejecting rule, ApiVersions offers only what the rule lets through.
fn check_api_versions(f: &Bytes, v: i16, j: usize) {
    let Some((_, mut body)) = frames::response_body(f, ApiKey::ApiVersions, v) else {
        return;
    };
    let Ok(resp) = ApiVersionsResponse::decode(&mut body, v) else {
        return; // forwarded as the broker sent it: carries no names
    };
    if resp.error_code != 0 {
        return;
    }
    for k in &resp.api_keys {
        for version in k.min_version..=k.max_version {
            if names::treatment(k.api_key, version) == Treatment::Refused {
                violation!(
                    "ApiVersions response #{j} offers api {} v{version} (range {}..={}), which the \
                     rule refuses",
                    k.api_key,
                    k.min_version,
                    k.max_version
                );
            }
        }
    }
}
