//! Where buckets live. The limiter stage sees only [`BucketStore`]: this VM's memory
//! ([`LocalStore`], for tests and native use), Envoy's shared data (one map per Envoy process,
//! shared by every worker: `wasm::shared_store`), or later a remote service.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::bucket::{BucketState, Charged, Rate};

pub trait BucketStore {
    /// Charge `amount` to bucket `key` (full when first seen) at `now_ns`.
    fn charge(&self, key: &str, rate: &Rate, amount: f64, now_ns: u64) -> Charged;

    /// Whether `key` may have buckets of its own under `scope` (a limit): true if it already
    /// has, or if fewer than `max` keys have. Keys past the cap share an overflow bucket.
    fn admit(&self, scope: &str, key: &str, max: u32) -> bool;

    /// Add `delta` to the counter `key` and return its new value (concurrent connections).
    fn add(&self, key: &str, delta: i64) -> i64;
}

/// Buckets in this VM's memory.
#[derive(Debug, Default)]
pub struct LocalStore {
    buckets: RefCell<HashMap<String, BucketState>>,
    keys: RefCell<HashMap<String, HashSet<String>>>,
    counters: RefCell<HashMap<String, i64>>,
}

impl BucketStore for LocalStore {
    fn charge(&self, key: &str, rate: &Rate, amount: f64, now_ns: u64) -> Charged {
        let mut buckets = self.buckets.borrow_mut();
        let state = match buckets.get_mut(key) {
            Some(s) => s,
            None => buckets
                .entry(key.to_string())
                .or_insert_with(|| BucketState::new(rate, now_ns)),
        };
        state.charge(rate, amount, now_ns)
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
    fn buckets_are_per_key() {
        let s = LocalStore::default();
        let r = Rate {
            per_second: 10.0,
            burst: 10.0,
        };
        assert_eq!(s.charge("a", &r, 20.0, 0).delay_ms, 1000);
        assert_eq!(s.charge("b", &r, 10.0, 0).delay_ms, 0);
        assert_eq!(s.charge("a", &r, 0.0, 0).delay_ms, 1000);
    }
}
