//! Topic, consumer-group and transactional-id name conversion: which rule applies to a
//! connection, how the rule maps names, and the per-API rewriters that apply the mapping.

pub mod mapping;
pub mod produce_head;
pub mod response_head;
pub mod rewrite;
pub mod rules;
pub mod versions;
pub mod wire;
