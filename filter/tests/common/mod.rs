//! Frames encoded with `kafka-protocol`, shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_filter::connection::{KafkaConnection, Verdict};
use kafka_filter::metrics::RecordingSink;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A frame: the size field, then `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A request frame built by hand (for API keys and versions kafka-protocol has no schema for):
/// the fixed header fields, a null client id, then `rest`.
pub fn bare_request(api_key: i16, version: i16, corr: i32, rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&api_key.to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&corr.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(rest);
    frame(&body)
}

/// A request frame from client id `client`.
pub fn request_from<B: Encodable>(
    api: ApiKey,
    version: i16,
    corr: i32,
    client: &str,
    body: &B,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_string(client.to_string())))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    frame(&buf)
}

pub fn response<B: Encodable>(api: ApiKey, version: i16, corr: i32, body: &B) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut buf, api.response_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    frame(&buf)
}

/// An ApiVersions response body offering each `(api_key, min, max)`.
pub fn offering(keys: &[(i16, i16, i16)]) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        keys.iter()
            .map(|&(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(key)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}

/// What a host forwards for one direction after applying each chunk's verdict.
pub fn drive(
    conn: &mut KafkaConnection,
    stream: &[u8],
    chunk: usize,
    requests: bool,
    m: &mut RecordingSink,
) -> Option<Vec<u8>> {
    let chunks: Vec<&[u8]> = stream.chunks(chunk.max(1)).collect();
    match feed(conn, &chunks, requests, m) {
        (out, false) => Some(out),
        (_, true) => None,
    }
}

/// The bytes a host forwards for each chunk until the connection closes, and whether it did.
pub fn feed(
    conn: &mut KafkaConnection,
    chunks: &[&[u8]],
    requests: bool,
    m: &mut RecordingSink,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for c in chunks {
        let mut src = *c;
        let verdict = if requests {
            conn.on_request_data(&mut src, || 1_000, m)
        } else {
            conn.on_response_data(&mut src, || 2_000, m)
        };
        match verdict {
            Verdict::Continue => out.extend_from_slice(c),
            Verdict::Rewrite { prefix_len, bytes } => {
                out.extend_from_slice(&bytes);
                out.extend_from_slice(&c[prefix_len..]);
            }
            Verdict::Close => return (out, true),
        }
    }
    (out, false)
}

/// A record set of batches with these record counts, offsets from `base`.
pub fn record_set(batches: &[usize], base: i64) -> Bytes {
    let mut buf = BytesMut::new();
    let mut offset = base;
    for &n in batches {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: offset + i as i64,
                // offset - sequence constant: the encoder keeps the records in one batch.
                sequence: (offset + i as i64) as i32,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from(vec![b'v'; 10 + i])),
                headers: IndexMap::new(),
            })
            .collect();
        offset += n as i64;
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
    }
    buf.freeze()
}
