use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, BufferType, PeerType};

use super::host::{now_ns, HostBuffer, SharedMetrics};
use super::mute::SharedMutes;
use crate::config::Config;
use crate::connection::{KafkaConnection, Verdict};
use crate::limits::BucketStore;
use crate::matching::parse_source_address;
use crate::metrics::{MetricKey, MetricsSink};
use crate::pipeline::held::HeldBudget;
use crate::pipeline::Peer;

pub struct KafkaStream {
    id: u32,
    conn: KafkaConnection,
    metrics: SharedMetrics,
    mutes: SharedMutes,
    active: bool,
    /// Whether the peer's identity has been read (on the first request bytes, see `read_peer`).
    peer_read: bool,
    /// Until when a rate limit holds the client (host clock, nanoseconds).
    muted_until_ns: u64,
    /// Bytes at the start of Envoy's downstream buffer already examined, kept there by a pause.
    seen_in_envoy: usize,
    /// Whether this stream paused since it last read with no pause (its entry in `mutes` may
    /// be there): most streams never pause and never touch the shared table.
    ever_paused: bool,
}

/// The host clock for one callback: read at most once, and only if something asks (each read
/// is a host call; most chunks of a large frame need no time at all).
#[derive(Default)]
struct CallbackClock(Cell<Option<u64>>);

impl CallbackClock {
    fn get(&self) -> u64 {
        if let Some(t) = self.0.get() {
            return t;
        }
        let t = now_ns();
        self.0.set(Some(t));
        t
    }
}

/// What the VM's connections share.
pub struct VmShared {
    pub metrics: SharedMetrics,
    pub held: HeldBudget,
    pub limits: Rc<dyn BucketStore>,
    pub mutes: SharedMutes,
    /// Request-log lines for the HTTP collector, when one is configured.
    pub collector: Option<crate::observers::log_sink::SharedLines>,
}

impl KafkaStream {
    pub fn new(id: u32, config: Rc<Config>, vm: &VmShared) -> Self {
        let mut conn =
            KafkaConnection::with_shared(id, config, vm.held.clone(), Rc::clone(&vm.limits));
        if let Some(lines) = &vm.collector {
            conn.set_collector(lines);
        }
        Self {
            id,
            conn,
            metrics: Rc::clone(&vm.metrics),
            mutes: Rc::clone(&vm.mutes),
            active: false,
            peer_read: false,
            muted_until_ns: 0,
            seen_in_envoy: 0,
            ever_paused: false,
        }
    }

    /// Apply the core's verdict on the bytes after the first `base` of Envoy's buffer; with
    /// the buffer's new length.
    fn apply(
        &mut self,
        buffer: BufferType,
        verdict: Verdict,
        base: usize,
        len: usize,
    ) -> (Action, usize) {
        match verdict {
            Verdict::Continue => (Action::Continue, base + len),
            Verdict::Rewrite { prefix_len, bytes } => {
                // Envoy replaces the first bytes of its buffer (start 0 is the only offset it
                // accepts besides appending): bytes already seen are written back unchanged.
                let written = if base == 0 {
                    hostcalls::set_buffer(buffer, 0, prefix_len, &bytes)
                } else {
                    hostcalls::get_buffer(buffer, 0, base).and_then(|seen| {
                        let mut all = seen.unwrap_or_default();
                        all.extend_from_slice(&bytes);
                        hostcalls::set_buffer(buffer, 0, base + prefix_len, &all)
                    })
                };
                match written {
                    Ok(()) => (
                        Action::Continue,
                        (base + len + bytes.len()).saturating_sub(prefix_len),
                    ),
                    Err(e) => {
                        crate::client_log::error(
                            self.id,
                            format_args!("replacing {prefix_len} bytes of {buffer:?} failed: {e:?}; closing the connection"),
                        );
                        (self.close(), 0)
                    }
                }
            }
            Verdict::Close => (self.close(), 0),
        }
    }

