use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::host::SharedMetrics;
use super::stream::KafkaStream;
use crate::config::{self, Config};
use crate::pipeline::held::HeldBudget;

#[derive(Default)]
pub struct KafkaRoot {
    config: Rc<Config>,
    metrics: SharedMetrics,
    /// What all connections of this VM may hold, shared by them.
    held: HeldBudget,
}

/// How late a per-API request or response counter may be reported.
const FLUSH_PERIOD: Duration = Duration::from_secs(1);

impl Context for KafkaRoot {
    fn on_done(&mut self) -> bool {
        self.metrics.borrow_mut().flush();
        true
    }
}

impl RootContext for KafkaRoot {
    fn on_tick(&mut self) {
        self.metrics.borrow_mut().flush();
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
                if let Err(e) = hostcalls::set_tick_period(FLUSH_PERIOD) {
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
        Some(Box::new(KafkaStream::new(
            context_id,
            Rc::clone(&self.config),
            Rc::clone(&self.metrics),
            self.held.clone(),
        )))
    }
}
