use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MetricType};

use crate::codec::source::Window;
use crate::codec::ByteSource;
use crate::metrics::{CounterBatch, MetricKey, MetricKind, MetricsSink};

/// The chunk Envoy is showing the filter right now; bytes are fetched only when asked for, each
/// fetch a host call (which calls back into the VM to allocate), so prefetched ranges are kept.
pub struct HostBuffer {
    buffer: BufferType,
    /// Where the bytes shown to the core start in Envoy's buffer (after bytes already seen).
    base: usize,
    len: usize,
    window: Window,
}

impl HostBuffer {
    pub fn new(buffer: BufferType, len: usize) -> Self {
        Self::from(buffer, 0, len)
    }

    /// The `len` bytes of Envoy's buffer that follow its first `base`.
    pub fn from(buffer: BufferType, base: usize, len: usize) -> Self {
        Self {
            buffer,
            base,
            len,
            window: Window::default(),
        }
    }

    fn fetch(&self, start: usize, len: usize, out: &mut Vec<u8>) -> bool {
        let start = self.base.saturating_add(start);
        match hostcalls::get_buffer(self.buffer, start, len) {
            Ok(Some(bytes)) if bytes.len() == len => {
                // The host already allocated these bytes in the VM: an empty buffer without
                // room for them (a fresh prefetch window) takes them as they are, no copy.
                if out.is_empty() && out.capacity() < len {
                    *out = bytes;
                } else {
                    out.extend_from_slice(&bytes);
                }
                true
            }
            Ok(None) if len == 0 => true,
            other => {
                log::error!(
                    "reading {len} bytes at {start} of {:?} failed: {:?}",
                    self.buffer,
                    other.map(|b| b.map(|b| b.len()))
                );
                false
            }
        }
    }
}

impl ByteSource for HostBuffer {
    fn len(&self) -> usize {
        self.len
    }

    fn copy_into(&mut self, start: usize, len: usize, out: &mut Vec<u8>) -> bool {
        self.window.serve(start, len, out) || self.fetch(start, len, out)
    }

    fn prefetch(&mut self, start: usize, need: usize, ahead: usize) {
        let mut window = std::mem::take(&mut self.window);
        window.fill(start, need, |buf| self.fetch(start, ahead, buf));
        self.window = window;
    }
}

/// Nanoseconds from the host's clock (0 if it cannot be read: latency is then wrong, not fatal).
pub fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Envoy metrics, defined on first use and cached per VM (one per worker thread).
pub struct HostMetrics {
    ids: MetricIds,
    /// Metrics named at run time, by name.
    named: HashMap<String, Option<u32>>,
    /// Hot counters held between flushes (the root's tick and every connection's close).
    batch: CounterBatch,
}

#[derive(Clone, Copy)]
enum Slot {
    Undefined,
    Defined(u32),
    Failed,
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self {
            ids: MetricIds(vec![Slot::Undefined; MetricKey::COUNT]),
            named: HashMap::new(),
            batch: CounterBatch::default(),
        }
    }
}

pub type SharedMetrics = Rc<RefCell<HostMetrics>>;

impl HostMetrics {
    /// The id of `kafka.<name>`, defined as `kind` on first use (a name is used with one kind).
    fn named_id(&mut self, kind: MetricType, name: &str) -> Option<u32> {
        if let Some(id) = self.named.get(name) {
            return *id;
        }
        let full = format!("kafka.{name}");
        let id = match hostcalls::define_metric(kind, &full) {
            Ok(id) => Some(id),
            Err(e) => {
                // Remembered as failed: logged once, never retried on the hot path.
                log::error!("defining metric {full} failed: {e:?}");
                None
            }
        };
        self.named.insert(name.to_string(), id);
        id
    }

    /// Report the held counters to Envoy.
    pub fn flush(&mut self) {
        let ids = &mut self.ids;
        self.batch.drain(|key, delta| ids.increment(key, delta));
    }
}

/// Per [`MetricKey::index`]: not yet defined, defined with this id, or failed (logged once).
struct MetricIds(Vec<Slot>);

impl MetricIds {
    fn increment(&mut self, key: MetricKey, delta: i64) {
        if let Some(id) = self.id(key) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    fn id(&mut self, key: MetricKey) -> Option<u32> {
        let slot = self.0.get_mut(key.index())?;
        match *slot {
            Slot::Defined(id) => return Some(id),
            Slot::Failed => return None,
            Slot::Undefined => {}
        }
        *slot = {
            let kind = match key.kind() {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
                MetricKind::Histogram => MetricType::Histogram,
            };
            let name = key.name();
            match hostcalls::define_metric(kind, &name) {
                Ok(id) => Slot::Defined(id),
                Err(e) => {
                    // Remembered as failed: logged once, never retried on the hot path.
                    log::error!("defining metric {name} failed: {e:?}");
                    Slot::Failed
                }
            }
        };
        match *slot {
            Slot::Defined(id) => Some(id),
            _ => None,
        }
    }
}

impl MetricsSink for HostMetrics {
    fn add(&mut self, key: MetricKey, delta: i64) {
        if delta == 0 || self.batch.add(key, delta) {
            return;
        }
        self.ids.increment(key, delta);
    }

    fn add_named(&mut self, name: &str, delta: i64) {
        if let Some(id) = self.named_id(MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    fn gauge_named(&mut self, name: &str, delta: i64) {
        if let Some(id) = self.named_id(MetricType::Gauge, name) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    fn set_gauge_named(&mut self, name: &str, value: u64) {
        if let Some(id) = self.named_id(MetricType::Gauge, name) {
            // A gauge recorded is set (proxy-wasm's record on a gauge).
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn record_named(&mut self, name: &str, value: u64) {
        if let Some(id) = self.named_id(MetricType::Histogram, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn record(&mut self, key: MetricKey, value: u64) {
        if let Some(id) = self.ids.id(key) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}
