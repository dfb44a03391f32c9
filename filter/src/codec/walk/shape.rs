//! The shape Produce requests and Fetch responses share: some fields, then topics, each with
//! partitions, each with some fields and a record set. A [`Layout`] says what the fields are.

use super::{
    Batches, Cursor, Held, PartitionRecords, PartitionSummary, Stop, TopicCount, TopicRef, Walked,
    Want, MAX_PARTITIONS,
};

/// What differs between the frames walked: the fields around the topics and partitions.
pub trait Layout {
    /// What is kept of a partition.
    type Partition;

    fn flexible(&self) -> bool;
    /// Topics named by id (v13+ of both APIs) rather than by name.
    fn topic_ids(&self) -> bool;
    /// The fields before the topic count.
    fn body(&self, c: &mut Cursor<'_>) -> Result<(), Stop>;
    /// A partition's fields before its record set; the record set's length.
    fn partition(&self, c: &mut Cursor<'_>) -> Result<(Self::Partition, usize), Stop>;
    fn records(p: &mut Self::Partition) -> &mut PartitionRecords;
    fn records_of(p: &Self::Partition) -> &PartitionRecords;
    /// The partition's log end offset, where the frame says it.
    fn log_end(_p: &Self::Partition) -> Option<i64> {
        None
    }
    /// The partition's last stable offset (what read-committed consumers can read up to),
    /// where the frame says it.
    fn stable_end(_p: &Self::Partition) -> Option<i64> {
        None
    }
    /// The partition's error code, where the frame gives one.
    fn error_code(_p: &Self::Partition) -> i16 {
        0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic<P> {
    pub topic: TopicRef,
    pub partitions: Vec<P>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Body {
        at: usize,
    },
    Topic {
        at: usize,
        topics: usize,
    },
    Partition {
        at: usize,
        topics: usize,
        parts: usize,
    },
    Batch {
        b: Batches,
        topics: usize,
        parts: usize,
    },
    /// A partition's tagged fields (flexible versions), after its records.
    PartitionEnd {
        at: usize,
        topics: usize,
        parts: usize,
    },
    TopicEnd {
        at: usize,
        topics: usize,
    },
    End {
        at: usize,
    },
}

/// Walks one frame; what it found is in `topics`.
#[derive(Debug)]
pub struct Walker<L: Layout> {
    layout: L,
    pub topics: Vec<Topic<L::Partition>>,
    /// True once the whole frame was read; false if it was cut short, invalid, or had more than
    /// [`MAX_PARTITIONS`] partitions (what was counted until then stays).
    pub complete: bool,
    partitions: usize,
    held: Held,
    state: Option<State>,
}

fn next_topic(at: usize, topics: usize) -> State {
    if topics == 0 {
        State::End { at }
    } else {
        State::Topic { at, topics }
    }
}

impl<L: Layout> Walker<L> {
    /// `body_at`: where the body starts (after the header); `frame_len` as framed.
    pub fn new(layout: L, body_at: usize, frame_len: usize) -> Self {
        Self {
            layout,
            topics: Vec::new(),
            complete: false,
            partitions: 0,
            held: Held::new(frame_len),
            state: Some(State::Body { at: body_at }),
        }
    }

    /// What it found, per topic (as far as it got).
    pub fn into_summary(self) -> Walked {
        let topics = self.topics.into_iter().map(|t| {
            let parts = t.partitions.iter().map(L::records_of);
            TopicCount {
                bytes: parts.clone().map(|p| p.bytes).sum(),
                records: parts.map(|p| p.records).sum(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r = L::records_of(p);
                        PartitionSummary {
                            partition: r.partition,
                            records: r.records,
                            end: L::log_end(p),
                            stable_end: L::stable_end(p),
                            next_offset: r.next_offset,
                            error_code: L::error_code(p),
                        }
                    })
                    .collect(),
                topic: t.topic,
            }
        });
        Walked {
            topics: topics.collect(),
            complete: self.complete,
        }
    }

    /// The first range to show it.
    pub fn start(&mut self) -> Want {
        self.advance()
    }

    /// The bytes shown for the range it asked for; the next range it wants.
    pub fn feed(&mut self, at: usize, bytes: &[u8]) -> Want {
        self.held.take(at, bytes);
        self.advance()
    }

    fn advance(&mut self) -> Want {
        while let Some(state) = self.state {
            let (at, needs_bytes) = self.position(state);
            let buf = if needs_bytes {
                self.held.from(at)
            } else {
                Some(&[][..])
            };
            let mut found = Found {
                topics: &mut self.topics,
                partitions: &mut self.partitions,
                frame_len: self.held.frame_len,
            };
            let result = match buf {
                Some(buf) => found.step(&self.layout, state, buf),
                None => Err(Stop::Short),
            };
            match result {
                Ok(Some(next)) => self.state = Some(next),
                Ok(None) => {
                    self.complete = true;
                    break;
                }
                Err(Stop::Short) => match self.held.want_more(at) {
                    Some(want) => return want,
                    None => break,
                },
                Err(Stop::Invalid) => break,
            }
        }
        self.state = None;
        self.held = Held::default();
        Want::Done
    }

    fn position(&self, state: State) -> (usize, bool) {
        match state {
            State::Body { at } | State::Topic { at, .. } | State::Partition { at, .. } => {
                (at, true)
            }
            State::Batch { b, .. } => (b.at, !b.done()),
            State::PartitionEnd { at, .. } | State::TopicEnd { at, .. } | State::End { at } => {
                (at, self.layout.flexible())
            }
        }
    }
}

/// Where a step keeps what it reads (apart from the bytes it reads them from).
struct Found<'a, P> {
    topics: &'a mut Vec<Topic<P>>,
    partitions: &'a mut usize,
    frame_len: usize,
}

impl<P> Found<'_, P> {
    /// Read the state's fields from `buf` (the frame's bytes from the state's position); the
    /// next state, `None` at the frame's end.
    fn step<L: Layout<Partition = P>>(
        &mut self,
        layout: &L,
        state: State,
        buf: &[u8],
    ) -> Result<Option<State>, Stop> {
        let mut c = Cursor::new(buf);
        let flexible = layout.flexible();
        Ok(Some(match state {
            State::Body { at } => {
                layout.body(&mut c)?;
                let topics = c.count(flexible)?;
                next_topic(at + c.pos, topics)
            }
            State::Topic { at, topics } => {
                let topic = if layout.topic_ids() {
                    TopicRef::Id(c.uuid()?)
                } else {
                    TopicRef::Name(c.string(flexible)?.ok_or(Stop::Invalid)?.to_string())
                };
                let parts = c.count(flexible)?;
                // Topics count against the same cap as partitions: a topic of no partition is
                // three bytes, and each kept costs far more.
                if self.topics.len() >= MAX_PARTITIONS {
                    return Err(Stop::Invalid);
                }
                self.topics.push(Topic {
                    topic,
                    partitions: Vec::new(),
                });
                let at = at + c.pos;
                if parts == 0 {
                    State::TopicEnd { at, topics }
                } else {
                    State::Partition { at, topics, parts }
                }
            }
            State::Partition { at, topics, parts } => {
                let (mut p, len) = layout.partition(&mut c)?;
                let b = Batches::new(at + c.pos, len, self.frame_len)?;
                *self.partitions += 1;
                if *self.partitions > MAX_PARTITIONS {
                    return Err(Stop::Invalid);
                }
                L::records(&mut p).bytes = len as u64;
                self.topics
                    .last_mut()
                    .ok_or(Stop::Invalid)?
                    .partitions
                    .push(p);
                State::Batch { b, topics, parts }
            }
            State::Batch { b, topics, parts } => {
                if b.done() {
                    if topics == 1 && parts == 1 {
                        // The last record set: only tagged fields follow, nothing counted.
                        return Ok(None);
                    }
                    let at = b.end;
                    return Ok(Some(State::PartitionEnd { at, topics, parts }));
                }
                let p = self
                    .topics
                    .last_mut()
                    .and_then(|t| t.partitions.last_mut())
                    .ok_or(Stop::Invalid)?;
                let b = b.count(buf, L::records(p))?;
                State::Batch { b, topics, parts }
            }
            State::PartitionEnd { at, topics, parts } => {
                if flexible {
                    c.tagged_fields()?;
                }
                let at = at + c.pos;
                if parts > 1 {
                    State::Partition {
                        at,
                        topics,
                        parts: parts - 1,
                    }
                } else {
                    State::TopicEnd { at, topics }
                }
            }
            State::TopicEnd { at, topics } => {
                if flexible {
                    c.tagged_fields()?;
                }
                next_topic(at + c.pos, topics.saturating_sub(1))
            }
            State::End { .. } => {
                if flexible {
                    c.tagged_fields()?;
                }
                return Ok(None);
            }
        }))
    }
}
