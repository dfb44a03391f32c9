//! What must hold under ACLs (README, "Authorization"), checked on the bytes that reached the
//! broker, read with kafka-protocol independently of the filter's own checks:
//!
//! * no request naming a denied topic (to read, write or look at it: a Fetch session's forgotten
//!   topics read nothing and are not authorized, as in Kafka) (`secret`), group (`g-secret`) or transactional id
//!   (`t-secret`) reaches the broker with that name, and nothing of `intruder` (denied every
//!   topic) that names a topic does;
//! * no unknown API key, no version kafka-protocol has no schema for (but ApiVersions, which
//!   negotiates them), and no frame whose header does not decode reaches the broker;
//! * forwarded requests are the client's, in order (or the stand-in for one answered here);
//! * correlation integrity, both ways: see [`crate::pairing`].

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchRequest};
use kafka_protocol::protocol::Decodable;

use crate::drive::Conn;
use crate::frames;
use crate::names::{self, Kind};
use crate::oracle::Model;

pub const DENIED_TOPIC: &str = "secret";
pub const DENIED_GROUP: &str = "g-secret";
pub const DENIED_TXN: &str = "t-secret";
pub const INTRUDER: &str = "intruder";

/// The policy's configuration, with `$extra` top-level fields: everything allowed but the names
/// above, every topic for `intruder`, and Create and ClusterAction on the cluster (which, as in
/// Kafka, would allow creating any topic, and a follower's Fetch or a broker's AddPartitionsToTxn
/// of any topic); with per-client metrics and a name-conversion rule after it, so frames the ACL
/// stage replaced are shown to the stages after it.
macro_rules! acl_config {
    ($extra:literal) => {
        concat!(
            r#"{"acls":{"default":"allow","entries":[
        {"permission":"deny","operations":["All"],"resource_type":"topic","name":"secret"},
        {"permission":"deny","operations":["Create","ClusterAction"],"resource_type":"cluster"},
        {"permission":"deny","operations":["All"],"resource_type":"group","name":"g-secret"},
        {"permission":"deny","operations":["All"],"resource_type":"transactional_id","name":"t-secret"},
        {"match":{"client_id":{"exact":"intruder"}},"permission":"deny","operations":["All"],"resource_type":"topic","pattern_type":"any"}]},
        "rules":[{"name":"t","match":{"client_id":{"prefix":"team-a-"}},"topics":{"prefix":"team-a."}}],
        "client_metrics":{"max_clients":4,"max_topics":4}"#,
            $extra,
            "}"
        )
    };
}

/// The policy (see [`acl_config`]).
pub const ACL: Model = Model {
    config: acl_config!(""),
    is_tenant: |_| true,
    request_ok: |_, _| true,
    to_client: |_, n| Some(n.to_string()),
    clients: &[
        Some("app"),
        Some("app"),
        Some("team-a-x"),
        Some("intruder"),
        None,
    ],
    logical: &[
        "secret", "orders", "g-secret", "g1", "t-secret", "t1", "", "secre", "secret.",
    ],
    physical: &[
        "secret",
        "orders",
        "team-a.orders",
        "team-a.secret",
        "g-secret",
        "g1",
        "t-secret",
        "",
    ],
};

/// The correlation table's bound in the small configuration: a scenario overflows it easily.
pub const SMALL_INFLIGHT: usize = 4;

/// One configuration of the target.
pub struct Variant {
    pub model: Model,
    /// `max_inflight_requests` (the filter's default when not configured).
    pub max_inflight: usize,
}

