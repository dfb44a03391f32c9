use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::host::{now_ns, SharedMetrics};
use super::mute::SharedMutes;
use super::shared_store::SharedDataStore;
use super::stream::{KafkaStream, VmShared};
use crate::config::{self, Config};
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
}

impl RootContext for KafkaRoot {
    fn on_tick(&mut self) {
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
                self.config = Rc::new(c);
                // The tick reports held counters of connections that stay open.
                let period = if self.config.limits.is_empty() {
                    FLUSH_PERIOD
                } else {
                    MUTE_TICK
                };
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
        };
        Some(Box::new(KafkaStream::new(
            context_id,
            Rc::clone(&self.config),
            &vm,
        )))
    }
}
