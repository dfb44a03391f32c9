//! Rate-limit buckets in Envoy's shared data: one map per Envoy process, shared by the VMs of
//! every worker thread (same `vm_id`), updated with compare-and-swap so that a limit holds for
//! the sum of all connections, whichever worker they landed on.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::limits::{apply, BucketState, BucketStore, Buckets, Charge, KINDS};

const PREFIX: &str = "kafka-filter.limits.";
/// Compare-and-swap attempts before an update is given up (counted, logged at debug): other
/// workers changed the entry in between every time.
const MAX_TRIES: usize = 16;

#[derive(Default)]
pub struct SharedDataStore {
    /// Keys this VM has seen admitted: asked of the shared map only once.
    admitted: RefCell<HashSet<String>>,
    /// Names this VM has remembered or recalled (topic ids' names never change): asked of the
    /// shared map only once each.
    names: RefCell<HashMap<String, String>>,
}

/// Names kept in the VM, at most (a cluster's topics; past it they are asked again).
const MAX_LOCAL_NAMES: usize = 100_000;

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

/// An entry: a byte of which buckets are present, then each bucket's 16 bytes.
fn decode(v: Option<&[u8]>) -> Buckets {
    let mut out: Buckets = [None; KINDS];
    let Some((&present, rest)) = v.and_then(|b| b.split_first()) else {
        return out;
    };
    for (i, (slot, bytes)) in out.iter_mut().zip(rest.chunks_exact(16)).enumerate() {
        if present & (1 << i) != 0 {
            *slot = BucketState::from_bytes(bytes);
        }
    }
    out
}

fn encode(buckets: &Buckets) -> Vec<u8> {
    let mut out = vec![0u8; 1 + 16 * KINDS];
    let mut present = 0u8;
    for (i, (slot, bytes)) in buckets
        .iter()
        .zip(out.get_mut(1..).unwrap_or_default().chunks_exact_mut(16))
        .enumerate()
    {
        if let Some(state) = slot {
            present |= 1 << i;
            bytes.copy_from_slice(&state.to_bytes());
        }
    }
    if let Some(first) = out.first_mut() {
        *first = present;
    }
    out
}

fn read_i64(v: Option<&[u8]>) -> i64 {
    v.and_then(|b| b.get(..8))
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .unwrap_or(0)
}

impl BucketStore for SharedDataStore {
    fn charge(&self, key: &str, charges: &mut [Charge], now_ns: u64) {
        let key = format!("{PREFIX}bucket.{key}");
        let applied = update(&key, |v| {
            let mut buckets = decode(v);
            let mut attempt = charges.to_vec();
            apply(&mut buckets, &mut attempt, now_ns);
            (encode(&buckets), attempt)
        });
        match applied {
            Some(done) => charges.copy_from_slice(&done),
            // The shared map could not be updated: the request goes unthrottled rather than
            // guessed at (a lost charge; it is logged).
            None => charges.iter_mut().for_each(|c| c.delay_ms = 0),
        }
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

    fn remember(&self, key: &str, value: &str) {
        if self.names.borrow().contains_key(key) {
            return;
        }
        let shared = format!("{PREFIX}name.{key}");
        if !matches!(hostcalls::get_shared_data(&shared), Ok((Some(_), _))) {
            if let Err(e) = hostcalls::set_shared_data(&shared, Some(value.as_bytes()), None) {
                log::debug!("shared data: writing {shared} failed: {e:?}");
            }
        }
        self.keep_name(key, value);
    }

    fn recall(&self, key: &str) -> Option<String> {
        if let Some(v) = self.names.borrow().get(key) {
            return Some(v.clone());
        }
        let shared = format!("{PREFIX}name.{key}");
        let value = match hostcalls::get_shared_data(&shared) {
            Ok((Some(v), _)) => String::from_utf8(v).ok(),
            _ => None,
        }?;
        self.keep_name(key, &value);
        Some(value)
    }

    fn set_text(&self, key: &str, value: &str) {
        // Not kept in the VM: another worker may change it.
        let key = format!("{PREFIX}text.{key}");
        if let Err(e) = hostcalls::set_shared_data(&key, Some(value.as_bytes()), None) {
            log::debug!("shared data: writing {key} failed: {e:?}");
        }
    }

    fn text(&self, key: &str) -> Option<String> {
        let key = format!("{PREFIX}text.{key}");
        match hostcalls::get_shared_data(&key) {
            Ok((Some(v), _)) => String::from_utf8(v).ok(),
            _ => None,
        }
    }

    fn set_number(&self, key: &str, value: i64) {
        let key = format!("{PREFIX}number.{key}");
        if let Err(e) = hostcalls::set_shared_data(&key, Some(&value.to_le_bytes()), None) {
            log::debug!("shared data: writing {key} failed: {e:?}");
        }
    }

    fn raise_number(&self, key: &str, value: i64) -> i64 {
        let key = format!("{PREFIX}number.{key}");
        update(&key, |v| {
            let n = match v {
                Some(_) => read_i64(v).max(value),
                None => value,
            };
            (n.to_le_bytes().to_vec(), n)
        })
        .unwrap_or(value)
    }

    fn number(&self, key: &str) -> Option<i64> {
        let key = format!("{PREFIX}number.{key}");
        match hostcalls::get_shared_data(&key) {
            Ok((Some(v), _)) => Some(read_i64(Some(&v))),
            _ => None,
        }
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

impl SharedDataStore {
    fn keep_name(&self, key: &str, value: &str) {
        let mut names = self.names.borrow_mut();
        if names.len() < MAX_LOCAL_NAMES {
            names.insert(key.to_string(), value.to_string());
        }
    }
}
