//! ApiVersions responses to clients under a rule: advertise only what the filter can rewrite, so
//! that clients negotiate versions it knows and do not try APIs it would refuse.

use bytes::{Bytes, BytesMut};

use super::rewrite;
use super::rules::UnsupportedPolicy;
use crate::codec::api_versions::narrow;

/// The limited response body, or `None` if nothing changed (or it does not decode).
pub fn limit(version: i16, body: &Bytes, policy: UnsupportedPolicy) -> Option<BytesMut> {
    if policy == UnsupportedPolicy::PassThrough {
        return None;
    }
    narrow(version, body, |key, min, max| {
        rewritable_range(key, min, max)
    })
}

/// The versions of an API, within what the broker offers, that a client under a rule may use:
/// all of them for an API without names, those the filter can rewrite otherwise, none for an
/// API it cannot.
fn rewritable_range(api_key: i16, min: i16, max: i16) -> Option<(i16, i16)> {
    let usable = rewrite::usable_versions(api_key)?;
    let (lo, hi) = (min.max(usable.min), max.min(usable.max));
    (lo <= hi).then_some((lo, hi))
}
