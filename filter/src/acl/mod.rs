//! Kafka-style ACLs enforced in front of any broker: who (the `match`
//! forms of rules and limits), `allow` or `deny`, operations, resource type and pattern, as
//! Kafka's own authorizer has them. [`policy`] is the model and its decision, [`config`] parses
//! the plugin configuration's `acls`, [`checks`] says what each request needs authorized. The
//! pipeline stage that enforces them is `stages::authorize`.

pub mod checks;
pub mod config;
pub mod policy;

pub use config::{parse_acls, AclError, RawAcls};
pub use policy::{AclEntry, Operation, Pattern, Permission, Policy, ResourceType, Verdict};
