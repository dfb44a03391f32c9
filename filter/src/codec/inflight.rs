//! The correlation table: requests in flight on one connection, waiting for their responses.
//!
//! A response carries only the correlation id; its schema (API key and version) and its latency
//! come from the request, remembered here. Kafka answers requests in order on a connection.
//!
//! Pairing is only as good as the ids are unique: a client that reuses an id still waiting, or
//! outruns the table, could have one request's answer handled as another's. The table therefore
//! says when a request would make pairing ambiguous ([`InflightTable::try_push`]); what happens
//! then is the connection's policy.
//!
//! A Produce with acks=0 gets no answer from Kafka, but some brokers answer it anyway. It is
//! remembered apart (a small ring of ids, then compact id ranges), so that such an answer is
//! recognised for what it is, never paired with a later request that happens to reuse its id,
//! and so that a producer that never gets an answer costs a few bytes, not a table.

use crate::api::ApiLabel;
use std::collections::{HashMap, VecDeque};

use crate::codec::response_fields::ResponseHead;
use crate::pipeline::facts::Facts;
use crate::pipeline::Plan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    pub correlation_id: i32,
    pub api_key: i16,
    /// The API, as classified when the request was read (metrics label it by this).
    pub api: ApiLabel,
    pub api_version: i16,
    pub sent_at_ns: u64,
    /// The request frame's size, size field included.
    pub request_bytes: u32,
    /// What the pipeline decided for the request and its response.
    pub plan: Plan,
    /// What was read of the request for observers (its topics and records, its commits).
    pub facts: Option<Box<Facts>>,
    /// What its response's first bytes said, once matched (for observers that want it).
    pub response_head: ResponseHead,
    /// It may get no answer: a Produce whose acks could not be read (a version the filter
    /// has no schema for), which a later answer may pass over like an acks=0 one.
    pub answer_optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub request: Inflight,
    /// Older requests that were passed over (they will never be answered); empty, and not
    /// allocated, in the common case.
    pub skipped: Vec<Inflight>,
}

/// What a response's correlation id answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A request waiting in the table.
    Request(Matched),
    /// A Produce sent with acks=0 (the broker answered what Kafka would not). Ids still waiting
    /// are unique, so this answers nothing else, whatever came before it.
    Acks0,
    /// Nothing this connection sent, as far as the table knows.
    Nothing,
}

/// Why a request cannot be remembered without making pairing ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguous {
    /// A request with this correlation id may still be answered.
    Duplicate,
    /// The table holds `capacity` requests waiting for an answer.
    Full,
}

/// acks=0 Produce ids kept one by one; older ones are folded into [`Forgotten`] ranges.
const ACKS0_KEPT: usize = 64;
/// Ranges of forgotten acks=0 ids kept at most (a producer counting up needs one or two; one
/// whose ids have gaps, such as a client numbering requests across its connections, gets its
/// closest ranges merged).
const FORGOTTEN_RANGES: usize = 16;

/// acks=0 Produce ids pushed out of the ring: their answer could still come (after every
/// request sent before them), so their ids stay taken until a later request is answered.
#[derive(Debug, Default)]
struct Forgotten {
    ranges: Vec<(i32, i32)>,
    /// The newest forgotten entry's sequence number.
    last_seq: u64,
}

impl Forgotten {
    fn contains(&self, id: i32) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= id && id <= hi)
    }

    /// Keep `id` taken. Past [`FORGOTTEN_RANGES`] the two closest ranges become one: the ids
    /// between them are taken too, which can only close a connection that reuses one of
    /// them before its next answer, never pair an answer wrongly.
    fn add(&mut self, id: i32, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
        for r in &mut self.ranges {
            if r.1.checked_add(1) == Some(id) {
                r.1 = id;
                return;
            }
            if r.0.checked_sub(1) == Some(id) {
                r.0 = id;
                return;
            }
            if r.0 <= id && id <= r.1 {
                return;
            }
        }
        self.ranges.push((id, id));
        if self.ranges.len() > FORGOTTEN_RANGES {
            self.merge_closest();
        }
    }

    fn merge_closest(&mut self) {
        self.ranges.sort_unstable();
        let closest = self
            .ranges
            .windows(2)
            .enumerate()
            .min_by_key(|(_, w)| match w {
                [a, b] => i64::from(b.0) - i64::from(a.1),
                _ => i64::MAX,
            })
            .map(|(i, _)| i);
        if let Some(i) = closest {
            if let Some(next) = self.ranges.get(i + 1).copied() {
                self.ranges.remove(i + 1);
                if let Some(r) = self.ranges.get_mut(i) {
                    r.1 = r.1.max(next.1);
                }
            }
        }
    }

    /// A request sent at `seq` was answered: everything forgotten before it never will be.
    fn answered(&mut self, seq: u64) {
        if seq > self.last_seq {
            self.ranges.clear();
        }
    }
}

