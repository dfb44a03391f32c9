//! The pipeline's stages, one module each. Order matters: requests go through them in order and
//! responses in reverse, each shown what the stage before it left; stages that decide on names
//! as the client wrote them (authorize, then limit) come before the one that rewrites them.

pub mod advertise;
pub mod authorize;
pub mod ratelimit;
pub mod rewrite;
