//! `throttle_time_ms` in responses: where each API keeps it, and raising it to the filter's delay.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::codec::response_fields::throttle_first;
use crate::pipeline::{Decision, FrameView};

const PRODUCE: i16 = ApiKey::Produce as i16;

/// Where a response keeps `throttle_time_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ThrottleAt {
    /// The first field of the body: patched in the frame's first bytes.
    First,
    /// Produce: after the per-topic results, so the whole response is decoded (it is small).
    Produce,
}

pub(super) fn throttle_at(api_key: i16, version: i16) -> Option<ThrottleAt> {
    match (api_key, version) {
        (PRODUCE, 1..) => Some(ThrottleAt::Produce),
        _ if throttle_first(api_key, version) => Some(ThrottleAt::First),
        _ => None,
    }
}

/// The response with `throttle_time_ms` raised to `delay` (a larger value from the broker
/// stays).
pub(super) fn set_throttle(
    frame: &FrameView<'_>,
    api_key: i16,
    version: i16,
    at: ThrottleAt,
    delay: u32,
) -> Decision {
    let Ok(api) = ApiKey::try_from(api_key) else {
        return Decision::Pass;
    };
    let header_version = api.response_header_version(version);
    let mut head = Bytes::copy_from_slice(
        frame
            .bytes
            .get(..frame.bytes.len().min(64))
            .unwrap_or_default(),
    );
    let before = head.len();
    if ResponseHeader::decode(&mut head, header_version).is_err() {
        return if frame.last_look {
            Decision::Pass
        } else {
            Decision::NeedHead(64)
        };
    }
    let header_len = before - head.len();
    let delay = i32::try_from(delay).unwrap_or(i32::MAX);
    match at {
        ThrottleAt::First => {
            let Some(field) = frame
                .bytes
                .get(header_len..header_len + 4)
                .and_then(|f| <[u8; 4]>::try_from(f).ok())
            else {
                return if frame.last_look {
                    Decision::Pass
                } else {
                    Decision::NeedHead(header_len + 4)
                };
            };
            let broker = i32::from_be_bytes(field);
            if broker >= delay {
                return Decision::Pass;
            }
            let mut out = Vec::with_capacity(4 + frame.bytes.len());
            out.extend_from_slice(
                &i32::try_from(frame.frame_len)
                    .unwrap_or(i32::MAX)
                    .to_be_bytes(),
            );
            out.extend_from_slice(frame.bytes);
            if let Some(f) = out.get_mut(4 + header_len..8 + header_len) {
                f.copy_from_slice(&delay.to_be_bytes());
            }
            if frame.collected || frame.whole() {
                Decision::Replace(out)
            } else {
                Decision::ReplaceHead(out)
            }
        }
        ThrottleAt::Produce => {
            if !frame.collected && !frame.whole() {
                return Decision::NeedFrame;
            }
            let Some(mut body) = frame.slice_from(header_len) else {
                return Decision::Pass;
            };
            let Ok(mut r) = ProduceResponse::decode(&mut body, version) else {
                return Decision::Pass;
            };
            if r.throttle_time_ms >= delay {
                return Decision::Pass;
            }
            r.throttle_time_ms = delay;
            let mut out = Vec::with_capacity(4 + frame.bytes.len());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(frame.bytes.get(..header_len).unwrap_or_default());
            let mut buf = bytes::BytesMut::new();
            if r.encode(&mut buf, version).is_err() {
                return Decision::Pass;
            }
            out.extend_from_slice(&buf);
            let len = i32::try_from(out.len() - 4).unwrap_or(i32::MAX);
            if let Some(s) = out.get_mut(..4) {
                s.copy_from_slice(&len.to_be_bytes());
            }
            Decision::Replace(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_the_throttle_time_is() {
        // Fetch, Metadata and most APIs lead with it; Produce keeps it last, ApiVersions after
        // its key list, OffsetDelete after its error code. Versions without a schema in
        // kafka-protocol (Fetch v0-3, removed in Kafka 4) are not patched: the pause holds them.
        assert_eq!(throttle_at(1, 1), None);
        assert_eq!(throttle_at(1, 4), Some(ThrottleAt::First));
        assert_eq!(throttle_at(1, 16), Some(ThrottleAt::First));
        assert_eq!(throttle_at(3, 2), None);
        assert_eq!(throttle_at(3, 3), Some(ThrottleAt::First));
        assert_eq!(throttle_at(0, 0), None);
        assert_eq!(throttle_at(0, 9), Some(ThrottleAt::Produce));
        assert_eq!(throttle_at(18, 3), None);
        assert_eq!(throttle_at(47, 0), None);
        assert_eq!(throttle_at(19, 5), Some(ThrottleAt::First));
        assert_eq!(throttle_at(-1, 1), None);
        assert_eq!(throttle_at(1, -1), None);
        assert_eq!(throttle_at(1, 99), None);
    }
}
