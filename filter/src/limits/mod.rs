//! Rate limits at the connection and message level, enforced the way Kafka's own quotas are
//! (KIP-219): over a rate, a request is forwarded and its client is held afterwards for as long
//! as its debt takes to pay back; the response says so in `throttle_time_ms`.
//!
//! [`bucket`] is the arithmetic, [`store`] keeps buckets (this VM's memory, or Envoy's shared
//! data for a limit per Envoy process), [`config`] parses the `limits` configuration. The stage
//! that applies them is `stages::ratelimit`.

pub mod bucket;
pub mod config;
pub mod store;

pub use bucket::{BucketState, Charged, Rate};
pub use config::{parse_limits, KeyBy, Limit, LimitError, Mode, RawLimit};
pub use store::{apply, BucketStore, Buckets, Charge, Kind, LocalStore, KINDS};
