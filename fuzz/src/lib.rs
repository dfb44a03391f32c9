//! Shared harness of the fuzz targets (see README.md here): driving the sans-io connection like
//! the wasm host, cutting streams into frames, reading names per API with kafka-protocol,
//! generating valid frames, and the oracles.

pub mod acl_oracle;
pub mod drive;
pub mod frames;
pub mod gen;
pub mod input;
pub mod names;
pub mod oracle;
pub mod pairing;
pub mod scenario;
