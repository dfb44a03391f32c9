//! Name conversion rules: who a rule applies to and how it maps names, parsed from the plugin
//! configuration and validated there, so that a rule that could never work (a shadowed rule, a
//! mapping that collides, a name Kafka would refuse) stops the configuration, not the traffic.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::Deserialize;

use super::mapping::{NameKind, NameMapper, ToClient};

/// Kafka's limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;
/// Group and transactional ids have no broker-side limit; this only keeps them sane.
const MAX_ID_LEN: usize = 255;

/// What a connection presents, for matching rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The mTLS peer identity (`connection.uri_san_peer_certificate`, the SPIFFE id in Istio).
    pub principal: Option<String>,
    pub source_ip: Option<IpAddr>,
}

/// What to do with a request of an API that carries names but that the filter cannot rewrite
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

/// Who a rule applies to: every criterion given must hold; none given means everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    pub client_id: Option<StrMatch>,
    pub principal: Option<StrMatch>,
    pub source_cidrs: Vec<Cidr>,
}

impl Matcher {
    pub fn matches(&self, client_id: Option<&str>, peer: &Peer) -> bool {
        let str_ok = |m: &Option<StrMatch>, v: Option<&str>| match m {
            None => true,
            Some(m) => v.is_some_and(|v| m.matches(v)),
        };
        str_ok(&self.client_id, client_id)
            && str_ok(&self.principal, peer.principal.as_deref())
            && (self.source_cidrs.is_empty()
                || peer
                    .source_ip
                    .is_some_and(|ip| self.source_cidrs.iter().any(|c| c.contains(ip))))
    }

    /// True if every connection this matcher accepts is also accepted by `self`, as far as
    /// can be decided (a regex covers only the same regex).
    fn covers(&self, other: &Matcher) -> bool {
        let str_covers = |a: &Option<StrMatch>, b: &Option<StrMatch>| match (a, b) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a.covers(b),
        };
        str_covers(&self.client_id, &other.client_id)
            && str_covers(&self.principal, &other.principal)
            && (self.source_cidrs.is_empty()
                || (!other.source_cidrs.is_empty()
                    && other
                        .source_cidrs
                        .iter()
                        .all(|o| self.source_cidrs.iter().any(|s| s.covers(o)))))
    }

    /// Whether a rule needs the peer's identity or address (read from the host per connection).
    pub fn needs_peer(&self) -> bool {
        self.principal.is_some() || !self.source_cidrs.is_empty()
    }
}

#[derive(Debug, Clone)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Regex(regex_lite::Regex),
}

impl PartialEq for StrMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StrMatch::Exact(a), StrMatch::Exact(b))
            | (StrMatch::Prefix(a), StrMatch::Prefix(b)) => a == b,
            (StrMatch::Regex(a), StrMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for StrMatch {}

impl StrMatch {
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(v),
        }
    }

    fn covers(&self, other: &StrMatch) -> bool {
        match (self, other) {
            (StrMatch::Exact(a), StrMatch::Exact(b)) => a == b,
            (StrMatch::Prefix(p), StrMatch::Exact(e) | StrMatch::Prefix(e)) => {
                e.starts_with(p.as_str())
            }
            (StrMatch::Regex(a), StrMatch::Regex(b)) => a.as_str() == b.as_str(),
            (StrMatch::Regex(r), StrMatch::Exact(e)) => r.is_match(e),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            // An IPv4 client may reach a dual-stack listener as ::ffff:a.b.c.d.
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => prefix_eq(
                u128::from(u32::from(a)) << 96,
                u128::from(u32::from(b)) << 96,
                self.bits,
            ),
            (IpAddr::V6(a), IpAddr::V6(b)) => prefix_eq(u128::from(a), u128::from(b), self.bits),
            _ => false,
        }
    }

    fn covers(&self, other: &Cidr) -> bool {
        other.bits >= self.bits && self.contains(other.addr)
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
    a & mask == b & mask
}

