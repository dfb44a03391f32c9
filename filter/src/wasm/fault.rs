//! Test-only fault injection: compiled only with the cargo feature `fault-injection` (off by
//! default, never in the shipped module; `make wasm-fault` builds it into target/fault/).
//!
//! A connection whose request bytes contain [`MARKER`] (for example a Kafka request with that
//! client id) traps the VM, the way a bug would: the end-to-end tests use it to check what
//! Envoy's `failure_policy` does with the worker's later connections (tests/test_e2e_vm_failure.py).

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel};

/// The bytes that trap the VM.
pub(super) const MARKER: &[u8] = b"kafka-filter-fault-injection";

/// How far into each downstream chunk to look: a request header (and its client id) sits at the
/// start of the connection's first chunk.
const SCAN_BYTES: usize = 1024;

/// Traps the VM if the downstream bytes Envoy holds (their first [`SCAN_BYTES`]) contain [`MARKER`].
pub(super) fn trap_on_marker(data_size: usize) {
    let len = data_size.min(SCAN_BYTES);
    let Ok(Some(bytes)) = hostcalls::get_buffer(BufferType::DownstreamData, 0, len) else {
        return;
    };
    if bytes.windows(MARKER.len()).any(|w| w == MARKER) {
        let _ = hostcalls::log(
            LogLevel::Critical,
            "kafka filter: fault injection marker seen, trapping the VM",
        );
        core::arch::wasm32::unreachable();
    }
}
