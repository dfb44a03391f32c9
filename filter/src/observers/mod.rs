//! Observers of finished requests (see `pipeline::Observer`): they count and report, and never
//! change a byte.

mod client_topics;
mod clients;
mod fetch_lag;
mod lag;
pub mod log_sink;
mod request_log;

pub use clients::{ClientMetrics, ClientMetricsConfig, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_TOPICS};
pub use lag::{ConsumerLag, LagConfig, DEFAULT_MAX_LAG_SERIES};
pub use request_log::{RequestLog, RequestLogConfig, LINE_PREFIX};
