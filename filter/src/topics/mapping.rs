//! How one rule maps the names a client uses (logical) to the names on the broker (physical),
//! and back.

use std::collections::HashMap;

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

/// How one kind of name is mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    Unchanged,
    /// Listed names only. A broker-side name that is itself a listed logical name is hidden: the
    /// client's `orders` is the broker's `orders-canary`, so the broker's `orders` is not its own.
    Exact {
        to_broker: HashMap<String, String>,
        to_client: HashMap<String, String>,
    },
    /// Every name `x` is `<prefix>x` on the broker; names without the prefix are hidden.
    Prefix(String),
    /// Every name `x` is `x<suffix>` on the broker; names without the suffix are hidden.
    Suffix(String),
}

impl Mapping {
    pub fn to_broker(&self, name: &str) -> Option<String> {
        match self {
            Mapping::Unchanged => None,
            Mapping::Exact { to_broker, .. } => to_broker.get(name).cloned(),
            Mapping::Prefix(p) => Some(format!("{p}{name}")),
            Mapping::Suffix(s) => Some(format!("{name}{s}")),
        }
    }

    pub fn to_client(&self, name: &str) -> ToClient {
        match self {
            Mapping::Unchanged => ToClient::Same,
            Mapping::Exact {
                to_broker,
                to_client,
            } => match to_client.get(name) {
                Some(logical) => ToClient::Renamed(logical.clone()),
                None if to_broker.contains_key(name) => ToClient::Hidden,
                None => ToClient::Same,
            },
            Mapping::Prefix(p) => match name.strip_prefix(p.as_str()) {
                Some(rest) if !rest.is_empty() => ToClient::Renamed(rest.to_string()),
                _ => ToClient::Hidden,
            },
            Mapping::Suffix(s) => match name.strip_suffix(s.as_str()) {
                Some(rest) if !rest.is_empty() => ToClient::Renamed(rest.to_string()),
                _ => ToClient::Hidden,
            },
        }
    }
}