    /// A stage asked to hold the client: from now, requests wait in Envoy's buffer. True if
    /// the bytes just examined must wait as well.
    fn note_delay(&mut self, clock: &CallbackClock) -> bool {
        let first = self.conn.take_hold_first();
        if let Some(ms) = self.conn.take_delay_ms() {
            let until = clock.get().saturating_add(u64::from(ms) * 1_000_000);
            self.muted_until_ns = self.muted_until_ns.max(until);
            return first;
        }
        false
    }

    fn close(&mut self) -> Action {
        let _ = hostcalls::close_downstream();
        let _ = hostcalls::close_upstream();
        Action::Pause
    }

    /// The peer's mTLS identity and address, read only when a rule matches on them. Read with
    /// the first request bytes, not at `on_new_connection`: Envoy calls that on accept, before
    /// the TLS handshake, when the peer certificate is not known yet.
    fn read_peer(&mut self) {
        self.peer_read = true;
        if !self.conn.needs_peer() {
            return;
        }
        let text = |path: &[&str]| {
            hostcalls::get_property(path.to_vec())
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
        };
        let peer = Peer {
            principal: text(&["connection", "uri_san_peer_certificate"]),
            source_ip: text(&["source", "address"]).and_then(|a| parse_source_address(&a)),
        };
        log::debug!("peer {:?}", peer);
        self.conn.set_peer(peer);
    }

    fn finish(&mut self) {
        if self.ever_paused {
            self.mutes.borrow_mut().forget(self.id);
        }
        if self.active {
            self.active = false;
            let mut m = self.metrics.borrow_mut();
            self.conn.end(&mut *m);
            // Held counters first: a reader who sees no active connection sees all their counts.
            m.flush();
            m.add(MetricKey::ConnectionsActive, -1);
        }
    }
}

impl Context for KafkaStream {
    fn on_done(&mut self) -> bool {
        self.finish();
        true
    }
}

impl StreamContext for KafkaStream {
    fn on_new_connection(&mut self) -> Action {
        let mut m = self.metrics.borrow_mut();
        m.add(MetricKey::ConnectionsTotal, 1);
        m.add(MetricKey::ConnectionsActive, 1);
        drop(m);
        self.active = true;
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        super::fault::trap_on_marker(data_size);
        if !self.peer_read {
            self.read_peer();
        }
        if self.ever_paused && !self.mutes.borrow().is_paused(self.id) {
            // Not paused (any more): Envoy passed on whatever it held for us.
            self.seen_in_envoy = 0;
        }
        let clock = CallbackClock::default();
        let muted = self.muted_until_ns != 0 && clock.get() < self.muted_until_ns;
        if !muted {
            self.muted_until_ns = 0;
        }
        let base = self.seen_in_envoy.min(data_size);
        let len = data_size - base;
        let mut src = HostBuffer::from(BufferType::DownstreamData, base, len);
        let verdict = {
            let mut m = self.metrics.borrow_mut();
            self.conn.on_request_data(&mut src, || clock.get(), &mut *m)
        };
        let (action, buffered) = self.apply(BufferType::DownstreamData, verdict, base, len);
        let muted = self.note_delay(&clock) || muted;
        if muted && action == Action::Continue {
            // Held by a rate limit: the bytes (examined) wait in Envoy's buffer until the
            // root's tick resumes the connection.
            self.seen_in_envoy = buffered;
            self.mutes.borrow_mut().pause(self.id, self.muted_until_ns);
            self.ever_paused = true;
            return Action::Pause;
        }
        self.seen_in_envoy = 0;
        if self.ever_paused {
            self.mutes.borrow_mut().forget(self.id);
            self.ever_paused = false;
        }
        action
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let mut src = HostBuffer::new(BufferType::UpstreamData, data_size);
        let clock = CallbackClock::default();
        let verdict = {
            let mut m = self.metrics.borrow_mut();
            self.conn
                .on_response_data(&mut src, || clock.get(), &mut *m)
        };
        let (action, _) = self.apply(BufferType::UpstreamData, verdict, 0, data_size);
        // A hold asked for on a response starts after it: requests are not read here.
        self.note_delay(&clock);
        action
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.finish();
    }
}

impl Drop for KafkaStream {
    fn drop(&mut self) {
        self.finish();
    }
}