/// The target's configurations, chosen by the input's first byte.
pub static CONFIGS: [Variant; 2] = [
    Variant {
        model: ACL,
        max_inflight: 10_000,
    },
    Variant {
        model: Model {
            config: acl_config!(r#","max_inflight_requests":4"#),
            ..ACL
        },
        max_inflight: SMALL_INFLIGHT,
    },
];

macro_rules! violation {
    ($($t:tt)*) => {
        panic!("ORACLE: {}", format!($($t)*))
    };
}

fn is_stand_in(frame: &[u8]) -> bool {
    frame.len() == 10 && frame[0..4] == [0, 18, 0, 0] && frame[8..10] == [0xff, 0xff]
}

/// The client-side name of a name forwarded for `client` (the rule prefixes team-a's topics).
fn client_side(client: Option<&str>, kind: Kind, name: &str) -> String {
    match (client, kind) {
        (Some(c), Kind::Topic) if c.starts_with("team-a-") => {
            name.strip_prefix("team-a.").unwrap_or(name).to_string()
        }
        _ => name.to_string(),
    }
}

/// Every check of the target: what reached the broker (below), and correlation integrity
/// ([`crate::pairing`]).
pub fn check(c: &Conn, variant: &Variant) {
    if std::env::var_os("KAFKA_FUZZ_VERBOSE").is_some() {
        eprintln!("{}", crate::oracle::describe(c));
    }
    crate::pairing::check(c, variant.max_inflight);
    check_requests(c);
}

fn check_requests(c: &Conn) {
    let orig: Vec<i32> = frames::split(&c.orig_req)
        .iter()
        .filter_map(frames::request)
        .map(|r| r.correlation_id)
        .collect();
    let mut next = 0usize;
    for (j, f) in frames::split(&c.fwd_req).iter().enumerate() {
        let Some(r) = frames::request(f) else {
            continue;
        };
        match orig[next.min(orig.len())..]
            .iter()
            .position(|corr| *corr == r.correlation_id)
        {
            Some(p) => next += p + 1,
            None => {
                // The last client frame may be incomplete (split() drops it) yet forwarded.
                if !c.orig_req.is_empty() && j + 1 < frames::split(&c.fwd_req).len() {
                    violation!(
                        "request #{j} (corr {}) reached the broker out of the client's order",
                        r.correlation_id
                    );
                }
            }
        }
        if is_stand_in(f) {
            continue;
        }
        let Some(key) = r.api else {
            violation!(
                "request #{j} with unknown API key {} reached the broker",
                r.api_key
            );
        };
        if r.header.is_none() {
            violation!("request #{j} ({key:?}) whose header does not decode reached the broker");
        }
        let range = key.valid_versions();
        // ApiVersions of any version passes: it is how a client learns which versions the
        // broker has (a broker answers a newer one with v0 and UNSUPPORTED_VERSION).
        if key != ApiKey::ApiVersions && (r.version < range.min || r.version > range.max) {
            violation!(
                "request #{j} ({key:?} v{}) of a version without a schema reached the broker",
                r.version
            );
        }
        let body: Bytes = r.body.clone().unwrap_or_default();
        let Ok(mut found) = names::request_names(key, r.version, &body) else {
            continue;
        };
        if key == ApiKey::Fetch {
            // A fetch session's forgotten topics read nothing (Kafka does not authorize them):
            // only the topics fetched count.
            let Ok(fetch) = FetchRequest::decode(&mut body.clone(), r.version) else {
                continue;
            };
            found.names = fetch
                .topics
                .iter()
                .map(|t| (Kind::Topic, t.topic.as_str().to_string()))
                .collect();
        }
        let client = r.client_id.as_deref();
        for (kind, name) in &found.names {
            let seen = client_side(client, *kind, name);
            let denied = match kind {
                Kind::Topic => seen == DENIED_TOPIC || client == Some(INTRUDER),
                Kind::Group => seen == DENIED_GROUP,
                Kind::Txn => seen == DENIED_TXN,
                Kind::Key => false,
            };
            if denied {
                violation!(
                    "request #{j} ({key:?} v{}) from {client:?} reached the broker naming the \
                     denied {kind:?} `{name}`",
                    r.version
                );
            }
        }
    }
}
