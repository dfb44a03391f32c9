//! Rate-limit buckets in Envoy's shared data: one map per Envoy process, shared by the VMs of
//! every worker thread (same `vm_id`), updated with compare-and-swap so that a limit holds for
//! the sum of all connections, whichever worker they landed on.

use std::cell::RefCell;
use std::collections::HashSet;

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::limits::{BucketState, BucketStore, Charged, Rate};

const PREFIX: &str = "kafka-filter.limits.";
/// Compare-and-swap attempts before an update is given up (counted, logged at debug): other
/// workers changed the entry in between every time.
const MAX_TRIES: usize = 16;

#[derive(Default)]
pub struct SharedDataStore {
    /// Keys this VM has seen admitted: asked of the shared map only once.
    admitted: RefCell<HashSet<String>>,
}

/// Read-modify-write one entry with compare-and-swap; `None` if it could not be written.
fn update<T>(key: &str, mut f: impl FnMut(Option<&[u8]>) -> (Vec<u8>, T)) -> Option<T> {
    for _ in 0..MAX_TRIES {
        let (value, cas) = match hostcalls::get_shared_data(key) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("rate limit: reading shared data {key} failed: {e:?}");
                return None;
            }
        };
        let (new, out) = f(value.as_deref());
        match hostcalls::set_shared_data(key, Some(&new), cas) {
            Ok(()) => return Some(out),
            Err(Status::CasMismatch) => continue,
            Err(e) => {
                log::warn!("rate limit: writing shared data {key} failed: {e:?}");
                return None;
            }
        }
    }
    log::debug!("rate limit: {key} changed under every one of {MAX_TRIES} attempts");
    None
}

fn read_i64(v: Option<&[u8]>) -> i64 {
    v.and_then(|b| b.get(..8))
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .unwrap_or(0)
}

impl BucketStore for SharedDataStore {
    fn charge(&self, key: &str, rate: &Rate, amount: f64, now_ns: u64) -> Charged {
        let key = format!("{PREFIX}bucket.{key}");
        update(&key, |v| {
            let mut state = v
                .and_then(BucketState::from_bytes)
                .unwrap_or_else(|| BucketState::new(rate, now_ns));
            let charged = state.charge(rate, amount, now_ns);
            (state.to_bytes().to_vec(), charged)
        })
        // The shared map could not be updated: let the request through unthrottled rather
        // than guess (a lost charge; it is logged).
        .unwrap_or(Charged { delay_ms: 0 })
    }

    fn admit(&self, scope: &str, key: &str, max: u32) -> bool {
        let id = format!("{scope}/{key}");
        if self.admitted.borrow().contains(&id) {
            return true;
        }
        let member = format!("{PREFIX}key.{id}");
        let known = matches!(hostcalls::get_shared_data(&member), Ok((Some(_), _)));
        let admitted = known || {
            // Claim a slot of the scope's count, then mark the key: a key marked by another
            // worker meanwhile costs one slot, never more than the cap.
            let count = format!("{PREFIX}keys.{scope}");
            update(&count, |v| {
                let n = read_i64(v);
                if n >= i64::from(max) {
                    (n.to_le_bytes().to_vec(), false)
                } else {
                    ((n + 1).to_le_bytes().to_vec(), true)
                }
            })
            .unwrap_or(false)
                && hostcalls::set_shared_data(&member, Some(&[1]), None).is_ok()
        };
        if admitted {
            let mut a = self.admitted.borrow_mut();
            // Bounded like the shared map: at most the cap of every limit's keys.
            if a.len() < 1_000_000 {
                a.insert(id);
            }
        }
        admitted
    }

    fn add(&self, key: &str, delta: i64) -> i64 {
        let key = format!("{PREFIX}count.{key}");
        update(&key, |v| {
            let n = read_i64(v).saturating_add(delta);
            (n.to_le_bytes().to_vec(), n)
        })
        .unwrap_or(0)
    }
}
