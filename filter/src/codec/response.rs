//! Response header: every response header version starts with the request's correlation id.

/// Bytes of a response needed to match it to its request.
pub const FIRST_WANT: usize = 4;

pub fn correlation_id(prefix: &[u8]) -> Option<i32> {
    super::read_i32(prefix, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn matches_kafka_protocol_for_both_header_versions() {
        for version in 0..=1 {
            let mut buf = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(-77)
                .encode(&mut buf, version)
                .unwrap();
            assert_eq!(correlation_id(&buf), Some(-77));
        }
        assert_eq!(correlation_id(&[1, 2, 3]), None);
    }
}
