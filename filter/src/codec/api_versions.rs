//! Narrowing what an ApiVersions response offers: the stages that must keep clients off some
//! APIs or versions (name conversion, ACLs, broker addresses) each say, per API, which range is
//! left; this decodes, applies and re-encodes once.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::{Decodable, Encodable};

/// The response body with each API's versions as `range(api_key, min, max)` says (`None`: the
/// API is not offered at all). `None` when nothing changed, the response is an error, or it does
/// not decode (a broker answering an unsupported ApiVersions version uses v0): versions carry no
/// names, so an answer left as it is leaks nothing.
pub fn narrow(
    version: i16,
    body: &Bytes,
    range: impl Fn(i16, i16, i16) -> Option<(i16, i16)>,
) -> Option<BytesMut> {
    let mut r = ApiVersionsResponse::decode(&mut body.clone(), version).ok()?;
    if r.error_code != 0 {
        return None;
    }
    let before = r.api_keys.len();
    let mut changed = false;
    r.api_keys.retain_mut(|k| {
        let Some((min, max)) = range(k.api_key, k.min_version, k.max_version) else {
            return false;
        };
        if min > max {
            return false;
        }
        if (min, max) != (k.min_version, k.max_version) {
            changed = true;
            k.min_version = min;
            k.max_version = max;
        }
        true
    });
    if !changed && r.api_keys.len() == before {
        return None;
    }
    let mut out = BytesMut::new();
    r.encode(&mut out, version).ok()?;
    Some(out)
}
