//! Broker addresses as a pipeline stage: the responses that carry broker endpoints are
//! rewritten to the addresses clients must use (see [`crate::brokers`]), and clients are not
//! offered the versions that carry endpoints elsewhere.

use std::rc::Rc;

use kafka_protocol::messages::ApiKey;

use crate::codec::api_versions::narrow;

use crate::brokers::rewrite::{self, carries_endpoints, max_version};
use crate::brokers::BrokerAddresses;
use crate::metrics::MetricsSink;
use crate::pipeline::refusal::framed;
use crate::pipeline::{Decision, FrameView, RequestCx, ResponseCx, Stage};

const UNSUPPORTED_VERSION: i16 = 35;
const NOTE_VERSIONS: u32 = 1;
const NOTE_ENDPOINTS: u32 = 2;
/// Warnings one connection writes to Envoy's log; past them unmapped brokers are only counted.
const MAX_WARNINGS: u32 = 5;

pub struct AdvertiseStage {
    id: u32,
    brokers: Rc<BrokerAddresses>,
    /// The largest response it writes (`max_held_frame_bytes`): a broker naming a huge number of
    /// brokers must not make the VM build a huge answer.
    max_frame: usize,
    warned: u32,
}

impl AdvertiseStage {
    pub fn new(id: u32, brokers: Rc<BrokerAddresses>, max_frame: usize) -> Self {
        Self {
            id,
            brokers,
            max_frame,
            warned: 0,
        }
    }

    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        self.warned = self.warned.saturating_add(1);
        if self.warned <= MAX_WARNINGS {
            crate::client_log::warn(self.id, format_args!("connection {}: {what}", self.id));
        } else {
            log::debug!("connection {}: {what}", self.id);
        }
    }
}

/// An ApiVersions response without the versions that carry endpoints this stage does not
/// rewrite, nor APIs unknown to the filter.
fn limit_versions(version: i16, body: &bytes::Bytes) -> Option<bytes::BytesMut> {
    narrow(version, body, |key, min, max| {
        let api = ApiKey::try_from(key).ok()?;
        Some((min, max.min(max_version(api))))
    })
}

impl Stage for AdvertiseStage {
    fn name(&self) -> &'static str {
        "broker_addresses"
    }

    /// A connection whose stream cannot be framed any more closes: passed through, its
    /// responses would give clients the brokers' own addresses.
    fn guards(&self) -> bool {
        true
    }

    fn on_request(
        &mut self,
        cx: &mut RequestCx<'_>,
        _frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        let head = cx.head;
        // What the filter cannot read may be answered with a broker's own address: the
        // connection closes (an unknown API cannot be answered; a header that does not decode has
        // no version to trust).
        let Ok(api) = ApiKey::try_from(head.api_key) else {
            m.add_named("broker_addresses_closed", 1);
            self.warn(format_args!(
                "API key {} is unknown to the filter; closing the connection (broker_addresses)",
                head.api_key
            ));
            return Decision::Close;
        };
        if !head.header_decoded {
            m.add_named("broker_addresses_closed", 1);
            self.warn(format_args!(
                "a {api:?} request header does not decode; closing the connection (broker_addresses)"
            ));
            return Decision::Close;
        }
        if api == ApiKey::ApiVersions {
            cx.watch_response(NOTE_VERSIONS);
        } else if carries_endpoints(api) {
            cx.watch_response(NOTE_ENDPOINTS);
        } else if head.api_version > max_version(api) {
            // Its response would carry a broker's own address: not offered, so not answered.
            m.add_named("broker_addresses_versions_refused", 1);
            return Decision::Refuse(UNSUPPORTED_VERSION);
        }
        Decision::Pass
    }

    fn on_response(
        &mut self,
        cx: &ResponseCx<'_>,
        frame: &FrameView<'_>,
        m: &mut dyn MetricsSink,
    ) -> Decision {
        if !frame.collected && !frame.whole() {
            return Decision::NeedFrame;
        }
        let req = cx.request;
        let Ok(api) = ApiKey::try_from(req.api_key) else {
            return Decision::Pass;
        };
        let (header, body) = match frame.response_parts(req.api_key, req.api_version) {
            Some(Ok(parts)) => parts,
            Some(Err(())) | None => return Decision::Close,
        };
        if cx.note == NOTE_VERSIONS {
            return match limit_versions(req.api_version, &body) {
                Some(b) => Decision::Replace(framed(&[header, &b])),
                None => Decision::Pass,
            };
        }
        match rewrite::response(api, req.api_version, &body, &self.brokers) {
            Ok(r) => {
                if r.unmapped > 0 {
                    m.add_named(
                        "broker_addresses_unmapped",
                        crate::metrics::len_i64(r.unmapped),
                    );
                    self.warn(format_args!(
                        "a {api:?} response names {} broker(s) with no address in broker_addresses ({})",
                        r.unmapped,
                        match self.brokers.unmapped {
                            crate::brokers::Unmapped::Drop => "left out",
                            crate::brokers::Unmapped::Keep => "kept as the broker sent them",
                        }
                    ));
                }
                match r.body {
                    Some(b) if b.len() > self.max_frame => {
                        self.warn(format_args!(
                            "a {api:?} response rewritten would be {} bytes, more than max_held_frame_bytes; answering with an error",
                            b.len()
                        ));
                        m.add_named("broker_addresses_errors", 1);
                        Decision::Refuse(-1)
                    }
                    Some(b) => {
                        m.add_named("broker_addresses_rewritten", 1);
                        Decision::Replace(framed(&[header, &b]))
                    }
                    None => Decision::Pass,
                }
            }
            Err(rewrite::Undecodable) => {
                // It may name brokers clients must not reach directly: never passed on as is.
                self.warn(format_args!(
                    "a {api:?} v{} response does not decode; answering with an error",
                    req.api_version
                ));
                m.add_named("broker_addresses_errors", 1);
                Decision::Refuse(-1)
            }
        }
    }
}
