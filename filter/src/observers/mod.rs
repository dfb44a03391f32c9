//! Observers of finished requests (see `pipeline::Observer`): they count and report, and never
//! change a byte.

mod client_topics;
mod clients;

pub use clients::{ClientMetrics, ClientMetricsConfig, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_TOPICS};
