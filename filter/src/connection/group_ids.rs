//! The consumer group a group request (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) is about:
//! its body's first field, read from the frame's first bytes for observers that count members.

use kafka_protocol::messages::ApiKey;

use super::examine::ConnState;
use crate::codec::frame::FrameHead;
use crate::codec::walk::{Cursor, Stop};
use crate::codec::Step;
use crate::pipeline::facts::Facts;
use crate::pipeline::RequestProgress;

/// Group ids longer than this are not followed (Kafka allows 32 KiB; nobody uses that).
const MAX_GROUP_ID: usize = 1024;

fn is_group_api(key: i16) -> bool {
    matches!(
        ApiKey::try_from(key),
        Ok(ApiKey::JoinGroup | ApiKey::SyncGroup | ApiKey::Heartbeat | ApiKey::LeaveGroup)
    )
}

impl ConnState {
    /// Read a group request's group id; `Some(step)` while more of the frame's head is needed.
    pub(super) fn read_group_id(
        &mut self,
        p: &mut RequestProgress,
        h: &FrameHead<'_>,
    ) -> Option<Step> {
        let head = &p.head;
        if !is_group_api(head.api_key)
            || !head.header_decoded
            || !head.version_known
            || !self.pipeline.wants_groups()
        {
            return None;
        }
        let flexible = ApiKey::try_from(head.api_key)
            .map(|k| k.request_header_version(head.api_version) >= 2)
            .unwrap_or(false);
        let body = h.prefix.get(head.header_len..).unwrap_or_default();
        let mut c = Cursor::new(body);
        match c.string(flexible) {
            Ok(Some(group)) => {
                let facts = p.facts.get_or_insert_with(|| Box::new(Facts::default()));
                facts.group = Some(group.to_string());
                None
            }
            Err(Stop::Short) if !h.last_look() => {
                let want = (head.header_len + MAX_GROUP_ID + 5).min(h.frame_len);
                (want > h.prefix.len()).then_some(Step::Need(want))
            }
            _ => None,
        }
    }
}