#[derive(Debug)]
pub struct InflightTable {
    /// Requests that expect an answer, oldest first, with their sequence numbers.
    entries: VecDeque<(u64, Inflight)>,
    /// acks=0 Produce requests forwarded: (sequence number, correlation id).
    acks0: VecDeque<(u64, i32)>,
    forgotten: Forgotten,
    /// How many of `entries` and `acks0` hold each id (more than one only when duplicates are
    /// let through, on connections that only observe).
    ids: HashMap<i32, u32>,
    next_seq: u64,
    capacity: usize,
}

impl InflightTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            acks0: VecDeque::new(),
            forgotten: Forgotten::default(),
            ids: HashMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// Requests waiting for an answer (acks=0 Produce requests aside).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether remembering a request with this id (that expects an answer, or not) would make
    /// pairing ambiguous.
    pub fn check(&self, correlation_id: i32, expects_response: bool) -> Result<(), Ambiguous> {
        if self.ids.contains_key(&correlation_id) || self.forgotten.contains(correlation_id) {
            return Err(Ambiguous::Duplicate);
        }
        if expects_response && self.entries.len() >= self.capacity {
            return Err(Ambiguous::Full);
        }
        Ok(())
    }

    fn seq(&mut self) -> u64 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    fn add_id(&mut self, id: i32) {
        *self.ids.entry(id).or_insert(0) += 1;
    }

    fn remove_id(&mut self, id: i32) {
        if let Some(n) = self.ids.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.ids.remove(&id);
            }
        }
    }

    /// Remember a request, whatever the table holds. Returns the oldest entry if the table was
    /// full and it was forgotten (for connections where pairing only feeds observers).
    pub fn push(&mut self, entry: Inflight) -> Option<Inflight> {
        let evicted = if self.entries.len() >= self.capacity {
            self.entries.pop_front().map(|(_, e)| e)
        } else {
            None
        };
        if let Some(e) = &evicted {
            self.remove_id(e.correlation_id);
        }
        let seq = self.seq();
        self.add_id(entry.correlation_id);
        self.entries.push_back((seq, entry));
        evicted
    }

    /// Remember a forwarded acks=0 Produce.
    pub fn push_acks0(&mut self, correlation_id: i32) {
        if self.acks0.len() >= ACKS0_KEPT {
            if let Some((seq, id)) = self.acks0.pop_front() {
                self.remove_id(id);
                self.forgotten.add(id, seq);
            }
        }
        let seq = self.seq();
        self.add_id(correlation_id);
        self.acks0.push_back((seq, correlation_id));
    }

    /// What a response with this correlation id answers. Passed-over acks=0 entries end (Kafka
    /// never answers them); passed-over requests are given back in [`Matched::skipped`].
    pub fn take(&mut self, correlation_id: i32) -> Answer {
        if !self.ids.contains_key(&correlation_id) {
            if self.forgotten.contains(correlation_id) {
                return Answer::Acks0;
            }
            return Answer::Nothing;
        }
        let in_entries = self
            .entries
            .iter()
            .position(|(_, e)| e.correlation_id == correlation_id);
        let in_acks0 = self.acks0.iter().position(|&(_, id)| id == correlation_id);
        let entry_seq = in_entries.and_then(|at| self.entries.get(at)).map(|e| e.0);
        let acks0_seq = in_acks0.and_then(|at| self.acks0.get(at)).map(|e| e.0);
        match (entry_seq, acks0_seq) {
            (Some(e), a) if a.is_none_or(|a| e < a) => self.take_entry(in_entries.unwrap_or(0)),
            (_, Some(a)) => {
                self.end_acks0_through(a);
                Answer::Acks0
            }
            _ => Answer::Nothing,
        }
    }

    fn take_entry(&mut self, at: usize) -> Answer {
        let skipped: Vec<Inflight> = self.entries.drain(..at).map(|(_, e)| e).collect();
        for s in &skipped {
            self.remove_id(s.correlation_id);
        }
        let Some((seq, request)) = self.entries.pop_front() else {
            return Answer::Nothing;
        };
        self.remove_id(request.correlation_id);
        self.end_acks0_through(seq);
        self.forgotten.answered(seq);
        Answer::Request(Matched { request, skipped })
    }

    /// acks=0 entries sent up to `seq` are over: answered, or passed over by a later answer.
    fn end_acks0_through(&mut self, seq: u64) {
        while let Some(&(s, id)) = self.acks0.front() {
            if s > seq {
                break;
            }
            self.acks0.pop_front();
            self.remove_id(id);
        }
    }

    /// The request waiting with this correlation id (the newest first: the one just sent).
    pub fn find_mut(&mut self, correlation_id: i32) -> Option<&mut Inflight> {
        self.entries
            .iter_mut()
            .rev()
            .map(|(_, e)| e)
            .find(|e| e.correlation_id == correlation_id)
    }

    /// Every request still waiting for an answer, oldest first (the connection has ended).
    pub fn drain(&mut self) -> impl Iterator<Item = Inflight> + '_ {
        self.ids.clear();
        self.acks0.clear();
        self.forgotten.ranges.clear();
        self.entries.drain(..).map(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests;
