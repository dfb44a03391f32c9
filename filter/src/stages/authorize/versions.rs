//! ApiVersions responses to clients under ACLs: advertise only the APIs the filter's table of
//! checks knows and the versions it can decode (a request it cannot read is denied, so a client
//! should not try it: an AdminClient that is not offered DescribeTopicPartitions describes
//! topics with Metadata), and no version that
//! names topics by id alone (Produce v13, Fetch v13+): the ACLs are on names, so such clients
//! negotiate the versions with names instead.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::acl::checks;

/// The highest version of each API that names its topics.
fn named_max(api: ApiKey) -> i16 {
    match api {
        ApiKey::Produce | ApiKey::Fetch => 12,
        // OffsetFetch v10 names topics by id too.
        ApiKey::OffsetFetch | ApiKey::OffsetCommit => 9,
        _ => i16::MAX,
    }
}

/// The limited response body, or `None` if nothing changed or it does not decode.
pub fn limit(version: i16, mut body: Bytes) -> Option<BytesMut> {
    let mut response = ApiVersionsResponse::decode(&mut body, version).ok()?;
    if response.error_code != 0 {
        return None;
    }
    let before = response.api_keys.len();
    let mut changed = false;
    response.api_keys.retain_mut(|k| {
        let Ok(api) = ApiKey::try_from(k.api_key) else {
            return false;
        };
        if !checks::in_table(api) {
            return false;
        }
        let known = api.valid_versions();
        let (lo, hi) = (
            k.min_version.max(known.min),
            k.max_version.min(known.max).min(named_max(api)),
        );
        if lo > hi {
            return false;
        }
        if (lo, hi) != (k.min_version, k.max_version) {
            changed = true;
            k.min_version = lo;
            k.max_version = hi;
        }
        true
    });
    if !changed && response.api_keys.len() == before {
        return None;
    }
    let mut out = BytesMut::new();
    response.encode(&mut out, version).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;

    fn response(keys: &[(i16, i16, i16)]) -> Bytes {
        let r = ApiVersionsResponse::default().with_api_keys(
            keys.iter()
                .map(|(k, lo, hi)| {
                    ApiVersion::default()
                        .with_api_key(*k)
                        .with_min_version(*lo)
                        .with_max_version(*hi)
                })
                .collect(),
        );
        let mut b = BytesMut::new();
        r.encode(&mut b, 3).unwrap();
        b.freeze()
    }

    #[test]
    fn topic_ids_and_unknown_apis_are_not_offered() {
        let out = limit(
            3,
            response(&[(0, 3, 13), (1, 4, 18), (3, 0, 12), (999, 0, 1)]),
        )
        .unwrap();
        let r = ApiVersionsResponse::decode(&mut out.freeze(), 3).unwrap();
        let got: Vec<_> = r
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        assert_eq!(got, vec![(0, 3, 12), (1, 4, 12), (3, 0, 12)]);
        assert!(limit(3, response(&[(3, 0, 12)])).is_none());
        assert!(limit(3, Bytes::from_static(&[1, 2])).is_none());
    }
}
