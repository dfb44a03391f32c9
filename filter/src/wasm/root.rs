use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};

use super::host::{now_ns, SharedMetrics};
use super::mute::SharedMutes;
use super::shared_store::SharedDataStore;
use super::stream::{KafkaStream, VmShared};
use crate::config::{self, Config};
use crate::metrics::MetricsSink;
use crate::observers::log_sink::{count_failed_batch, Delivery, Shipper};
use crate::pipeline::held::HeldBudget;

#[derive(Default)]
pub struct KafkaRoot {
    config: Rc<Config>,
    metrics: SharedMetrics,
    /// What all connections of this VM may hold, shared by them.
    held: HeldBudget,
    mutes: SharedMutes,
    /// Rate-limit buckets: Envoy's shared data, through one cache per VM.
    limits: Rc<SharedDataStore>,
    ticks: u32,
    /// The request log's HTTP collector, when one is configured.
    shipper: Option<Shipper>,
}

/// How late a per-API request or response counter may be reported.
const FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// With rate limits: how late a held connection may be resumed.
const MUTE_TICK: Duration = Duration::from_millis(10);
const MUTE_TICKS_PER_FLUSH: u32 = 100;

impl Context for KafkaRoot {
    fn on_done(&mut self) -> bool {
        self.metrics.borrow_mut().flush();
        true
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let Some(shipper) = &mut self.shipper else {
            return;
        };
        // No headers: no response (the collector is down, or did not answer in time).
        let status = if headers == 0 {
            None
        } else {
            hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
                .and_then(|s| s.parse::<u16>().ok())
        };
        let mut m = self.metrics.borrow_mut();
        match shipper.answered(token, status) {
            Some(Delivery::Accepted(n)) => m.add_named("request_log_delivered", n as i64),
            Some(Delivery::Failed(n)) => {
                log::debug!("request log: the collector answered {status:?}; {n} lines dropped");
                count_failed_batch(&mut *m, n);
            }
            None => {}
        }
    }
}

impl KafkaRoot {
    /// Send what the request log's collector is due (from the tick): never more than its
    /// calls in flight allow; lines that cannot be sent are dropped and counted.
    fn ship_logs(&mut self) {
        let Some(shipper) = &mut self.shipper else {
            return;
        };
        let now = now_ns();
        let expired = shipper.expire(now);
        if expired > 0 {
            log::warn!("request log: the collector's answer never came; {expired} lines dropped");
            count_failed_batch(&mut *self.metrics.borrow_mut(), expired);
        }
        while let Some(batch) = shipper.due(now) {
            let c = &shipper.config;
            let headers = vec![
                (":method", "POST"),
                (":path", c.path.as_str()),
                (":authority", c.authority.as_str()),
                ("content-type", "application/x-ndjson"),
            ];
            let sent = hostcalls::dispatch_http_call(
                &c.cluster,
                headers,
                Some(&batch.body),
                vec![],
                Duration::from_millis(c.timeout_ms),
            );
            match sent {
                Ok(token) => shipper.sent(token, batch.lines, now),
                Err(e) => {
                    log::warn!(
                        "request log: cannot send to cluster `{}` ({e:?}); {} lines dropped",
                        c.cluster,
                        batch.lines
                    );
                    count_failed_batch(&mut *self.metrics.borrow_mut(), batch.lines);
                    return;
                }
            }
        }
    }
}

impl RootContext for KafkaRoot {
    fn on_tick(&mut self) {
        self.ship_logs();
        if self.config.limits.is_empty() {
            self.metrics.borrow_mut().flush();
            return;
        }
        self.mutes.borrow_mut().resume_due(now_ns());
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % MUTE_TICKS_PER_FLUSH == 0 {
            self.metrics.borrow_mut().flush();
        }
    }

    fn on_configure(&mut self, size: usize) -> bool {
        // Log lines clients cause are bounded per second by Envoy's clock.
        crate::client_log::set_clock(now_ns);
        let bytes = if size == 0 {
            Vec::new()
        } else {
            match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
                Ok(b) => b.unwrap_or_default(),
                Err(e) => {
                    log::error!("kafka filter: cannot read the plugin configuration: {e:?}");
                    return false;
                }
            }
        };
        match config::parse(&bytes) {
            Ok(c) => {
                log::info!("kafka filter configured: {c:?}");
                self.held = HeldBudget::new(c.max_held_bytes);
                self.shipper = c
                    .request_log
                    .as_ref()
                    .and_then(|l| l.http.clone())
                    .map(Shipper::new);
                self.config = Rc::new(c);
                // The tick reports held counters of connections that stay open, and sends the
                // request log's batches.
                let mut period = if self.config.limits.is_empty() {
                    FLUSH_PERIOD
                } else {
                    MUTE_TICK
                };
                if let Some(s) = &self.shipper {
                    period = period.min(Duration::from_millis(s.config.flush_ms));
                }
                if let Err(e) = hostcalls::set_tick_period(period) {
                    log::warn!("kafka filter: no tick ({e:?}): per-API counters are reported when connections close");
                }
                true
            }
            Err(e) => {
                log::error!("kafka filter: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        let vm = VmShared {
            metrics: Rc::clone(&self.metrics),
            held: self.held.clone(),
            limits: Rc::clone(&self.limits) as Rc<dyn crate::limits::BucketStore>,
            mutes: Rc::clone(&self.mutes),
            collector: self.shipper.as_ref().map(|s| Rc::clone(&s.buffer)),
        };
        Some(Box::new(KafkaStream::new(
            context_id,
            Rc::clone(&self.config),
            &vm,
        )))
    }
}
