//! What a rate limit's counters are called, and how a client's key is kept short.

use crate::limits::{Kind, KINDS};

/// The counters of one active limit, named once per connection and key.
#[derive(Debug)]
pub(super) struct Names {
    pub(super) accounted: [String; KINDS],
    pub(super) throttled: String,
    pub(super) throttle_ms: String,
    pub(super) would_throttle: String,
    /// Per key, for limits with a key (`other` past `max_keys`).
    pub(super) key_throttled: Option<String>,
    pub(super) key_throttle_ms: Option<String>,
}

impl Names {
    pub(super) fn new(limit: &str, label: Option<&str>) -> Self {
        let kinds = [
            Kind::Requests,
            Kind::ProduceBytes,
            Kind::FetchBytes,
            Kind::TopicMutations,
            Kind::Connections,
        ];
        Self {
            accounted: kinds.map(|k| limit_metric(limit, k.name())),
            throttled: limit_metric(limit, "throttled"),
            throttle_ms: limit_metric(limit, "throttle_ms"),
            would_throttle: limit_metric(limit, "would_throttle"),
            key_throttled: label.map(|l| key_metric(limit, l, "throttled")),
            key_throttle_ms: label.map(|l| key_metric(limit, l, "throttle_ms")),
        }
    }
}

/// A limit's counter: `kafka.limit.<name>.limit_<what>` (Prometheus: `kafka_limit_<what>` with
/// the label `kafka_limit`).
pub(super) fn limit_metric(limit: &str, what: &str) -> String {
    format!("limit.{limit}.limit_{what}")
}

/// A key's counter: `kafka.limit.<name>.key.<key>.limit_key_<what>` (labels `kafka_limit` and
/// `kafka_limit_key`).
fn key_metric(limit: &str, label: &str, what: &str) -> String {
    format!("limit.{limit}.key.{label}.limit_key_{what}")
}

/// Longest key kept as it is: a client id may be 32 KiB, and every admitted key is stored.
const MAX_KEY_BYTES: usize = 128;

/// A key of at most about [`MAX_KEY_BYTES`]: a longer one is cut and told apart by a hash of the
/// whole (FNV-1a: not for secrecy, only so that two long ids with one prefix stay two keys).
pub(super) fn bounded_key(key: String) -> String {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut cut = MAX_KEY_BYTES;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{hash:016x}", key.get(..cut).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_bounded_and_stay_distinct() {
        assert_eq!(bounded_key("app-1".into()), "app-1");
        let a = bounded_key(format!("{}a", "x".repeat(40_000)));
        let b = bounded_key(format!("{}b", "x".repeat(40_000)));
        assert!(a.len() <= MAX_KEY_BYTES + 17 && b.len() <= MAX_KEY_BYTES + 17);
        assert_ne!(a, b);
        let multibyte = bounded_key("é".repeat(100));
        assert!(multibyte.len() <= MAX_KEY_BYTES + 17);
    }
}
