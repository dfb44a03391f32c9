//! Request header parsing, from a frame's first bytes, with `kafka-protocol`.

use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::buf::NotEnoughBytesError;
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::produce::{self, scan_acks, Acks};
use super::{read_i16, read_i32};
use crate::api::{classify, version_known, ApiLabel};

/// api_key, api_version, correlation_id: the part every request header version shares.
pub const FIXED_HEADER_LEN: usize = 8;
/// The fixed part plus the client id's length field (header v1 and v2).
pub const FIRST_WANT: usize = FIXED_HEADER_LEN + 2;

#[derive(Debug, Clone, PartialEq)]
pub struct RequestHead {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// `None` for an API key the crate does not know.
    pub api: ApiLabel,
    /// Whether the crate has a schema for this API version.
    pub version_known: bool,
    /// False when the header could not be decoded (the frame is still forwarded untouched).
    pub header_decoded: bool,
    /// As decoded (no copy beyond the decoder's): most requests' client id is never looked at.
    pub client_id: Option<StrBytes>,
    /// Bytes of the request header (set when decoded).
    pub header_len: usize,
    /// False for a Produce request with acks=0: the broker sends no response to it.
    pub expects_response: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestParse {
    /// The frame's first `n` bytes are needed.
    Need(usize),
    Done(RequestHead),
    /// Too short to hold even the fixed header fields.
    Malformed,
}

/// Parse what can be known of a request from the frame's first bytes. `last_look`: no more of
/// the frame can be had, so a header that does not fit is reported instead of waited for.
pub fn parse_request(prefix: &[u8], last_look: bool) -> RequestParse {
    let (Some(api_key), Some(api_version), Some(correlation_id)) = (
        read_i16(prefix, 0),
        read_i16(prefix, 2),
        read_i32(prefix, 4),
    ) else {
        return if last_look {
            RequestParse::Malformed
        } else {
            RequestParse::Need(FIRST_WANT)
        };
    };
    let api = classify(api_key);
    let mut head = RequestHead {
        api_key,
        api_version,
        correlation_id,
        api,
        version_known: api.is_some_and(|a| version_known(a, api_version)),
        header_decoded: false,
        client_id: None,
        header_len: 0,
        expects_response: true,
    };
    let Some(api) = api else {
        // No schema, so no header version: forward as is, correlated by the fixed fields. The
        // client id sits where every header version since v1 has it: rules match on it.
        if let Some(len) = read_i16(prefix, FIXED_HEADER_LEN).and_then(|n| usize::try_from(n).ok())
        {
            let end = FIRST_WANT + len;
            match prefix.get(FIRST_WANT..end) {
                Some(id) => {
                    head.client_id = std::str::from_utf8(id)
                        .ok()
                        .map(|s| StrBytes::from_string(s.to_string()));
                }
                None if !last_look => return RequestParse::Need(end),
                None => {}
            }
        }
        return RequestParse::Done(head);
    };
    match decode_header(prefix, api.request_header_version(api_version)) {
        Header::Decoded { client_id, len } => {
            head.header_decoded = true;
            head.client_id = client_id;
            head.header_len = len;
        }
        // Ask for a Produce request's acks with its header: one read instead of two.
        Header::Need(n) if !last_look && api == ApiKey::Produce => {
            return RequestParse::Need(n + produce::PREAMBLE_HINT)
        }
        Header::Need(n) if !last_look => return RequestParse::Need(n),
        Header::Need(_) | Header::Invalid => return RequestParse::Done(head),
    }
    if api == ApiKey::Produce && head.version_known {
        let body = prefix.get(head.header_len..).unwrap_or_default();
        match scan_acks(body, api_version) {
            Acks::Known(acks) => head.expects_response = acks != 0,
            Acks::Need(n) if !last_look => return RequestParse::Need(head.header_len + n),
            Acks::Need(_) | Acks::Invalid => head.header_decoded = false,
        }
    }
    RequestParse::Done(head)
}

enum Header {
    Decoded {
        client_id: Option<StrBytes>,
        len: usize,
    },
    Need(usize),
    Invalid,
}

fn decode_header(prefix: &[u8], header_version: i16) -> Header {
    if header_version == 0 {
        // v0 (ControlledShutdown v0 only) has no client id; the crate has no decoder for it.
        return Header::Decoded {
            client_id: None,
            len: FIXED_HEADER_LEN,
        };
    }
    let Some(len) = read_i16(prefix, FIXED_HEADER_LEN) else {
        return Header::Need(FIRST_WANT);
    };
    let client_id_len = match len {
        -1 => 0,
        n if n >= 0 => n as usize,
        _ => return Header::Invalid,
    };
    // Ask for the whole client id (and the tagged-field count of v2) in one go.
    let min = FIRST_WANT + client_id_len + usize::from(header_version >= 2);
    if prefix.len() < min {
        return Header::Need(min);
    }
    let mut buf = prefix;
    match RequestHeader::decode(&mut buf, header_version) {
        Ok(h) => Header::Decoded {
            client_id: h.client_id,
            len: prefix.len() - buf.len(),
        },
        // Only tagged fields can still be short here; they are rare and small. Their varints
        // report running short as `bytes::TryGetError`, the rest as `NotEnoughBytesError`.
        Err(e)
            if e.downcast_ref::<NotEnoughBytesError>().is_some()
                || e.downcast_ref::<bytes::TryGetError>().is_some() =>
        {
            Header::Need(prefix.len() + 64)
        }
        Err(_) => Header::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest, ProduceRequest};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn header(api: ApiKey, version: i16, corr: i32, client: Option<&str>) -> RequestHeader {
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(client.map(|c| StrBytes::from_string(c.into())))
    }

    fn request<B: Encodable>(h: &RequestHeader, body: &B) -> Vec<u8> {
        let api = ApiKey::try_from(h.request_api_key).unwrap();
        let mut buf = BytesMut::new();
        h.encode(&mut buf, api.request_header_version(h.request_api_version))
            .unwrap();
        body.encode(&mut buf, h.request_api_version).unwrap();
        buf.to_vec()
    }

    /// Drive `parse_request` the way the frame reader does: start small, grow on Need.
    fn parse_incrementally(frame: &[u8]) -> (RequestParse, usize) {
        let mut have = FIRST_WANT.min(frame.len());
        loop {
            match parse_request(&frame[..have], have >= frame.len()) {
                RequestParse::Need(n) if n > have && have < frame.len() => {
                    have = n.min(frame.len())
                }
                other => return (other, have),
            }
        }
    }

    #[test]
    fn every_api_and_version_header_decodes() {
        for api in ApiKey::iter() {
            let range = api.valid_versions();
            for version in range.min..=range.max {
                let hv = api.request_header_version(version);
                if hv == 0 {
                    continue;
                }
                for client in [None, Some(""), Some("my-client-αβ")] {
                    let h = header(api, version, 12345, client);
                    let mut buf = BytesMut::new();
                    h.encode(&mut buf, hv).unwrap();
                    let header_len = buf.len();
                    if api == ApiKey::Produce {
                        ProduceRequest::default().encode(&mut buf, version).unwrap();
                    } else {
                        // A body the header parser must not need to look at.
                        buf.extend_from_slice(&[0xAB; 64]);
                    }
                    let frame = buf.to_vec();
                    let (parsed, _) = parse_incrementally(&frame);
                    let RequestParse::Done(head) = parsed else {
                        panic!("{api:?} v{version}: {parsed:?}");
                    };
                    assert!(head.header_decoded, "{api:?} v{version}");
                    assert_eq!(head.api, Some(api));
                    assert!(head.version_known);
                    assert_eq!(head.correlation_id, 12345);
                    assert_eq!(head.client_id.as_deref(), client);
                    assert_eq!(head.header_len, header_len);
                }
            }
        }
    }

    #[test]
    fn header_is_read_without_the_body() {
        let h = header(ApiKey::Metadata, 12, 7, Some("c"));
        let frame = request(&h, &MetadataRequest::default().with_topics(None));
        let (parsed, read) = parse_incrementally(&frame);
        let RequestParse::Done(head) = parsed else {
            panic!()
        };
        assert_eq!(read, head.header_len);
    }

    #[test]
    fn produce_acks_zero_expects_no_response() {
        for version in 3..=13 {
            for acks in [0i16, 1, -1] {
                let h = header(ApiKey::Produce, version, 1, Some("p"));
                let frame = request(&h, &ProduceRequest::default().with_acks(acks));
                let (parsed, _) = parse_incrementally(&frame);
                let RequestParse::Done(head) = parsed else {
                    panic!()
                };
                assert!(head.header_decoded);
                assert_eq!(head.expects_response, acks != 0, "v{version} acks {acks}");
            }
        }
    }

    #[test]
    fn unknown_api_and_version_are_classified() {
        let mut frame = 10000i16.to_be_bytes().to_vec();
        frame.extend(0i16.to_be_bytes());
        frame.extend(99i32.to_be_bytes());
        frame.extend([0, 1, b'x']);
        let RequestParse::Done(head) = parse_request(&frame, true) else {
            panic!()
        };
        assert_eq!(head.api, None);
        assert_eq!(head.correlation_id, 99);
        assert!(head.expects_response);

        let h = header(ApiKey::ApiVersions, 3, 5, Some("c"));
        let mut frame = request(&h, &ApiVersionsRequest::default());
        frame[2..4].copy_from_slice(&999i16.to_be_bytes());
        let (parsed, _) = parse_incrementally(&frame);
        let RequestParse::Done(head) = parsed else {
            panic!()
        };
        assert_eq!(head.api, Some(ApiKey::ApiVersions));
        assert!(!head.version_known);
        assert_eq!(head.correlation_id, 5);
    }

    #[test]
    fn garbage_never_panics_and_short_frames_are_malformed() {
        assert_eq!(parse_request(&[0, 3, 0], true), RequestParse::Malformed);
        assert_eq!(
            parse_request(&[0, 3, 0], false),
            RequestParse::Need(FIRST_WANT)
        );
        // Negative client id length other than -1.
        let frame = [0, 3, 0, 9, 0, 0, 0, 1, 0x80, 0x00, 1, 2, 3];
        let RequestParse::Done(head) = parse_request(&frame, true) else {
            panic!()
        };
        assert!(!head.header_decoded);
        // Invalid UTF-8 client id.
        let frame = [0, 3, 0, 9, 0, 0, 0, 1, 0, 2, 0xff, 0xfe, 0];
        let RequestParse::Done(head) = parse_request(&frame, true) else {
            panic!()
        };
        assert!(!head.header_decoded);
        // A deterministic sweep of pseudo-random bytes.
        let mut x: u32 = 1;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            for cut in 0..=bytes.len() {
                let _ = parse_request(&bytes[..cut], cut == bytes.len());
            }
        }
    }
}
