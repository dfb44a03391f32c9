//! Answering a request without the broker. A wasm network filter cannot write bytes to the
//! client out of the blue, so a refused request is replaced by a harmless one with the same
//! correlation id (ApiVersions v0: every broker answers it, and its answer carries no names), and
//! the broker's answer to that is replaced by an error response for the original request.

use kafka_protocol::messages::ApiKey;

use super::error_body::error_response_body;

const API_VERSIONS: i16 = ApiKey::ApiVersions as i16;

/// Whether the filter can build an error response for this API and version.
pub fn can_answer(api_key: i16, api_version: i16) -> bool {
    error_response_body(api_key, api_version, 0).is_some()
}

/// ApiVersions v0 (request header v1, null client id) with this correlation id.
pub fn substitute_request(correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(10);
    body.extend_from_slice(&API_VERSIONS.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    framed(&[&body])
}

/// A whole error response frame for the request `api_key` v`api_version` with this
/// correlation id; `None` if the filter has no schema to answer with.
pub fn error_response(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    error_code: i16,
) -> Option<Vec<u8>> {
    let api = ApiKey::try_from(api_key).ok()?;
    let body = error_response_body(api_key, api_version, error_code)?;
    let corr = correlation_id.to_be_bytes();
    // Response header v1 adds an empty tagged-field section.
    let header: &[u8] = if api.response_header_version(api_version) >= 1 {
        &[0]
    } else {
        &[]
    };
    Some(framed(&[&corr, header, &body]))
}

/// A frame: the size field, then the parts.
pub fn framed(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::{MetadataResponse, RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn substitute_is_an_api_versions_v0_request() {
        let f = substitute_request(42);
        let mut b = Bytes::copy_from_slice(&f[4..]);
        let h = RequestHeader::decode(&mut b, 1).unwrap();
        assert_eq!((h.request_api_key, h.request_api_version), (18, 0));
        assert_eq!(h.correlation_id, 42);
        assert!(b.is_empty());
    }

    #[test]
    fn error_response_decodes_for_the_original_request() {
        let f = error_response(ApiKey::Metadata as i16, 12, 7, 31).unwrap();
        let mut b = Bytes::copy_from_slice(&f[4..]);
        assert_eq!(ResponseHeader::decode(&mut b, 1).unwrap().correlation_id, 7);
        MetadataResponse::decode(&mut b, 12).unwrap();
        assert!(error_response(10_000, 0, 1, 31).is_none());
        assert!(!can_answer(10_000, 0));
        assert!(can_answer(0, 9));
    }
}
