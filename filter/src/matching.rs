//! Who a rule applies to: the `match` forms shared by every feature that selects connections
//! (name conversion rules now; limits and ACLs use the same forms): client id, mTLS principal and
//! source CIDR, parsed and validated from the plugin configuration.

use std::net::IpAddr;

use serde::Deserialize;

use crate::pipeline::identity::Peer;

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
    pub(crate) fn covers(&self, other: &Matcher) -> bool {
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

/// A `match` object as written in the configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
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

impl RawMatch {
    /// The matcher, or what is wrong with it (naming the field).
    pub fn parse(&self) -> Result<Matcher, String> {
        parse_match(self)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
