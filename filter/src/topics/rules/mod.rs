//! Name conversion rules: who a rule applies to ([`crate::matching`]) and how it maps names
//! ([`Mapping`]), parsed from the plugin configuration and validated there ([`parse`],
//! [`validate`]), so that a rule that could never work (a shadowed rule, a mapping that
//! collides, a name Kafka would refuse) stops the configuration, not the traffic.

mod parse;
mod validate;

use serde::Deserialize;

pub use parse::{parse_rules, RawRule};

use crate::matching::Matcher;
use crate::topics::mapping::{Mapping, NameKind, NameMapper, ToClient};

/// (or a version of it the filter has no schema for), from a client under a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsupportedPolicy {
    /// Answer it with a Kafka error response (the broker never sees it).
    Reject,
    /// Forward it unchanged: the client sees physical names. Only for trusted clients.
    PassThrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub matcher: Matcher,
    pub topics: Mapping,
    pub groups: Mapping,
    pub transactional_ids: Mapping,
    pub unsupported_apis: UnsupportedPolicy,
}

impl Rule {
    fn mapping(&self, kind: NameKind) -> &Mapping {
        match kind {
            NameKind::Topic => &self.topics,
            NameKind::Group => &self.groups,
            NameKind::TransactionalId => &self.transactional_ids,
        }
    }
}

impl NameMapper for Rule {
    fn to_broker(&self, kind: NameKind, name: &str) -> Option<String> {
        self.mapping(kind).to_broker(name)
    }

    fn to_client(&self, kind: NameKind, name: &str) -> ToClient {
        self.mapping(kind).to_client(name)
    }
}

/// A rule that cannot be used, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules[{index}] (`{name}`): {message}")]
pub struct RuleError {
    pub index: usize,
    pub name: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::identity::Peer;

    fn parse(json: &str) -> Result<Vec<Rule>, RuleError> {
        let raw: Vec<RawRule> = serde_json::from_str(json).unwrap();
        parse_rules(raw)
    }

