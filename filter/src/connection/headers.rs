//! What a connection reads from a request's header alone (its counters, the client's
//! identity and software), and what holding a whole frame takes (the VM's byte budget).

use super::examine::ConnState;
use crate::client_log;
use crate::codec::frame::FrameHead;
use crate::codec::request::RequestHead;
use crate::codec::Step;
use crate::metrics::{MetricKey, MetricsSink};
use crate::pipeline::RequestProgress;

/// Kafka error codes for frames the filter will not hold.
const MESSAGE_TOO_LARGE: i16 = 10;
const REQUEST_TIMED_OUT: i16 = 7;
const POLICY_VIOLATION: i16 = 44;
pub(super) const PRODUCE: i16 = 0;
const API_VERSIONS: i16 = 18;
/// An ApiVersions request is read whole for the client software only up to this size.
const MAX_API_VERSIONS_BYTES: usize = 1024;

impl ConnState {
    /// Reserve room to hold a whole frame of `frame_len` bytes; `Err`: the error code to
    /// refuse it with.
    pub(super) fn hold(
        &mut self,
        request: bool,
        frame_len: usize,
        api_key: i16,
        m: &mut dyn MetricsSink,
    ) -> Result<(), i16> {
        let size = frame_len.saturating_add(4);
        let (code, what) = if size > self.config.max_held_frame_bytes {
            m.add(MetricKey::HeldFrameTooLarge, 1);
            let code = if api_key == PRODUCE && request {
                MESSAGE_TOO_LARGE
            } else {
                POLICY_VIOLATION
            };
            (code, "is larger than max_held_frame_bytes")
        } else {
            let held = if request {
                &mut self.held_request
            } else {
                &mut self.held_response
            };
            if held.take(&self.budget, size) {
                return Ok(());
            }
            m.add(MetricKey::HeldBudgetExhausted, 1);
            (
                REQUEST_TIMED_OUT,
                "does not fit in what is left of max_held_bytes",
            )
        };
        let line = format!(
            "connection {} (client_id {}): a {size}-byte {} frame (API key {api_key}) must be held to be rewritten but {what}; answered with error {code}",
            self.id,
            self.identity.client_id.as_deref().unwrap_or("-"),
            if request { "request" } else { "response" },
        );
        if self.held_logged {
            log::debug!("{line}");
        } else {
            self.held_logged = true;
            client_log::warn(
                self.id,
                format_args!("{line} (further ones on this connection logged at debug)"),
            );
        }
        Err(code)
    }

    /// Per-request counters and identity, from the header alone.
    pub(super) fn account_request(&mut self, head: &RequestHead, m: &mut dyn MetricsSink) {
        m.add(MetricKey::Requests(head.api), 1);
        if head.api.is_none() {
            m.add(MetricKey::RequestsUnknownApi, 1);
            log::debug!(
                "connection {}: unknown API key {} v{} (correlation id {}), forwarded untouched",
                self.id,
                head.api_key,
                head.api_version,
                head.correlation_id
            );
        } else if !head.version_known {
            m.add(MetricKey::RequestsUnknownVersion, 1);
            log::debug!(
                "connection {}: {:?} v{} is newer than this filter knows, forwarded untouched",
                self.id,
                head.api,
                head.api_version
            );
        }
        if head.api.is_some() && !head.header_decoded {
            m.add(MetricKey::FramesUndecodable, 1);
            self.log_undecodable("request header could not be decoded");
        }
        self.identity
            .note_client_id(head.client_id.as_ref().map(|c| c.as_str()));
    }

    /// The client software from an ApiVersions v3+ request, once per connection: `Some` asks
    /// for the rest of a small frame first.
    pub(super) fn read_client_software(
        &mut self,
        p: &mut RequestProgress,
        h: &FrameHead<'_>,
    ) -> Option<Step> {
        let head = &p.head;
        if head.api_key != API_VERSIONS
            || head.api_version < 3
            || !head.header_decoded
            || self.identity.software.is_some()
        {
            p.software_read = true;
            return None;
        }
        if h.prefix.len() < h.frame_len && h.frame_len <= MAX_API_VERSIONS_BYTES && !h.last_look() {
            return Some(Step::Need(h.frame_len));
        }
        p.software_read = true;
        if let Some(body) = h.prefix.get(head.header_len..) {
            self.identity.note_api_versions(head.api_version, body);
        }
        None
    }
}
