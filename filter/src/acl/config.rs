//! `acls` as written in the plugin configuration, turned into a [`Policy`]: every problem is
//! reported with the entry's index and field.
//!
//! ```json
//! {"acls": {"default": "deny", "entries": [
//!   {"match": {"principal": {"exact": "spiffe://cluster.local/ns/orders/sa/writer"}},
//!    "permission": "allow", "operations": ["Write", "Describe"],
//!    "resource_type": "topic", "pattern_type": "prefixed", "name": "orders."}
//! ]}}
//! ```

use serde::Deserialize;

use super::policy::{AclEntry, Operation, Pattern, Permission, Policy, ResourceType};
use crate::matching::RawMatch;

/// Entries at most: every request is checked against them.
const MAX_ENTRIES: usize = 1000;
/// The cluster resource's only name, as Kafka has it.
pub const CLUSTER_NAME: &str = "kafka-cluster";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcls {
    default: Option<String>,
    #[serde(default)]
    entries: Vec<RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(rename = "match", default)]
    matcher: RawMatch,
    permission: Option<String>,
    operations: Option<Vec<String>>,
    resource_type: Option<String>,
    pattern_type: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`acls.{field}`: {message}")]
pub struct AclError {
    /// `default`, or `entries[<i>].<field>`.
    pub field: String,
    pub message: String,
}

/// The operations Kafka's authorizer defines for each resource type.
fn applicable(resource: ResourceType, op: Operation) -> bool {
    use Operation::*;
    match resource {
        ResourceType::Topic => matches!(
            op,
            Read | Write
                | Create
                | Delete
                | Alter
                | Describe
                | DescribeConfigs
                | AlterConfigs
                | All
        ),
        ResourceType::Group => matches!(op, Read | Describe | Delete | All),
        ResourceType::TransactionalId => matches!(op, Describe | Write | All),
        ResourceType::Cluster => matches!(
            op,
            Create
                | ClusterAction
                | DescribeConfigs
                | AlterConfigs
                | IdempotentWrite
                | Alter
                | Describe
                | All
        ),
    }
}

fn permission(field: &str, v: Option<&str>) -> Result<Permission, AclError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        Some("allow") => Ok(Permission::Allow),
        Some("deny") => Ok(Permission::Deny),
        Some(other) => Err(AclError {
            field: field.into(),
            message: format!("`{other}` is neither `allow` nor `deny`"),
        }),
        None => Err(AclError {
            field: field.into(),
            message: "is required (`allow` or `deny`)".into(),
        }),
    }
}

