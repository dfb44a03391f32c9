//! A proxy-wasm network filter that lets every byte through without looking at it.
//!
//! `make bench` runs it in the same Envoy bootstrap as the Kafka filter: the difference between
//! this row and `tcp_proxy` is what Envoy charges for any wasm network filter (a VM entry per
//! read in each direction), and the difference between it and the Kafka filter's rows is the
//! filter's own work. Only built for `wasm32`; natively it is an empty library.

#[cfg(target_arch = "wasm32")]
mod floor {
    use proxy_wasm::traits::{Context, RootContext, StreamContext};
    use proxy_wasm::types::{ContextType, LogLevel};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}

    struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::StreamContext)
        }

        fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
            Some(Box::new(Pass))
        }
    }

    /// The trait's defaults: every callback returns `Action::Continue`.
    struct Pass;

    impl Context for Pass {}

    impl StreamContext for Pass {}
}
