use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::host::SharedMetrics;
use super::stream::KafkaStream;
use crate::config::{self, Config};

#[derive(Default)]
pub struct KafkaRoot {
    config: Rc<Config>,
    metrics: SharedMetrics,
}

impl Context for KafkaRoot {}

impl RootContext for KafkaRoot {
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
                self.config = Rc::new(c);
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
        )))
    }
}