    #[test]
    fn canary_rule_maps_both_ways() {
        let rules = parse(
            r#"[{"name": "c", "match": {"client_id": {"exact": "checkout-canary"}},
                 "topics": {"map": {"orders": "orders-canary"}}, "groups": {"add_suffix": "-canary"}}]"#,
        )
        .unwrap();
        let r = &rules[0];
        assert_eq!(
            r.to_broker(NameKind::Topic, "orders").as_deref(),
            Some("orders-canary")
        );
        assert_eq!(r.to_broker(NameKind::Topic, "other"), None);
        assert_eq!(
            r.to_client(NameKind::Topic, "orders-canary"),
            ToClient::Renamed("orders".into())
        );
        assert_eq!(r.to_client(NameKind::Topic, "orders"), ToClient::Hidden);
        assert_eq!(r.to_client(NameKind::Topic, "other"), ToClient::Same);
        assert_eq!(
            r.to_broker(NameKind::Group, "g").as_deref(),
            Some("g-canary")
        );
        assert_eq!(
            r.to_client(NameKind::Group, "g-canary"),
            ToClient::Renamed("g".into())
        );
        assert_eq!(r.to_client(NameKind::Group, "g"), ToClient::Hidden);
        // Transactional ids follow a whole-namespace group mapping.
        assert_eq!(
            r.to_broker(NameKind::TransactionalId, "t").as_deref(),
            Some("t-canary")
        );
        assert!(r.matcher.matches(Some("checkout-canary"), &Peer::default()));
        assert!(!r.matcher.matches(Some("checkout"), &Peer::default()));
        assert!(!r.matcher.matches(None, &Peer::default()));
    }

    #[test]
    fn tenant_prefix_applies_to_all_kinds() {
        let rules = parse(r#"[{"name": "a", "match": {"principal": {"prefix": "spiffe://cluster.local/ns/team-a/"}}, "topics": {"prefix": "team-a."}}]"#).unwrap();
        let r = &rules[0];
        for kind in [NameKind::Topic, NameKind::Group, NameKind::TransactionalId] {
            assert_eq!(r.to_broker(kind, "x").as_deref(), Some("team-a.x"));
            assert_eq!(r.to_client(kind, "team-a.x"), ToClient::Renamed("x".into()));
            assert_eq!(r.to_client(kind, "team-b.x"), ToClient::Hidden);
            assert_eq!(r.to_client(kind, "team-a."), ToClient::Hidden);
        }
        let peer = Peer {
            principal: Some("spiffe://cluster.local/ns/team-a/sa/app".into()),
            source_ip: None,
        };
        assert!(r.matcher.matches(None, &peer));
        assert!(!r.matcher.matches(None, &Peer::default()));
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_problem() {
        let table: &[(&str, &str)] = &[
            (
                r#"[{"name": "", "topics": {"prefix": "a."}}]"#,
                "`name` must not be empty",
            ),
            (
                r#"[{"name": "a", "topics": {"prefix": "a."}}, {"name": "a", "match": {"client_id": {"exact": "x"}}, "topics": {"prefix": "b."}}]"#,
                "same `name`",
            ),
            (
                r#"[{"name": "all", "topics": {"prefix": "a."}}, {"name": "x", "match": {"client_id": {"exact": "x"}}, "topics": {"prefix": "b."}}]"#,
                "rules[1] (`x`): `match` is covered by the earlier rule `all`",
            ),
            (
                r#"[{"name": "p", "match": {"client_id": {"prefix": "check"}}, "topics": {"prefix": "a."}}, {"name": "e", "match": {"client_id": {"exact": "checkout"}}, "topics": {"prefix": "b."}}]"#,
                "covered by the earlier rule `p`",
            ),
            (
                r#"[{"name": "n", "match": {"source_cidrs": ["10.0.0.0/8"]}, "topics": {"prefix": "a."}}, {"name": "m", "match": {"source_cidrs": ["10.1.0.0/16"]}, "topics": {"prefix": "b."}}]"#,
                "covered by the earlier rule `n`",
            ),
            (
                r#"[{"name": "c", "topics": {"map": {"orders": "orders-canary"}}}]"#,
                "`groups` must be set",
            ),
            (
                r#"[{"name": "c", "topics": {"map": {"a": "x", "b": "x"}}, "groups": "unchanged"}]"#,
                "both map to `x`",
            ),
            (
                r#"[{"name": "c", "topics": {"map": {"a": "b", "b": "c"}}, "groups": "unchanged"}]"#,
                "which is itself mapped",
            ),
            (
                r#"[{"name": "c", "topics": {"map": {"a": "a"}}, "groups": "unchanged"}]"#,
                "mapped to itself",
            ),
            (
                r#"[{"name": "c", "topics": {"map": {"a": "b c"}}, "groups": "unchanged"}]"#,
                "contains ` `",
            ),
            (
                r#"[{"name": "c", "topics": {"map": {"..": "b"}}, "groups": "unchanged"}]"#,
                "not a valid topic name",
            ),
            (
                r#"[{"name": "c", "topics": {"prefix": "team/a"}}]"#,
                "`topics`",
            ),
            (
                r#"[{"name": "c", "topics": {"prefix": ""}}]"#,
                "must not be empty",
            ),
            (
                r#"[{"name": "c", "topics": {"prefix": "a.", "add_suffix": "-x"}}]"#,
                "exactly one of",
            ),
            (
                r#"[{"name": "c", "topics": "everything"}]"#,
                "not a mapping",
            ),
            (
                r#"[{"name": "c", "topics": {"names": ["a"], "add_suffix": "-c"}, "groups": {"map": {}}}]"#,
                "maps no names",
            ),
            (
                r#"[{"name": "c", "match": {"client_id": {"regex": "("}}, "topics": {"prefix": "a."}}]"#,
                "match.client_id.regex",
            ),
            (
                r#"[{"name": "c", "match": {"source_cidrs": ["nope"]}, "topics": {"prefix": "a."}}]"#,
                "`nope` is not an address",
            ),
            (
                r#"[{"name": "c", "match": {"source_cidrs": []}, "topics": {"prefix": "a."}}]"#,
                "source_cidrs` is empty",
            ),
            (r#"[{"name": "c", "groups": "unchanged"}]"#, "maps nothing"),
        ];
        for (doc, needle) in table {
            let err = parse(doc).unwrap_err().to_string();
            assert!(err.contains(needle), "{doc}: {err}");
        }
    }

    #[test]
    fn specific_rule_first_is_fine() {
        let rules = parse(
            r#"[{"name": "e", "match": {"client_id": {"exact": "checkout"}}, "topics": {"prefix": "b."}},
                {"name": "p", "match": {"client_id": {"prefix": "check"}}, "topics": {"prefix": "a."}},
                {"name": "all", "topics": {"prefix": "z."}}]"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 3);
    }

    #[test]
    fn names_with_suffix_form() {
        let rules = parse(r#"[{"name": "s", "topics": {"names": ["a", "b"], "add_suffix": "-blue"}, "groups": "unchanged"}]"#).unwrap();
        assert_eq!(
            rules[0].to_broker(NameKind::Topic, "b").as_deref(),
            Some("b-blue")
        );
        assert_eq!(rules[0].to_broker(NameKind::Group, "g"), None);
    }
}
