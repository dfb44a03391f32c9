//! The proxy-wasm adapter: moves bytes, time and metrics between Envoy and the sans-io core.
//! Every host call goes through `hostcalls` and its `Result`: the SDK's convenience wrappers
//! panic on a host error, and a panic aborts the VM with every connection on the worker.

#[cfg(feature = "fault-injection")]
mod fault;
mod host;
mod mute;
mod root;
mod shared_store;
mod stream;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        // Should never run; if it does, leave a trace of why before the VM aborts.
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("kafka filter panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::KafkaRoot::default())
    });
}}
