//! Fetch requests read whole for observers that follow consumers' fetch positions
//! (fetch-position lag): which partitions, from which offsets, in which fetch session. A Fetch
//! request names no records, so it is small (about 20 bytes a partition); it is read only when
//! an observer wants it and up to 128 KiB (see `whole_reads`), passes unchanged and is never held.

use kafka_protocol::messages::FetchRequest;

use super::examine::ConnState;
use super::whole_reads::Whole;
use crate::codec::frame::FrameHead;
use crate::codec::walk::{TopicRef, MAX_PARTITIONS};
use crate::codec::{budgeted, Step};
use crate::pipeline::facts::{Facts, FetchPositions};
use crate::pipeline::RequestProgress;

const FETCH: i16 = 1;
/// Topic ids replace names in v13.
const FETCH_TOPIC_IDS: i16 = 13;

impl ConnState {
    /// A Fetch request, read whole when an observer follows fetch positions; `Some(step)` while
    /// more of it is needed.
    pub(super) fn read_fetch_request(
        &mut self,
        p: &mut RequestProgress,
        h: &FrameHead<'_>,
    ) -> Option<Step> {
        let wanted = p.head.api_key == FETCH && self.pipeline.wants_fetch_positions();
        let mut body = match self.whole_request(p, h, wanted) {
            Whole::Body(b) => b,
            Whole::Need(step) => return Some(step),
            Whole::Skip => return None,
        };
        let version = p.head.api_version;
        let Some(req) = budgeted::decode::<FetchRequest>(&mut body, version) else {
            log::debug!(
                "connection {}: a Fetch v{version} request did not decode; its positions are not followed",
                self.id
            );
            return None;
        };
        let by_id = version >= FETCH_TOPIC_IDS;
        let topic_of = |name: &str, id: &[u8; 16]| TopicRef::named(by_id, name, id);
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
