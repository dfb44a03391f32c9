//! The correlation table: requests in flight on one connection, waiting for their responses.
//!
//! A response carries only the correlation id; its schema (API key and version) and its latency
//! come from the request, remembered here. Kafka answers requests in order on a connection, so
//! the match is almost always the oldest entry; requests that never get an answer (a Produce with
//! acks=0 that was not recognised as such) are dropped when a later response overtakes them.

use crate::api::ApiLabel;
use std::collections::VecDeque;

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub request: Inflight,
    /// Older requests that were passed over (they will never be answered); empty, and not
    /// allocated, in the common case.
    pub skipped: Vec<Inflight>,
}

#[derive(Debug)]
pub struct InflightTable {
    entries: VecDeque<Inflight>,
    capacity: usize,
}

impl InflightTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remember a request. Returns the oldest entry if the table was full and it was evicted.
    pub fn push(&mut self, entry: Inflight) -> Option<Inflight> {
        let evicted = if self.entries.len() >= self.capacity {
            self.entries.pop_front()
        } else {
            None
        };
        self.entries.push_back(entry);
        evicted
    }

    /// Take the request a response with this correlation id answers.
    pub fn take(&mut self, correlation_id: i32) -> Option<Matched> {
        let at = self
            .entries
            .iter()
            .position(|e| e.correlation_id == correlation_id)?;
        let skipped = self.entries.drain(..at).collect();
        let request = self.entries.pop_front()?;
        Some(Matched { request, skipped })
    }

    /// The request waiting with this correlation id (the newest first: the one just sent).
    pub fn find_mut(&mut self, correlation_id: i32) -> Option<&mut Inflight> {
        self.entries
            .iter_mut()
            .rev()
            .find(|e| e.correlation_id == correlation_id)
    }

    /// Every request still waiting for an answer, oldest first (the connection has ended).
    pub fn drain(&mut self) -> impl Iterator<Item = Inflight> + '_ {
        self.entries.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: i32) -> Inflight {
        Inflight {
            correlation_id: id,
            api_key: 0,
            api: None,
            api_version: 9,
            sent_at_ns: id as u64,
            request_bytes: 20,
            plan: Plan::default(),
            facts: None,
            response_head: Default::default(),
        }
    }

    #[test]
    fn in_order_and_skipped() {
        let mut t = InflightTable::new(10);
        for id in 1..=4 {
            assert!(t.push(req(id)).is_none());
        }
        assert!(t.take(1).unwrap().skipped.is_empty());
        let m = t.take(3).unwrap();
        assert_eq!(m.request.correlation_id, 3);
        assert_eq!(
            m.skipped
                .iter()
                .map(|s| s.correlation_id)
                .collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(t.take(99), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bounded() {
        let mut t = InflightTable::new(2);
        assert!(t.push(req(1)).is_none());
        assert!(t.push(req(2)).is_none());
        assert_eq!(t.push(req(3)), Some(req(1)));
        assert_eq!(t.take(1), None);
        assert_eq!(t.len(), 2);
    }
}
