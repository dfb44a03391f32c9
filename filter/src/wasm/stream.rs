use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, BufferType, PeerType};

use super::host::{now_ns, HostBuffer, SharedMetrics};
use crate::config::Config;
use crate::connection::{KafkaConnection, Verdict};
use crate::matching::parse_source_address;
use crate::metrics::{MetricKey, MetricsSink};
use crate::pipeline::held::HeldBudget;
use crate::pipeline::Peer;

pub struct KafkaStream {
    conn: KafkaConnection,
    metrics: SharedMetrics,
    active: bool,
    /// Whether the peer's identity has been read (on the first request bytes, see `read_peer`).
    peer_read: bool,
}

impl KafkaStream {
    pub fn new(id: u32, config: Rc<Config>, metrics: SharedMetrics, held: HeldBudget) -> Self {
        Self {
            conn: KafkaConnection::with_budget(id, config, held),
            metrics,
            active: false,
            peer_read: false,
        }
    }

    fn apply(&mut self, buffer: BufferType, verdict: Verdict) -> Action {
        match verdict {
            Verdict::Continue => Action::Continue,
            Verdict::Rewrite { prefix_len, bytes } => {
                // Envoy replaces the first `prefix_len` bytes of its buffer (start 0 is the only
                // offset it accepts besides appending).
                match hostcalls::set_buffer(buffer, 0, prefix_len, &bytes) {
                    Ok(()) => Action::Continue,
                    Err(e) => {
                        log::error!("replacing {prefix_len} bytes of {buffer:?} failed: {e:?}; closing the connection");
                        self.close()
                    }
                }
            }
            Verdict::Close => self.close(),
        }
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
        if self.active {
            self.active = false;
            let mut m = self.metrics.borrow_mut();
            self.conn.flush(&mut *m);
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
        let mut src = HostBuffer::new(BufferType::DownstreamData, data_size);
        let verdict = {
            let mut m = self.metrics.borrow_mut();
            self.conn.on_request_data(&mut src, now_ns, &mut *m)
        };
        self.apply(BufferType::DownstreamData, verdict)
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let mut src = HostBuffer::new(BufferType::UpstreamData, data_size);
        let verdict = {
            let mut m = self.metrics.borrow_mut();
            self.conn.on_response_data(&mut src, now_ns, &mut *m)
        };
        self.apply(BufferType::UpstreamData, verdict)
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
