//! Rules as written in the plugin configuration, turned into [`Rule`]s: every problem is
//! reported with the rule's index and name.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::validate::{check_affix, check_name};
use super::{Rule, RuleError, UnsupportedPolicy};
use crate::matching::RawMatch;
use crate::topics::mapping::{Mapping, NameKind};

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

/// The rules, in order, or the first one that cannot be used.
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
        let matcher = r.matcher.parse().map_err(fail)?;
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