/// Parse `source.address` as Envoy reports it (`1.2.3.4:5678`, `[::1]:5678`).
pub fn parse_source_address(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

// ---- configuration -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    name: String,
    #[serde(rename = "match", default)]
    matcher: RawMatch,
    topics: Option<RawMapping>,
    groups: Option<RawMapping>,
    transactional_ids: Option<RawMapping>,
    unsupported_apis: Option<UnsupportedPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    client_id: Option<RawStrMatch>,
    principal: Option<RawStrMatch>,
    source_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawStrMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawMapping {
    Keyword(String),
    Form(RawMappingForm),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMappingForm {
    map: Option<HashMap<String, String>>,
    names: Option<Vec<String>>,
    prefix: Option<String>,
    add_prefix: Option<String>,
    add_suffix: Option<String>,
}

/// A rule that cannot be used, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules[{index}] (`{name}`): {message}")]
pub struct RuleError {
    pub index: usize,
    pub name: String,
    pub message: String,
}

pub fn parse_rules(raw: Vec<RawRule>) -> Result<Vec<Rule>, RuleError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    for (index, r) in raw.into_iter().enumerate() {
        let fail = |message: String| RuleError {
            index,
            name: r.name.clone(),
            message,
        };
        if r.name.trim().is_empty() {
            return Err(fail("`name` must not be empty".into()));
        }
        if !names.insert(r.name.clone()) {
            return Err(fail("another rule has the same `name`".into()));
        }
        let matcher = parse_match(&r.matcher).map_err(fail)?;
        if let Some(earlier) = rules.iter().find(|e| e.matcher.covers(&matcher)) {
            return Err(fail(format!(
                "`match` is covered by the earlier rule `{}`: rules apply first match first, so \
                 this one could never apply (put the more specific rule first)",
                earlier.name
            )));
        }
        let topics = match &r.topics {
            None => Mapping::Unchanged,
            Some(m) => {
                parse_mapping(m, NameKind::Topic).map_err(|e| fail(format!("`topics`: {e}")))?
            }
        };
        let groups = match &r.groups {
            Some(m) => {
                parse_mapping(m, NameKind::Group).map_err(|e| fail(format!("`groups`: {e}")))?
            }
            None => match &topics {
                Mapping::Prefix(p) => Mapping::Prefix(p.clone()),
                Mapping::Unchanged => Mapping::Unchanged,
                _ => {
                    return Err(fail(
                        "`groups` must be set when `topics` maps names one by one: a consumer \
                         group under this rule would otherwise share its members and committed \
                         offsets with clients outside it. Use e.g. {\"add_suffix\": \"-canary\"}, \
                         or \"unchanged\" to share them on purpose"
                            .into(),
                    ))
                }
            },
        };
        let transactional_ids = match &r.transactional_ids {
            Some(m) => parse_mapping(m, NameKind::TransactionalId)
                .map_err(|e| fail(format!("`transactional_ids`: {e}")))?,
            None => match &groups {
                Mapping::Prefix(_) | Mapping::Suffix(_) => groups.clone(),
                _ => Mapping::Unchanged,
            },
        };
        if topics == Mapping::Unchanged
            && groups == Mapping::Unchanged
            && transactional_ids == Mapping::Unchanged
        {
            return Err(fail(
                "maps nothing: give at least one of `topics`, `groups`, `transactional_ids`".into(),
            ));
        }
        rules.push(Rule {
            name: r.name.clone(),
            matcher,
            topics,
            groups,
            transactional_ids,
            unsupported_apis: r.unsupported_apis.unwrap_or(UnsupportedPolicy::Reject),
        });
    }
    Ok(rules)
}

fn parse_match(m: &RawMatch) -> Result<Matcher, String> {
    let str_match = |field: &str, s: &Option<RawStrMatch>| -> Result<Option<StrMatch>, String> {
        Ok(match s {
            None => None,
            Some(RawStrMatch::Exact(e)) => Some(StrMatch::Exact(e.clone())),
            Some(RawStrMatch::Prefix(p)) if p.is_empty() => {
                return Err(format!(
                    "`match.{field}.prefix` must not be empty (omit `{field}` to match everyone)"
                ))
            }
            Some(RawStrMatch::Prefix(p)) => Some(StrMatch::Prefix(p.clone())),
            Some(RawStrMatch::Regex(r)) => Some(StrMatch::Regex(
                // Anchored: a pattern names whole ids, as users expect from "matches".
                regex_lite::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| format!("`match.{field}.regex`: {e}"))?,
            )),
        })
    };
    let mut source_cidrs = Vec::new();
    for c in m.source_cidrs.iter().flatten() {
        source_cidrs.push(
            Cidr::parse(c)
                .ok_or_else(|| format!("`match.source_cidrs`: `{c}` is not an address or CIDR"))?,
        );
    }
    if m.source_cidrs.as_ref().is_some_and(|c| c.is_empty()) {
        return Err("`match.source_cidrs` is empty (omit it to match every address)".into());
    }
    Ok(Matcher {
        client_id: str_match("client_id", &m.client_id)?,
        principal: str_match("principal", &m.principal)?,
        source_cidrs,
    })
}

