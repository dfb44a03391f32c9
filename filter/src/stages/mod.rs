//! The pipeline's stages, one module each. Order matters: a stage that changes a frame ends its
//! way through the stages, so stages that only decide (authorize, limit) come before the one that
//! rewrites names.

pub mod ratelimit;
pub mod rewrite;
