//! Kafka-style ACLs enforced in front of any broker (issue 15, in progress): who (the `match`
//! forms of rules and limits), `allow` or `deny`, operations, resource type and pattern, as
//! Kafka's own authorizer has them. [`policy`] is the model and its decision, [`config`] parses
//! the plugin configuration's `acls`, [`checks`] says what each request needs authorized.
//!
//! Not wired into the pipeline yet: the plugin configuration does not accept `acls` until the
//! stage that enforces them exists, so no configuration can believe it is protected.

pub mod checks;
pub mod config;
pub mod policy;

pub use config::{parse_acls, AclError, RawAcls};
pub use policy::{AclEntry, Operation, Pattern, Permission, Policy, ResourceType, Verdict};
