//! Connections held by a rate limit (KIP-219's muted channel): a stream that must read nothing
//! from its client pauses its downstream, and the root's tick resumes it when the time is up.
//!
//! Envoy keeps the paused bytes in its buffer and shows them again, with any new ones, on the
//! next `on_downstream_data`; on resume it hands them to the next filter without calling this
//! one again. So a paused stream's bytes are examined before it pauses, and the stream
//! remembers how many of the bytes Envoy holds it has already seen.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use proxy_wasm::hostcalls;

#[derive(Default)]
pub struct Mutes {
    /// Paused streams by context id: when they may resume.
    paused: HashMap<u32, u64>,
    due: BTreeSet<(u64, u32)>,
}

pub type SharedMutes = Rc<RefCell<Mutes>>;

impl Mutes {
    /// `id` has paused its downstream until `until_ns`.
    pub fn pause(&mut self, id: u32, until_ns: u64) {
        if let Some(old) = self.paused.insert(id, until_ns) {
            self.due.remove(&(old, id));
        }
        self.due.insert((until_ns, id));
    }

    pub fn is_paused(&self, id: u32) -> bool {
        self.paused.contains_key(&id)
    }

    /// The stream went away.
    pub fn forget(&mut self, id: u32) {
        if let Some(until) = self.paused.remove(&id) {
            self.due.remove(&(until, id));
        }
    }

    /// Resume every stream whose time is up (from the root's tick).
    pub fn resume_due(&mut self, now_ns: u64) {
        while let Some(&(until, id)) = self.due.first() {
            if until > now_ns {
                break;
            }
            self.due.remove(&(until, id));
            // Marked resumed before resuming: Envoy may call the stream back at once.
            self.paused.remove(&id);
            let resumed =
                hostcalls::set_effective_context(id).and_then(|()| hostcalls::resume_downstream());
            if let Err(e) = resumed {
                log::debug!("rate limit: resuming connection {id} failed: {e:?} (it closed?)");
            }
        }
    }
}
