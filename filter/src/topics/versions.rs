//! ApiVersions responses to clients under a rule: advertise only what the filter can rewrite, so
//! that clients negotiate versions it knows and do not try APIs it would refuse.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::rewrite;
use super::rules::UnsupportedPolicy;

/// The limited response body, or `None` if nothing changed. Errors: the body does not decode
/// as this version (a broker answering an unsupported ApiVersions version uses v0).
pub fn limit(
    version: i16,
    mut body: Bytes,
    policy: UnsupportedPolicy,
) -> Result<Option<BytesMut>, String> {
    let mut response =
        ApiVersionsResponse::decode(&mut body, version).map_err(|e| e.to_string())?;
    if response.error_code != 0 || policy == UnsupportedPolicy::PassThrough {
        return Ok(None);
    }
    let before = response.api_keys.len();
    let mut changed = false;
    response.api_keys.retain_mut(|k| {
        let Some((min, max)) = rewritable_range(k.api_key, k.min_version, k.max_version) else {
            return false;
        };
        if (min, max) != (k.min_version, k.max_version) {
            changed = true;
            k.min_version = min;
            k.max_version = max;
        }
        true
    });
    if !changed && response.api_keys.len() == before {
        return Ok(None);
    }
    let mut out = BytesMut::new();
    response
        .encode(&mut out, version)
        .map_err(|e| e.to_string())?;
    Ok(Some(out))
}

/// The versions of an API, within what the broker offers, that a client under a rule may use:
/// all of them for an API without names, those the filter can rewrite otherwise, none for an
/// API it cannot.
fn rewritable_range(api_key: i16, min: i16, max: i16) -> Option<(i16, i16)> {
    let usable = rewrite::usable_versions(api_key)?;
    let (lo, hi) = (min.max(usable.min), max.min(usable.max));
    (lo <= hi).then_some((lo, hi))
}
