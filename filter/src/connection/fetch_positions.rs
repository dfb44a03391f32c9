//! Fetch requests read whole for observers that follow consumers' fetch positions
//! (fetch-position lag): which partitions, from which offsets, in which fetch session. A Fetch
//! request names no records, so it is small (about 20 bytes a partition); it is read only when
//! an observer wants it and up to [`MAX_WHOLE_BYTES`], passes unchanged and is never held.

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;

use super::examine::ConnState;
use crate::codec::frame::{FrameHead, HEAD_WINDOW, MAX_HEAD_BYTES};
use crate::codec::walk::{TopicRef, MAX_PARTITIONS};
use crate::codec::{budgeted, Step};
use crate::pipeline::facts::{Facts, FetchPositions};
use crate::pipeline::RequestProgress;

const FETCH: i16 = 1;
/// Topic ids replace names in v13.
const FETCH_TOPIC_IDS: i16 = 13;
const MAX_WHOLE_BYTES: usize = MAX_HEAD_BYTES;

impl ConnState {
    /// A Fetch request, read whole when an observer follows fetch positions; `Some(step)` while
    /// more of it is needed.
    pub(super) fn read_fetch_request(
        &mut self,
        p: &mut RequestProgress,
        h: &FrameHead<'_>,
    ) -> Option<Step> {
        let head = &p.head;
        if head.api_key != FETCH
            || !head.header_decoded
            || !head.version_known
            || h.frame_len > MAX_WHOLE_BYTES
            || !self.pipeline.wants_fetch_positions()
        {
            return None;
        }
        if h.prefix.len() < h.frame_len && !h.last_look() {
            // Collected in the VM: counted in its held-bytes budget like a held frame.
            if h.frame_len > HEAD_WINDOW && !self.held_request.take(&self.budget, h.frame_len) {
                return None;
            }
            return Some(Step::Need(h.frame_len));
        }
        let body = h.prefix.get(head.header_len..).unwrap_or_default();
        let version = head.api_version;
        let Some(req) =
            budgeted::decode::<FetchRequest>(&mut Bytes::copy_from_slice(body), version)
        else {
            log::debug!(
                "connection {}: a Fetch v{version} request did not decode; its positions are not followed",
                self.id
            );
            return None;
        };
        let by_id = version >= FETCH_TOPIC_IDS;
        let topic_of = |name: &kafka_protocol::messages::TopicName, id: &[u8; 16]| {
            if by_id {
                TopicRef::Id(*id)
            } else {
                TopicRef::Name(name.to_string())
            }
        };
        let partitions = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        topic_of(&t.topic, t.topic_id.as_bytes()),
                        p.partition,
                        p.fetch_offset,
                    )
                })
            })
            .take(MAX_PARTITIONS)
            .collect();
        let forgotten = req
            .forgotten_topics_data
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |&p| (topic_of(&t.topic, t.topic_id.as_bytes()), p))
            })
            .take(MAX_PARTITIONS)
            .collect();
        let facts = p.facts.get_or_insert_with(|| Box::new(Facts::default()));
        facts.fetch = Some(FetchPositions {
            read_committed: req.isolation_level == 1,
            session_epoch: req.session_epoch,
            partitions,
            forgotten,
        });
        None
    }
}
