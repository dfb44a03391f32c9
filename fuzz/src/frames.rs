//! Cutting a byte stream into Kafka frames, and reading frame headers with kafka-protocol.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::Decodable;

/// The complete frames of a stream (size field stripped). Stops at the first negative size or
/// at an incomplete frame: what follows cannot be framed.
pub fn split(stream: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(size) = stream.get(at..at + 4) {
        let len = i32::from_be_bytes([size[0], size[1], size[2], size[3]]);
        let Ok(len) = usize::try_from(len) else { break };
        let Some(body) = stream.get(at + 4..at + 4 + len) else {
            break;
        };
        out.push(Bytes::copy_from_slice(body));
        at += 4 + len;
    }
    out
}

/// A size-prefixed frame.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn i16_at(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// What a request frame says about itself.
#[derive(Debug, Clone)]
pub struct Req {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    /// kafka-protocol knows the API key.
    pub api: Option<ApiKey>,
    /// The header as kafka-protocol decodes it: `None` if it does not (or the API is unknown).
    pub header: Option<RequestHeader>,
    /// The client id: from the decoded header, or for an unknown API key read where every
    /// header version since v1 has it (as the README says rules match it).
    pub client_id: Option<String>,
    /// The body after the decoded header.
    pub body: Option<Bytes>,
    /// A Produce request with acks=0: the broker sends no response.
    pub acks0: bool,
    /// Bytes of a header v2's tagged-field section (its count included).
    pub tag_bytes: usize,
}

/// Reads a request frame (without its size field); `None` if it is shorter than the fixed
/// header fields.
pub fn request(frame: &Bytes) -> Option<Req> {
    let api_key = i16_at(frame, 0)?;
    let version = i16_at(frame, 2)?;
    let correlation_id = i32_at(frame, 4)?;
    let api = ApiKey::try_from(api_key).ok();
    let mut req = Req {
        api_key,
        version,
        correlation_id,
        api,
        header: None,
        client_id: None,
        body: None,
        acks0: false,
        tag_bytes: 0,
    };
    match api {
        None => {
            let len = i16_at(frame, 8).and_then(|n| usize::try_from(n).ok());
            req.client_id = len
                .and_then(|n| frame.get(10..10 + n))
                .and_then(|id| std::str::from_utf8(id).ok())
                .map(str::to_string);
        }
        Some(key) => {
            let hv = key.request_header_version(version);
            let mut b = frame.clone();
            if hv >= 1 {
                if let Ok(h) = RequestHeader::decode(&mut b, hv) {
                    if hv >= 2 {
                        let id_len = h.client_id.as_ref().map_or(0, |c| c.len());
                        req.tag_bytes = (frame.len() - b.len()).saturating_sub(10 + id_len);
                    }
                    req.client_id = h.client_id.as_ref().map(|c| c.as_str().to_string());
                    req.header = Some(h);
                    req.body = Some(b);
                }
            }
        }
    }
    // As the filter decides it: acks read for the Produce versions it knows.
    let produce_versions = ApiKey::Produce.valid_versions();
    if req.api == Some(ApiKey::Produce)
        && (produce_versions.min..=produce_versions.max).contains(&version)
    {
        if let Some(body) = &req.body {
            req.acks0 = produce_acks(body, version) == Some(0);
        }
    }
    Some(req)
}

/// An unsigned varint.
fn uvarint(b: &[u8], at: &mut usize) -> Option<u32> {
    let mut v = 0u32;
    for i in 0..5 {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A nullable string (compact in flexible versions); `Some(None)` is null.
fn string(b: &[u8], at: &mut usize, flexible: bool) -> Option<Option<String>> {
    let len = if flexible {
        match uvarint(b, at)? {
            0 => return Some(None),
            n => n as usize - 1,
        }
    } else {
        let n = i16_at(b, *at)?;
        *at += 2;
        if n < 0 {
            return Some(None);
        }
        n as usize
    };
    let s = b.get(*at..*at + len)?;
    *at += len;
    Some(Some(String::from_utf8_lossy(s).into_owned()))
}

/// An array's element count (compact in flexible versions); `None` for null or short.
fn count(b: &[u8], at: &mut usize, flexible: bool) -> Option<usize> {
    if flexible {
        (uvarint(b, at)? as usize).checked_sub(1)
    } else {
        let n = i32_at(b, *at)?;
        *at += 4;
        usize::try_from(n).ok()
    }
}

/// A Produce request's acks, read from the body's first bytes.
pub fn produce_acks(body: &[u8], v: i16) -> Option<i16> {
    let mut at = 0;
    string(body, &mut at, v >= 9)?;
    i16_at(body, at)
}

/// The first names of a frame that carries records, read from its first bytes the way a client
/// or broker that parses it front to back meets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Produce requests: the transactional id.
    pub txn: Option<String>,
    pub topic_count: usize,
    /// The first topic's name.
    pub first_topic: Option<String>,
}

/// A Produce request body (v3..=12) head.
pub fn produce_request_head(body: &[u8], v: i16) -> Option<Head> {
    let flexible = v >= 9;
    let mut at = 0;
    let txn = string(body, &mut at, flexible)?;
    at += 2 + 4; // acks, timeout_ms
    let topic_count = count(body, &mut at, flexible)?;
    let first_topic = if topic_count > 0 {
        string(body, &mut at, flexible)?
    } else {
        None
    };
    Some(Head {
        txn,
        topic_count,
        first_topic,
    })
}

/// A Produce (v3..=12) or Fetch (v4..=12) response body head.
pub fn response_head(api: ApiKey, body: &[u8], v: i16) -> Option<Head> {
    let (flexible, skip) = match api {
        ApiKey::Produce if (3..=12).contains(&v) => (v >= 9, 0),
        ApiKey::Fetch if (4..=12).contains(&v) => (v >= 12, if v >= 7 { 4 + 2 + 4 } else { 4 }),
        _ => return None,
    };
    let mut at = skip;
    let topic_count = count(body, &mut at, flexible)?;
    let first_topic = if topic_count > 0 {
        string(body, &mut at, flexible)?
    } else {
        None
    };
    Some(Head {
        txn: None,
        topic_count,
        first_topic,
    })
}

/// The response header's correlation id and the body after the header, decoding the header at
/// the version the answered request implies.
pub fn response_body(frame: &Bytes, api: ApiKey, version: i16) -> Option<(i32, Bytes)> {
    let mut b = frame.clone();
    let h = ResponseHeader::decode(&mut b, api.response_header_version(version)).ok()?;
    Some((h.correlation_id, b))
}

/// The correlation id of a response frame.
pub fn response_correlation_id(frame: &[u8]) -> Option<i32> {
    i32_at(frame, 0)
}
