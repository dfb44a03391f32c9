//! Who is on the other end of a connection: kept once per connection and read by every stage
//! and observer, never copied into them.

use std::net::IpAddr;

use kafka_protocol::messages::ApiVersionsRequest;
use kafka_protocol::protocol::Decodable;

/// What the connection presents below Kafka: its mTLS identity and address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The mTLS peer identity (`connection.uri_san_peer_certificate`, the SPIFFE id in Istio).
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
}

/// The client library, as it names itself in ApiVersions v3+ (KIP-511).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSoftware {
    pub name: String,
    pub version: String,
}

/// Bounds what a client may make the filter keep of its self-description.
const MAX_SOFTWARE_FIELD: usize = 128;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The client id of the connection's first request that carried one.
    pub client_id: Option<String>,
    pub peer: Peer,
    /// Once the client has sent ApiVersions v3 or later.
    pub software: Option<ClientSoftware>,
}

impl Identity {
    /// Take the client id of a request, if none is known yet.
    pub fn note_client_id(&mut self, client_id: Option<&str>) {
        if self.client_id.is_none() {
            self.client_id = client_id.map(str::to_string);
        }
    }

    /// Read the client software from an ApiVersions request body (after its header). Names that
    /// KIP-511 would call invalid are kept out: they are labels later.
    pub fn note_api_versions(&mut self, version: i16, body: &[u8]) {
        if version < 3 || self.software.is_some() {
            return;
        }
        let mut buf = body;
        let Ok(req) = ApiVersionsRequest::decode(&mut buf, version) else {
            return;
        };
        let (name, ver) = (
            req.client_software_name.as_str(),
            req.client_software_version.as_str(),
        );
        if valid_software_field(name) && valid_software_field(ver) {
            self.software = Some(ClientSoftware {
                name: name.to_string(),
                version: ver.to_string(),
            });
        }
    }
}

/// KIP-511: `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`, and short.
fn valid_software_field(s: &str) -> bool {
    let b = s.as_bytes();
    let edge_ok = |c: Option<&u8>| c.is_some_and(u8::is_ascii_alphanumeric);
    s.len() <= MAX_SOFTWARE_FIELD
        && edge_ok(b.first())
        && edge_ok(b.last())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn api_versions(name: &str, version: &str, v: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_string(name.into()))
            .with_client_software_version(StrBytes::from_string(version.into()))
            .encode(&mut buf, v)
            .unwrap();
        buf.to_vec()
    }

    #[test]
    fn client_software_from_api_versions_v3() {
        let mut id = Identity::default();
        id.note_api_versions(3, &api_versions("librdkafka", "2.16.1", 3));
        assert_eq!(
            id.software,
            Some(ClientSoftware {
                name: "librdkafka".into(),
                version: "2.16.1".into()
            })
        );
        // The first one stays.
        id.note_api_versions(3, &api_versions("other", "1", 3));
        assert_eq!(id.software.unwrap().name, "librdkafka");
    }

    #[test]
    fn invalid_or_old_software_is_not_kept() {
        for (name, ver) in [("-x", "1"), ("a b", "1"), ("ok", ""), ("ok", "1.")] {
            let mut id = Identity::default();
            id.note_api_versions(3, &api_versions(name, ver, 3));
            assert_eq!(id.software, None, "{name} {ver}");
        }
        let mut id = Identity::default();
        id.note_api_versions(2, &api_versions("librdkafka", "2", 2));
        assert_eq!(id.software, None);
        id.note_api_versions(3, &[0xff, 0xff]);
        assert_eq!(id.software, None);
        let long = "a".repeat(MAX_SOFTWARE_FIELD + 1);
        id.note_api_versions(3, &api_versions(&long, "1", 3));
        assert_eq!(id.software, None);
    }

    #[test]
    fn client_id_is_the_first_one() {
        let mut id = Identity::default();
        id.note_client_id(None);
        id.note_client_id(Some("a"));
        id.note_client_id(Some("b"));
        assert_eq!(id.client_id.as_deref(), Some("a"));
    }
}