pub fn parse_acls(raw: RawAcls) -> Result<Policy, AclError> {
    let default = permission("default", raw.default.as_deref())?;
    if raw.entries.len() > MAX_ENTRIES {
        return Err(AclError {
            field: "entries".into(),
            message: format!("{} entries, at most {MAX_ENTRIES}", raw.entries.len()),
        });
    }
    let mut entries = Vec::with_capacity(raw.entries.len());
    for (index, e) in raw.entries.into_iter().enumerate() {
        let fail = |field: &str, message: String| AclError {
            field: format!("entries[{index}].{field}"),
            message,
        };
        let matcher = e.matcher.parse().map_err(|m| fail("match", m))?;
        let permission = permission(
            &format!("entries[{index}].permission"),
            e.permission.as_deref(),
        )?;
        let resource_type = match e.resource_type.as_deref() {
            None => {
                return Err(fail(
                    "resource_type",
                    "is required (topic, group, transactional_id or cluster)".into(),
                ))
            }
            Some(t) => ResourceType::named(t).ok_or_else(|| {
                fail(
                    "resource_type",
                    format!("`{t}` is not one of topic, group, transactional_id, cluster"),
                )
            })?,
        };
        let names = e.operations.unwrap_or_default();
        if names.is_empty() {
            return Err(fail(
                "operations",
                "must name at least one operation".into(),
            ));
        }
        let mut operations = Vec::with_capacity(names.len());
        for n in &names {
            let op = Operation::named(n).ok_or_else(|| {
                let all: Vec<&str> = Operation::NAMES.iter().map(|(n, _)| *n).collect();
                fail(
                    "operations",
                    format!("`{n}` is not an operation ({})", all.join(", ")),
                )
            })?;
            if !applicable(resource_type, op) {
                return Err(fail(
                    "operations",
                    format!(
                        "`{}` does not apply to a {} (Kafka's authorizer never checks it)",
                        op.name(),
                        resource_type.name()
                    ),
                ));
            }
            operations.push(op);
        }
        let pattern = match (
            e.pattern_type
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            e.name,
        ) {
            (Some("any"), None) => Pattern::Any,
            (Some("any"), Some(_)) => {
                return Err(fail(
                    "name",
                    "is given with `pattern_type: any` (which covers every name)".into(),
                ))
            }
            (None | Some("literal"), Some(n)) if n == "*" => Pattern::Any,
            (None | Some("literal"), Some(n)) if !n.is_empty() => Pattern::Literal(n),
            (Some("prefixed"), Some(n)) if !n.is_empty() => Pattern::Prefixed(n),
            (None | Some("literal" | "prefixed"), None)
                if resource_type == ResourceType::Cluster =>
            {
                Pattern::Literal(CLUSTER_NAME.into())
            }
            (None | Some("literal" | "prefixed"), _) => {
                return Err(fail(
                    "name",
                    "is required and not empty (or use `pattern_type: any`)".into(),
                ))
            }
            (Some(other), _) => {
                return Err(fail(
                    "pattern_type",
                    format!("`{other}` is not one of literal, prefixed, any"),
                ))
            }
        };
        if resource_type == ResourceType::Cluster
            && !matches!(&pattern, Pattern::Any)
            && pattern != Pattern::Literal(CLUSTER_NAME.into())
        {
            return Err(fail(
                "name",
                format!("the cluster resource is named `{CLUSTER_NAME}` (or leave the name out)"),
            ));
        }
        entries.push(AclEntry {
            index,
            matcher,
            permission,
            operations,
            resource_type,
            pattern,
        });
    }
    Ok(Policy { entries, default })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Verdict;
    use crate::pipeline::identity::Peer;

    fn policy(json: &str) -> Result<Policy, String> {
        let raw: RawAcls = serde_json::from_str(json).map_err(|e| e.to_string())?;
        parse_acls(raw).map_err(|e| e.to_string())
    }

    fn peer(principal: Option<&str>) -> Peer {
        Peer {
            principal: principal.map(str::to_string),
            source_ip: None,
        }
    }

    const TWO_TEAMS: &str = r#"{"default": "deny", "entries": [
        {"match": {"principal": {"exact": "spiffe://c/ns/orders/sa/app"}}, "permission": "allow",
         "operations": ["Write", "Read"], "resource_type": "topic", "pattern_type": "prefixed", "name": "orders."},
        {"match": {"principal": {"exact": "spiffe://c/ns/orders/sa/app"}}, "permission": "allow",
         "operations": ["Read"], "resource_type": "group", "pattern_type": "prefixed", "name": "orders-"},
        {"permission": "deny", "operations": ["All"], "resource_type": "topic", "name": "orders.secret"},
        {"match": {"client_id": {"exact": "admin-tool"}}, "permission": "allow",
         "operations": ["All"], "resource_type": "cluster"},
        {"match": {"client_id": {"exact": "admin-tool"}}, "permission": "allow",
         "operations": ["Create", "Delete", "Describe"], "resource_type": "topic", "pattern_type": "any"}
    ]}"#;

    #[test]
    fn kafka_semantics_deny_wins_implications_and_the_default() {
        let p = policy(TWO_TEAMS).unwrap();
        let app = peer(Some("spiffe://c/ns/orders/sa/app"));
        let other = peer(Some("spiffe://c/ns/billing/sa/app"));
        let d = |client: Option<&str>, who: &Peer, op, rt, name: &str| {
            p.decide(client, who, op, rt, name)
        };
        use Operation::*;
        use ResourceType::*;
        assert_eq!(
            d(None, &app, Write, Topic, "orders.v1"),
            Verdict::Allowed(Some(0))
        );
        // Read and Write imply Describe (Kafka's authorizer).
        assert!(d(None, &app, Describe, Topic, "orders.v1").allowed());
        assert!(!d(None, &app, Create, Topic, "orders.v1").allowed());
        // A deny for everyone wins over the team's allow.
        assert_eq!(
            d(None, &app, Read, Topic, "orders.secret"),
            Verdict::Denied(Some(2))
        );
        // Another identity, another prefix: the default.
        assert_eq!(
            d(None, &other, Write, Topic, "orders.v1"),
            Verdict::Denied(None)
        );
        assert_eq!(
            d(None, &app, Write, Topic, "billing.v1"),
            Verdict::Denied(None)
        );
        assert!(d(None, &app, Read, Group, "orders-consumers").allowed());
        assert!(!d(None, &app, Delete, Group, "orders-consumers").allowed());
        // The admin tool, by client id, on the cluster and any topic.
        assert!(d(Some("admin-tool"), &other, Create, Cluster, CLUSTER_NAME).allowed());
        assert!(d(Some("admin-tool"), &other, Delete, Topic, "anything").allowed());
        assert!(!d(Some("admin-tool"), &other, Write, Topic, "anything").allowed());
        // AlterConfigs implies DescribeConfigs, not the reverse.
        let q = policy(
            r#"{"default": "deny", "entries": [{"permission": "allow",
            "operations": ["AlterConfigs"], "resource_type": "topic", "name": "t"}]}"#,
        )
        .unwrap();
        assert!(q.decide(None, &app, DescribeConfigs, Topic, "t").allowed());
        let q = policy(
            r#"{"default": "allow", "entries": [{"permission": "allow",
            "operations": ["DescribeConfigs"], "resource_type": "topic", "name": "t"}]}"#,
        )
        .unwrap();
        assert_eq!(
            q.decide(None, &app, AlterConfigs, Topic, "t"),
            Verdict::Allowed(None)
        );
        assert!(p.needs_peer());
        // Implications are for allow entries: a denied Write does not deny Describe.
        let r = policy(
            r#"{"default": "deny", "entries": [
            {"permission": "allow", "operations": ["Read"], "resource_type": "topic", "name": "t"},
            {"permission": "deny", "operations": ["Write"], "resource_type": "topic", "name": "t"}]}"#,
        )
        .unwrap();
        assert!(r.decide(None, &app, Describe, Topic, "t").allowed());
        assert!(!r.decide(None, &app, Write, Topic, "t").allowed());
        // Write on some topic (an idempotent producer): an allow for any name, unless a deny
        // covers every name.
        assert!(p.allows_some(None, &app, Write, Topic));
        assert!(!p.allows_some(None, &other, Write, Topic));
        let s = policy(
            r#"{"default": "allow", "entries": [
            {"permission": "deny", "operations": ["Write"], "resource_type": "topic", "pattern_type": "any"}]}"#,
        )
        .unwrap();
        assert!(!s.allows_some(None, &app, Write, Topic));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_and_field_named() {
        for (entries, want) in [
            (
                r#"[{"permission": "allow", "operations": ["Read"], "resource_type": "topic"}]"#,
                "entries[0].name",
            ),
            (
                r#"[{"permission": "maybe", "operations": ["Read"], "resource_type": "topic", "name": "t"}]"#,
                "entries[0].permission",
            ),
            (
                r#"[{"permission": "allow", "operations": ["Reed"], "resource_type": "topic", "name": "t"}]"#,
                "entries[0].operations",
            ),
            (
                r#"[{"permission": "allow", "operations": [], "resource_type": "topic", "name": "t"}]"#,
                "entries[0].operations",
            ),
            (
                r#"[{"permission": "allow", "operations": ["Write"], "resource_type": "group", "name": "g"}]"#,
                "does not apply to a group",
            ),
            (
                r#"[{"permission": "allow", "operations": ["Read"], "resource_type": "queue", "name": "q"}]"#,
                "entries[0].resource_type",
            ),
            (
                r#"[{"permission": "allow", "operations": ["Read"], "resource_type": "topic", "pattern_type": "glob", "name": "t"}]"#,
                "entries[0].pattern_type",
            ),
            (
                r#"[{"permission": "allow", "operations": ["Read"], "resource_type": "topic", "pattern_type": "any", "name": "t"}]"#,
                "entries[0].name",
            ),
            (
                r#"[{"permission": "allow", "operations": ["Create"], "resource_type": "cluster", "name": "prod"}]"#,
                "kafka-cluster",
            ),
            (
                r#"[{"permission": "allow", "operations": ["Read"], "resource_type": "topic", "name": "t", "match": {"source_cidrs": ["nope"]}}]"#,
                "entries[0].match",
            ),
            (
                r#"[{"permission": "allow", "operations": ["Read"], "resource_type": "topic", "name": "t"}, {"permission": "allow", "operations": ["Read"], "resource_type": "topic", "pattern_type": "prefixed", "name": ""}]"#,
                "entries[1].name",
            ),
        ] {
            let e = policy(&format!(r#"{{"default": "deny", "entries": {entries}}}"#)).unwrap_err();
            assert!(e.contains(want), "{entries}: {e}");
        }
        assert!(policy(r#"{"entries": []}"#)
            .unwrap_err()
            .contains("acls.default"));
        assert!(policy(r#"{"default": "deny", "entries": [], "extra": 1}"#)
            .unwrap_err()
            .contains("unknown field"));
    }
}