fn parse_mapping(m: &RawMapping, kind: NameKind) -> Result<Mapping, String> {
    let form = match m {
        RawMapping::Keyword(k) if k == "unchanged" => return Ok(Mapping::Unchanged),
        RawMapping::Keyword(k) => {
            return Err(format!("`{k}` is not a mapping (\"unchanged\", or an object with `map`, `names`, `prefix` or `add_suffix`)"))
        }
        RawMapping::Form(f) => f,
    };
    let check = |n: &str| check_name(kind, n);
    let pairs: Vec<(String, String)> = match form {
        RawMappingForm {
            map: Some(map),
            names: None,
            prefix: None,
            add_prefix: None,
            add_suffix: None,
        } => {
            let mut pairs: Vec<_> = map.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
            pairs.sort();
            pairs
        }
        RawMappingForm {
            map: None,
            names: Some(names),
            prefix: None,
            add_prefix,
            add_suffix,
        } if add_prefix.is_some() != add_suffix.is_some() => {
            let (pre, suf) = (
                add_prefix.as_deref().unwrap_or(""),
                add_suffix.as_deref().unwrap_or(""),
            );
            names
                .iter()
                .map(|n| (n.clone(), format!("{pre}{n}{suf}")))
                .collect()
        }
        RawMappingForm {
            map: None,
            names: None,
            prefix: Some(p),
            add_prefix: None,
            add_suffix: None,
        } => {
            check_affix(kind, "prefix", p)?;
            return Ok(Mapping::Prefix(p.clone()));
        }
        RawMappingForm {
            map: None,
            names: None,
            prefix: None,
            add_prefix: None,
            add_suffix: Some(s),
        } => {
            check_affix(kind, "add_suffix", s)?;
            return Ok(Mapping::Suffix(s.clone()));
        }
        _ => {
            return Err(
                "give exactly one of: `map` {logical: physical}; `names` [..] with one of \
                 `add_prefix`/`add_suffix`; `prefix`; `add_suffix`"
                    .into(),
            )
        }
    };
    if pairs.is_empty() {
        return Err("maps no names".into());
    }
    let mut to_broker = HashMap::new();
    let mut to_client = HashMap::new();
    for (logical, physical) in &pairs {
        check(logical)?;
        check(physical)?;
        if logical == physical {
            return Err(format!("`{logical}` is mapped to itself"));
        }
        if to_broker
            .insert(logical.clone(), physical.clone())
            .is_some()
        {
            return Err(format!("`{logical}` is listed twice"));
        }
        if let Some(other) = to_client.insert(physical.clone(), logical.clone()) {
            return Err(format!(
                "`{other}` and `{logical}` both map to `{physical}`: the broker's name could not be mapped back"
            ));
        }
    }
    for (logical, physical) in &pairs {
        if to_broker.contains_key(physical) {
            return Err(format!(
                "`{logical}` maps to `{physical}`, which is itself mapped: ambiguous in responses"
            ));
        }
    }
    Ok(Mapping::Exact {
        to_broker,
        to_client,
    })
}

fn check_name(kind: NameKind, n: &str) -> Result<(), String> {
    match kind {
        NameKind::Topic => {
            if n.is_empty() || n.len() > MAX_TOPIC_LEN {
                return Err(format!(
                    "topic name `{n}` must be 1 to {MAX_TOPIC_LEN} characters"
                ));
            }
            if n == "." || n == ".." {
                return Err(format!("`{n}` is not a valid topic name"));
            }
            if let Some(c) = n
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(format!(
                    "topic name `{n}` contains `{c}`: Kafka allows ASCII letters, digits, `.`, `_` and `-`"
                ));
            }
        }
        NameKind::Group | NameKind::TransactionalId => {
            if n.is_empty() || n.len() > MAX_ID_LEN {
                return Err(format!("id `{n}` must be 1 to {MAX_ID_LEN} bytes"));
            }
            if n.chars().any(char::is_control) {
                return Err(format!("id `{n}` contains a control character"));
            }
        }
    }
    Ok(())
}

fn check_affix(kind: NameKind, field: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("`{field}` must not be empty"));
    }
    match kind {
        // The affix alone must be a valid name fragment, short enough to leave room for a name.
        NameKind::Topic if s.len() >= MAX_TOPIC_LEN => Err(format!("`{field}` is too long")),
        _ => check_name(kind, s).map_err(|e| format!("`{field}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert_eq!(
            parse_source_address("127.0.0.1:5555"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_source_address("[::1]:5555"),
            Some("::1".parse().unwrap())
        );
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
