//! Where buckets live. The limiter stage sees only [`BucketStore`]: this VM's memory
//! ([`LocalStore`], for tests and native use), Envoy's shared data (one map per Envoy process,
//! shared by every worker: `wasm::shared_store`), or later a remote service.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::bucket::{BucketState, Rate};

/// What a limit counts; each key of a limit keeps one bucket per kind, in one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Requests = 0,
    ProduceBytes = 1,
    FetchBytes = 2,
    TopicMutations = 3,
    Connections = 4,
}

pub const KINDS: usize = 5;

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::ProduceBytes => "produce_bytes",
            Kind::FetchBytes => "fetch_bytes",
            Kind::TopicMutations => "topic_mutations",
            Kind::Connections => "connections",
        }
    }
}

/// One charge to one of an entry's buckets; `delay_ms` is filled in.
#[derive(Debug, Clone, Copy)]
pub struct Charge {
    pub kind: Kind,
    pub rate: Rate,
    pub amount: f64,
    pub delay_ms: u32,
    /// The bucket's debt before this charge, as a delay (set by the store, like `delay_ms`).
    pub owed_ms: u32,
}

/// An entry's buckets, one per [`Kind`] (`None` until first charged).
pub type Buckets = [Option<BucketState>; KINDS];

/// Apply `charges` to `buckets` at `now_ns`.
pub fn apply(buckets: &mut Buckets, charges: &mut [Charge], now_ns: u64) {
    for c in charges {
        if let Some(slot) = buckets.get_mut(c.kind as usize) {
            let state = slot.get_or_insert_with(|| BucketState::new(&c.rate, now_ns));
            let charged = state.charge(&c.rate, c.amount, now_ns);
            c.delay_ms = charged.delay_ms;
            c.owed_ms = charged.owed_ms;
        }
    }
}

pub trait BucketStore {
    /// Apply `charges` to the buckets of entry `key` (full when first seen) at `now_ns`: one
    /// read and one write of the entry, whatever the number of charges.
    fn charge(&self, key: &str, charges: &mut [Charge], now_ns: u64);

    /// Whether `key` may have buckets of its own under `scope` (a limit): true if it already
    /// has, or if fewer than `max` keys have. Keys past the cap share an overflow bucket.
    fn admit(&self, scope: &str, key: &str, max: u32) -> bool;

    /// Add `delta` to the counter `key` and return its new value (concurrent connections).
    fn add(&self, key: &str, delta: i64) -> i64;

    /// Keep `value` under `key` for every worker (a topic id's name); first writer wins.
    fn remember(&self, key: &str, value: &str);

    /// What [`Self::remember`] kept under `key` (it never changes: hosts may cache it).
    fn recall(&self, key: &str) -> Option<String>;

    /// Keep `value` under `key`, replacing what was there (last writer wins).
    fn set_text(&self, key: &str, value: &str);

    /// What [`Self::set_text`] last kept under `key` (read anew every time).
    fn text(&self, key: &str) -> Option<String>;

    /// Set the number under `key` (last writer wins).
    fn set_number(&self, key: &str, value: i64);

    /// Raise the number under `key` to at least `value`; what it is then.
    fn raise_number(&self, key: &str, value: i64) -> i64;

    /// The number under `key`, if one was set.
    fn number(&self, key: &str) -> Option<i64>;
}

/// Buckets in this VM's memory.
#[derive(Debug, Default)]
pub struct LocalStore {
    buckets: RefCell<HashMap<String, Buckets>>,
    keys: RefCell<HashMap<String, HashSet<String>>>,
    counters: RefCell<HashMap<String, i64>>,
    names: RefCell<HashMap<String, String>>,
    numbers: RefCell<HashMap<String, i64>>,
}

impl LocalStore {
    /// The keys of the entries that hold buckets (for tests of what a client can make grow).
    pub fn entries(&self) -> Vec<String> {
        self.buckets.borrow().keys().cloned().collect()
    }
}

impl BucketStore for LocalStore {
    fn charge(&self, key: &str, charges: &mut [Charge], now_ns: u64) {
        let mut buckets = self.buckets.borrow_mut();
        let entry = match buckets.get_mut(key) {
            Some(e) => e,
            None => buckets.entry(key.to_string()).or_default(),
        };
        apply(entry, charges, now_ns);
    }

    fn admit(&self, scope: &str, key: &str, max: u32) -> bool {
        let mut keys = self.keys.borrow_mut();
        let set = keys.entry(scope.to_string()).or_default();
        if set.contains(key) {
            return true;
        }
        if set.len() >= max as usize {
            return false;
        }
        set.insert(key.to_string());
        true
    }

    fn add(&self, key: &str, delta: i64) -> i64 {
        let mut counters = self.counters.borrow_mut();
        let v = counters.entry(key.to_string()).or_insert(0);
        *v = v.saturating_add(delta);
        *v
    }

    fn remember(&self, key: &str, value: &str) {
        let mut names = self.names.borrow_mut();
        if !names.contains_key(key) {
            names.insert(key.to_string(), value.to_string());
        }
    }

    fn recall(&self, key: &str) -> Option<String> {
        self.names.borrow().get(key).cloned()
    }

    fn set_text(&self, key: &str, value: &str) {
        self.names
            .borrow_mut()
            .insert(key.to_string(), value.to_string());
    }

    fn text(&self, key: &str) -> Option<String> {
        self.names.borrow().get(key).cloned()
    }

    fn set_number(&self, key: &str, value: i64) {
        self.numbers.borrow_mut().insert(key.to_string(), value);
    }

    fn raise_number(&self, key: &str, value: i64) -> i64 {
        let mut numbers = self.numbers.borrow_mut();
        let n = numbers.entry(key.to_string()).or_insert(value);
        *n = (*n).max(value);
        *n
    }

    fn number(&self, key: &str) -> Option<i64> {
        self.numbers.borrow().get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_past_the_cap_are_not_admitted() {
        let s = LocalStore::default();
        assert!(s.admit("l", "a", 2));
        assert!(s.admit("l", "b", 2));
        assert!(!s.admit("l", "c", 2));
        assert!(s.admit("l", "a", 2));
        assert!(s.admit("other", "c", 2));
        assert_eq!(s.add("n", 1), 1);
        assert_eq!(s.add("n", -1), 0);
    }

    #[test]
    fn buckets_are_per_key_and_kind() {
        let s = LocalStore::default();
        let rate = Rate {
            per_second: 10.0,
            burst: 10.0,
        };
        let charge = |kind, amount| Charge {
            kind,
            rate,
            amount,
            delay_ms: 0,
            owed_ms: 0,
        };
        let mut c = [
            charge(Kind::Requests, 20.0),
            charge(Kind::ProduceBytes, 5.0),
        ];
        s.charge("a", &mut c, 0);
        assert_eq!((c[0].delay_ms, c[1].delay_ms), (1000, 0));
        let mut c = [charge(Kind::Requests, 10.0)];
        s.charge("b", &mut c, 0);
        assert_eq!(c[0].delay_ms, 0);
        let mut c = [charge(Kind::Requests, 0.0), charge(Kind::ProduceBytes, 5.0)];
        s.charge("a", &mut c, 0);
        assert_eq!((c[0].delay_ms, c[1].delay_ms), (1000, 0));
    }
}
