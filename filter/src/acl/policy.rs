//! The ACL model and its decision, with Kafka's semantics (`AclAuthorizer` /
//! `StandardAuthorizer`): an entry matches a request when its principal (here: the `match`
//! forms), operation, resource type and pattern all do; any matching `deny` wins over any
//! matching `allow`; `All` stands for every operation; `Read`, `Write`, `Delete` and `Alter`
//! each imply `Describe`, and `AlterConfigs` implies `DescribeConfigs`; what no entry covers gets
//! the policy's default.

use crate::matching::Matcher;
use crate::pipeline::identity::Peer;

/// Kafka's ACL operations (the ones its authorizer checks for client requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    ClusterAction,
    All,
}

impl Operation {
    pub const NAMES: [(&'static str, Operation); 11] = [
        ("Read", Operation::Read),
        ("Write", Operation::Write),
        ("Create", Operation::Create),
        ("Delete", Operation::Delete),
        ("Alter", Operation::Alter),
        ("Describe", Operation::Describe),
        ("DescribeConfigs", Operation::DescribeConfigs),
        ("AlterConfigs", Operation::AlterConfigs),
        ("IdempotentWrite", Operation::IdempotentWrite),
        ("ClusterAction", Operation::ClusterAction),
        ("All", Operation::All),
    ];

    pub fn named(name: &str) -> Option<Operation> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, o)| *o)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("All", |(n, _)| n)
    }

    /// Whether an entry with `self` and `permission` covers a request for `wanted`.
    fn covers(self, wanted: Operation, permission: Permission) -> bool {
        use Operation::*;
        self == All
            || self == wanted
            // Kafka's implications, for allow entries only: an allowed Read, Write, Delete or
            // Alter lets the client Describe; an allowed AlterConfigs lets it DescribeConfigs.
            // A denied Write does not deny Describe.
            || (permission == Permission::Allow
                && ((wanted == Describe && matches!(self, Read | Write | Delete | Alter))
                    || (wanted == DescribeConfigs && self == AlterConfigs)))
    }
}

/// What a resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    Topic,
    Group,
    TransactionalId,
    Cluster,
}

impl ResourceType {
    pub fn named(name: &str) -> Option<ResourceType> {
        match name.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
            "topic" => Some(ResourceType::Topic),
            "group" => Some(ResourceType::Group),
            "transactionalid" => Some(ResourceType::TransactionalId),
            "cluster" => Some(ResourceType::Cluster),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::TransactionalId => "transactional_id",
            ResourceType::Cluster => "cluster",
        }
    }
}

/// Which resource names an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Literal(String),
    Prefixed(String),
    /// Every resource of the type (Kafka's literal `*`).
    Any,
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Literal(l) => l == name,
            Pattern::Prefixed(p) => name.starts_with(p.as_str()),
            Pattern::Any => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AclEntry {
    /// Its position in the configuration (decisions and the audit log name it).
    pub index: usize,
    pub matcher: Matcher,
    pub permission: Permission,
    pub operations: Vec<Operation>,
    pub resource_type: ResourceType,
    pub pattern: Pattern,
}

impl AclEntry {
    /// Whether the entry applies to this operation on resources of this type, whatever their
    /// name (its `match` is decided apart, once per client: see [`Applicable`]).
    fn covers(&self, op: Operation, resource: ResourceType) -> bool {
        self.resource_type == resource
            && self
                .operations
                .iter()
                .any(|o| o.covers(op, self.permission))
    }
}

/// The entries whose `match` a client meets: what every decision for it looks at (matched
/// once per client, not once per resource of each request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applicable(Vec<usize>);

/// What the policy says of one operation on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by this entry, or by the default (`None`).
    Allowed(Option<usize>),
    /// Denied by this entry, or by the default (`None`).
    Denied(Option<usize>),
}

impl Verdict {
    pub fn allowed(self) -> bool {
        matches!(self, Verdict::Allowed(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub entries: Vec<AclEntry>,
    /// For what no entry covers.
    pub default: Permission,
}

impl Policy {
    /// The entries that apply to this client.
    pub fn applicable(&self, client_id: Option<&str>, peer: &Peer) -> Applicable {
        Applicable(
            self.entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.matcher.matches(client_id, peer))
                .map(|(i, _)| i)
                .collect(),
        )
    }

    fn entries_of<'a>(&'a self, a: &'a Applicable) -> impl Iterator<Item = &'a AclEntry> + 'a {
        a.0.iter().filter_map(|i| self.entries.get(*i))
    }

    /// The decision for `op` on the resource `name` of type `resource`, for a client.
    pub fn decide(
        &self,
        client_id: Option<&str>,
        peer: &Peer,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> Verdict {
        self.decide_for(&self.applicable(client_id, peer), op, resource, name)
    }

    /// [`Self::decide`] for a client whose entries are known.
    pub fn decide_for(
        &self,
        a: &Applicable,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> Verdict {
        let mut allowed_by = None;
        for e in self.entries_of(a) {
            if !e.covers(op, resource) || !e.pattern.matches(name) {
                continue;
            }
            match e.permission {
                // Deny wins: no need to look further.
                Permission::Deny => return Verdict::Denied(Some(e.index)),
                Permission::Allow => {
                    allowed_by.get_or_insert(e.index);
                }
            }
        }
        match (allowed_by, self.default) {
            (Some(i), _) => Verdict::Allowed(Some(i)),
            (None, Permission::Allow) => Verdict::Allowed(None),
            (None, Permission::Deny) => Verdict::Denied(None),
        }
    }

    /// Whether `op` is allowed on some resource of the type (Kafka's `authorizeByResourceType`,
    /// for an idempotent producer's Write on any topic): an allow entry for it applies to the
    /// client, and no deny entry for it covering every name does.
    pub fn allows_some(
        &self,
        client_id: Option<&str>,
        peer: &Peer,
        op: Operation,
        resource: ResourceType,
    ) -> bool {
        self.allows_some_for(&self.applicable(client_id, peer), op, resource)
    }

    /// [`Self::allows_some`] for a client whose entries are known.
    pub fn allows_some_for(&self, a: &Applicable, op: Operation, resource: ResourceType) -> bool {
        let mine = || self.entries_of(a).filter(|e| e.covers(op, resource));
        if mine().any(|e| e.permission == Permission::Deny && e.pattern == Pattern::Any) {
            return false;
        }
        mine().any(|e| e.permission == Permission::Allow) || self.default == Permission::Allow
    }

    /// Whether a decision for this client could depend on its mTLS identity or address.
    pub fn needs_peer(&self) -> bool {
        self.entries.iter().any(|e| e.matcher.needs_peer())
    }
}
