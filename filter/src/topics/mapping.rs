//! How one rule maps the names a client uses (logical) to the names on the broker (physical),
//! and back.

/// The three kinds of names a rule can map, each with its own mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    Topic,
    Group,
    TransactionalId,
}

/// What a client is shown for a name the broker sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    /// The name needs no change.
    Same,
    /// Show this logical name instead.
    Renamed(String),
    /// The client must not see this name at all (another tenant's topic, or the production topic
    /// a canary's own topic stands in for): drop the entry that carries it.
    Hidden,
}

/// Names in both directions. Rewriters call this for every name they find.
pub trait NameMapper {
    /// The broker-side name for a name the client sent, or `None` to leave it as it is.
    fn to_broker(&self, kind: NameKind, name: &str) -> Option<String>;
    /// What the client is shown for a name the broker sent.
    fn to_client(&self, kind: NameKind, name: &str) -> ToClient;
}
