//! The broker endpoints of a response, rewritten to the addresses clients must use (decoded
//! and re-encoded with kafka-protocol).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeClusterResponse, FindCoordinatorResponse, MetadataResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{Address, BrokerAddresses, Unmapped};
use crate::codec::budgeted;

pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// The APIs whose responses carry broker endpoints.
pub fn carries_endpoints(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::Metadata | ApiKey::FindCoordinator | ApiKey::DescribeCluster
    )
}

/// The highest version clients may use: versions whose responses carry broker endpoints this
/// module does not rewrite are not offered (KIP-951's tagged `node_endpoints` in Produce v10+
/// and Fetch v16+; ShareFetch and ShareAcknowledge carry them too: -1, not offered at all), so
/// every endpoint a client is given is in a response this module rewrites.
pub fn max_version(api: ApiKey) -> i16 {
    match api {
        ApiKey::Produce => 9,
        ApiKey::Fetch => 15,
        ApiKey::ShareFetch | ApiKey::ShareAcknowledge => -1,
        _ => i16::MAX,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new body; `None`: nothing changed.
    pub body: Option<BytesMut>,
    /// Endpoints of brokers with no address to give.
    pub unmapped: usize,
}

/// The response does not decode (or re-encode) as its request's version says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecodable;

/// One endpoint: the address to give, or what to do with an unmapped one.
enum Endpoint {
    Same,
    To(Address),
    Unmapped,
}

fn endpoint(b: &BrokerAddresses, id: i32, host: &StrBytes, port: i32) -> Endpoint {
    match b.address(id) {
        Some(a) if a.host == host.as_str() && a.port == port => Endpoint::Same,
        Some(a) => Endpoint::To(a),
        None => Endpoint::Unmapped,
    }
}

fn decode<T: Decodable>(body: &Bytes, version: i16) -> Result<T, Undecodable> {
    budgeted::decode(&mut body.clone(), version).ok_or(Undecodable)
}

fn encode<T: Encodable>(m: &T, version: i16) -> Result<BytesMut, Undecodable> {
    let mut out = BytesMut::new();
    m.encode(&mut out, version).map_err(|_| Undecodable)?;
    Ok(out)
}

/// A list of brokers (`id`, host, port): rewritten in place, unmapped ones dropped or kept.
fn brokers<T>(
    list: &mut Vec<T>,
    b: &BrokerAddresses,
    fields: impl Fn(&mut T) -> (i32, &mut StrBytes, &mut i32),
    changed: &mut bool,
    unmapped: &mut usize,
) {
    let before = list.len();
    list.retain_mut(|x| {
        let (id, host, port) = fields(x);
        match endpoint(b, id, host, *port) {
            Endpoint::Same => true,
            Endpoint::To(a) => {
                *host = StrBytes::from_string(a.host);
                *port = a.port;
                *changed = true;
                true
            }
            Endpoint::Unmapped => {
                *unmapped += 1;
                b.unmapped == Unmapped::Keep
            }
        }
    });
    *changed |= list.len() != before;
}

pub fn response(
    api: ApiKey,
    version: i16,
    body: &Bytes,
    b: &BrokerAddresses,
) -> Result<Rewritten, Undecodable> {
    let (mut changed, mut unmapped) = (false, 0usize);
    let out = match api {
        ApiKey::Metadata => {
            let mut r: MetadataResponse = decode(body, version)?;
            brokers(
                &mut r.brokers,
                b,
                |x| (x.node_id.0, &mut x.host, &mut x.port),
                &mut changed,
                &mut unmapped,
            );
            changed.then(|| encode(&r, version)).transpose()?
        }
        ApiKey::DescribeCluster => {
            let mut r: DescribeClusterResponse = decode(body, version)?;
            brokers(
                &mut r.brokers,
                b,
                |x| (x.broker_id.0, &mut x.host, &mut x.port),
                &mut changed,
                &mut unmapped,
            );
            changed.then(|| encode(&r, version)).transpose()?
        }
        ApiKey::FindCoordinator => {
            let mut r: FindCoordinatorResponse = decode(body, version)?;
            let mut one =
                |error: &mut i16, id: &mut BrokerId, host: &mut StrBytes, port: &mut i32| {
                    if *error != 0 {
                        return;
                    }
                    match endpoint(b, id.0, host, *port) {
                        Endpoint::Same => {}
                        Endpoint::To(a) => {
                            *host = StrBytes::from_string(a.host);
                            *port = a.port;
                            changed = true;
                        }
                        Endpoint::Unmapped => {
                            unmapped += 1;
                            if b.unmapped == Unmapped::Drop {
                                // The client asks again, as for a coordinator moving.
                                *error = COORDINATOR_NOT_AVAILABLE;
                                *id = BrokerId(-1);
                                *host = StrBytes::default();
                                *port = -1;
                                changed = true;
                            }
                        }
                    }
                };
            if version >= 4 {
                for c in &mut r.coordinators {
                    one(&mut c.error_code, &mut c.node_id, &mut c.host, &mut c.port);
                }
            } else {
                one(&mut r.error_code, &mut r.node_id, &mut r.host, &mut r.port);
            }
            changed.then(|| encode(&r, version)).transpose()?
        }
        _ => None,
    };
    Ok(Rewritten {
        body: out,
        unmapped,
    })
}
