//! Kafka protocol filter for Envoy and Istio.
//!
//! The Kafka logic is sans-io: [`connection::KafkaConnection`] takes the bytes of one client
//! connection in both directions (through [`codec::ByteSource`], so records are never copied in)
//! and returns decisions, reporting what it saw to a [`metrics::MetricsSink`]. The proxy-wasm
//! adapter in `wasm/` only moves bytes, time and metrics between Envoy and that core, so a second
//! host (an Envoy dynamic module) can reuse the core unchanged.

// Tests may unwrap and index; the filter itself may not (see [lints] in Cargo.toml).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod acl;
pub mod api;
pub mod brokers;
pub mod client_log;
pub mod codec;
pub mod config;
pub mod connection;
pub mod limits;
pub mod matching;
pub mod metrics;
pub mod observers;
pub mod pipeline;
pub mod stages;
pub mod topics;

#[cfg(target_arch = "wasm32")]
mod wasm;
