//! ApiVersions responses to clients under ACLs: advertise only the APIs the filter's table of
//! checks knows and the versions it can decode (a request it cannot read is denied, so a client
//! should not try it: an AdminClient that is not offered DescribeTopicPartitions describes
//! topics with Metadata), and no version that
//! names topics by id alone (Produce v13, Fetch v13+): the ACLs are on names, so such clients
//! negotiate the versions with names instead.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::acl::checks;
use crate::codec::api_versions::narrow;

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
pub fn limit(version: i16, body: &Bytes) -> Option<BytesMut> {
    narrow(version, body, |key, min, max| {
        let api = ApiKey::try_from(key)
            .ok()
            .filter(|a| checks::in_table(*a))?;
        let known = api.valid_versions();
        Some((min.max(known.min), max.min(known.max).min(named_max(api))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::protocol::{Decodable, Encodable};

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
            &response(&[(0, 3, 13), (1, 4, 18), (3, 0, 12), (999, 0, 1)]),
        )
        .unwrap();
        let r = ApiVersionsResponse::decode(&mut out.freeze(), 3).unwrap();
        let got: Vec<_> = r
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        assert_eq!(got, vec![(0, 3, 12), (1, 4, 12), (3, 0, 12)]);
        assert!(limit(3, &response(&[(3, 0, 12)])).is_none());
        assert!(limit(3, &Bytes::from_static(&[1, 2])).is_none());
    }
}
