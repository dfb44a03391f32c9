//! Which APIs and versions the filter can carry for a client under a rule.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Message, Request, VersionRange};

use super::rewritten_apis;

/// How the filter treats an API under a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Names in requests and responses are rewritten (see `rewrite_request`/`rewrite_response`).
    Rewritten,
    /// The API carries no topic, group or transactional id: forwarded untouched.
    NameFree,
    /// The filter cannot rewrite it (an API with names it does not handle, a version
    /// kafka-protocol has no schema for, or an unknown API key).
    Unsupported,
}

/// The first Fetch version that identifies topics by id instead of name.
const FETCH_TOPIC_IDS: i16 = 13;

/// How the filter treats `api_key` at `api_version` for a client under a rule.
pub fn coverage(api_key: i16, api_version: i16) -> Coverage {
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Coverage::Unsupported;
    };
    // Fetch v13+ names topics by id only (ids come from Metadata, whose names are mapped):
    // nothing to rewrite either way, so the frames need not be held.
    if key == ApiKey::Fetch
        && api_version >= FETCH_TOPIC_IDS
        && contains(key.valid_versions(), api_version)
    {
        return Coverage::NameFree;
    }
    if let Some(versions) = rewritten_versions(key) {
        return if contains(versions, api_version) {
            Coverage::Rewritten
        } else {
            Coverage::Unsupported
        };
    }
    match key {
        // Clients negotiate versions by sending ApiVersions at the newest version they know
        // (the broker answers an unknown one with a v0 error listing its versions), so every
        // version must pass. It names nothing at any version.
        ApiKey::ApiVersions if api_version >= 0 => Coverage::NameFree,
        ApiKey::SaslHandshake
        | ApiKey::SaslAuthenticate
        | ApiKey::DescribeCluster
        | ApiKey::GetTelemetrySubscriptions
        | ApiKey::PushTelemetry
            if contains(key.valid_versions(), api_version) =>
        {
            Coverage::NameFree
        }
        _ => Coverage::Unsupported,
    }
}

/// The versions of `api_key` for which [`coverage`] is not [`Coverage::Unsupported`], one range
/// (`None`: none): computed from the same tables as [`coverage`], without a call per version.
pub fn usable_versions(api_key: i16) -> Option<VersionRange> {
    let key = ApiKey::try_from(api_key).ok()?;
    let valid = key.valid_versions();
    let range = match (key, rewritten_versions(key)) {
        // Rewritten up to v12, then name-free while the API has versions (see `coverage`).
        (ApiKey::Fetch, Some(r)) if r.max.saturating_add(1) >= FETCH_TOPIC_IDS => VersionRange {
            min: r.min,
            max: valid.max.max(r.max),
        },
        (_, Some(r)) => r,
        (ApiKey::ApiVersions, None) => VersionRange {
            min: 0,
            max: i16::MAX,
        },
        (
            ApiKey::SaslHandshake
            | ApiKey::SaslAuthenticate
            | ApiKey::DescribeCluster
            | ApiKey::GetTelemetrySubscriptions
            | ApiKey::PushTelemetry,
            None,
        ) => valid,
        _ => return None,
    };
    (range.min <= range.max).then_some(range)
}

fn contains(versions: VersionRange, version: i16) -> bool {
    versions.min <= version && version <= versions.max
}

/// The versions at which kafka-protocol has both the request and the response schema (both are
/// decoded and re-encoded) and lists the version for the API.
fn both<R: Request>(key: ApiKey) -> VersionRange {
    R::VERSIONS
        .intersect(&<R::Response as Message>::VERSIONS)
        .intersect(&key.valid_versions())
}

macro_rules! rewritten_versions {
    ($($key:ident => $req:ident, $rewrite_req:path, $rewrite_resp:path;)*) => {
        /// The versions rewritten for `key`, `None` if the filter does not rewrite the API.
        fn rewritten_versions(key: ApiKey) -> Option<VersionRange> {
            use kafka_protocol::messages::*;
            match key {
                $(ApiKey::$key => Some(both::<$req>(key)),)*
                _ => None,
            }
        }
    };
}
rewritten_apis!(rewritten_versions);

#[cfg(test)]
mod tests {
    use super::*;

    /// [`usable_versions`] is exactly the versions [`coverage`] does not refuse, for every key.
    #[test]
    fn usable_versions_agree_with_coverage() {
        for key in -2..200 {
            let range = usable_versions(key);
            for v in -2..=64 {
                let usable = coverage(key, v) != Coverage::Unsupported;
                let inside = range.is_some_and(|r| contains(r, v));
                assert_eq!(usable, inside, "key {key} v{v}: {range:?}");
            }
            if let Some(r) = range {
                assert_ne!(coverage(key, r.max), Coverage::Unsupported, "key {key}");
            }
        }
    }
}
