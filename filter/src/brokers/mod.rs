//! Broker addresses as clients must see them: in front of brokers that advertise their own
//! addresses, the filter rewrites every broker endpoint in the responses that carry them
//! (Metadata, FindCoordinator, DescribeCluster) to the Envoy listener that fronts that broker,
//! so clients that bootstrap through Envoy never connect to a broker directly.
//!
//! `broker_addresses` in the plugin configuration:
//!
//! ```json
//! {"broker_addresses": {"map": {"1": "kafka-1.proxy.example:19091"},
//!                       "host": "kafka-{id}.proxy.example", "port_base": 19090,
//!                       "unmapped": "drop"}}
//! ```
//!
//! A broker id in `map` gets that address; any other gets `host` (with `{id}` replaced by the
//! broker id) and either port `port_base + id` or one fixed `port` (then `host` must hold `{id}`:
//! a name per broker, e.g. a DNS name or SNI route per broker). A broker neither covers is
//! *unmapped*: never passed through silently, it is counted (`broker_addresses_unmapped`) and,
//! by `unmapped`, left out of the response (`drop`, the default: a Metadata response lists the
//! other brokers, a FindCoordinator answer says COORDINATOR_NOT_AVAILABLE, so the client asks
//! again) or kept as the broker sent it (`keep`).

pub mod rewrite;

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmapped {
    Drop,
    Keep,
}

/// The port of the pattern's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternPort {
    /// `port_base`: the broker id added.
    Base(i32),
    /// `port`: the same for every broker (whose host differs).
    Fixed(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddresses {
    pub map: BTreeMap<i32, Address>,
    /// `host` (`{id}` replaced) and its port: the address of a broker `map` does not name.
    pub pattern: Option<(String, PatternPort)>,
    pub unmapped: Unmapped,
}

impl BrokerAddresses {
    /// The address clients get for broker `id`; `None`: unmapped.
    pub fn address(&self, id: i32) -> Option<Address> {
        if let Some(a) = self.map.get(&id) {
            return Some(a.clone());
        }
        let (host, port) = self.pattern.as_ref()?;
        let port = match *port {
            PatternPort::Base(base) => base.checked_add(id).filter(|p| (1..=65535).contains(p))?,
            PatternPort::Fixed(port) => port,
        };
        Some(Address {
            host: host.replace("{id}", &id.to_string()),
            port,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBrokerAddresses {
    #[serde(default)]
    map: BTreeMap<String, String>,
    host: Option<String>,
    port_base: Option<i64>,
    port: Option<i64>,
    unmapped: Option<Unmapped>,
}

/// The field at fault (under `broker_addresses.`) and what is wrong.
pub type AddressError = (String, String);

fn host_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

fn check_host(h: &str) -> Result<(), AddressError> {
    if host_ok(&h.replace("{id}", "0")) {
        Ok(())
    } else {
        Err((
            "host".into(),
            format!("`{h}` is not a host name (with `{{id}}`)"),
        ))
    }
}

pub fn parse(raw: RawBrokerAddresses) -> Result<BrokerAddresses, AddressError> {
    let mut map = BTreeMap::new();
    for (id, addr) in raw.map {
        let field = format!("map.{id}");
        let node: i32 = id.parse().ok().filter(|n: &i32| *n >= 0).ok_or_else(|| {
            (
                field.clone(),
                format!("`{id}` is not a broker id (0 or more)"),
            )
        })?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| (field.clone(), format!("`{addr}` is not host:port")))?;
        let port: i32 = port
            .parse()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| (field.clone(), format!("`{port}` is not a port (1..=65535)")))?;
        if !host_ok(host) {
            return Err((field, format!("`{host}` is not a host name or address")));
        }
        map.insert(
            node,
            Address {
                host: host.to_string(),
                port,
            },
        );
    }
    let pattern = match (raw.host, raw.port_base, raw.port) {
        (None, None, None) => None,
        (None, _, _) => {
            return Err((
                "host".into(),
                "is required with `port_base` or `port`".into(),
            ))
        }
        (Some(_), None, None) => {
            return Err((
                "port_base".into(),
                "`port_base` or `port` is required with `host`".into(),
            ));
        }
        (Some(_), Some(_), Some(_)) => {
            return Err(("port".into(), "give `port` or `port_base`, not both".into()));
        }
        (Some(h), Some(base), None) => {
            check_host(&h)?;
            let base = i32::try_from(base)
                .ok()
                .filter(|b| (0..=65535).contains(b))
                .ok_or_else(|| {
                    (
                        "port_base".to_string(),
                        format!("{base} is out of range, expected 0..=65535"),
                    )
                })?;
            Some((h, PatternPort::Base(base)))
        }
        (Some(h), None, Some(port)) => {
            check_host(&h)?;
            if !h.contains("{id}") {
                return Err((
                    "host".into(),
                    format!(
                        "`{h}` has no `{{id}}`: with one `port`, every broker would get the same \
                         address"
                    ),
                ));
            }
            let port = i32::try_from(port)
                .ok()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| {
                    (
                        "port".to_string(),
                        format!("{port} is not a port (1..=65535)"),
                    )
                })?;
            Some((h, PatternPort::Fixed(port)))
        }
    };
    if map.is_empty() && pattern.is_none() {
        return Err((
            "map".into(),
            "give `map`, or `host` with `port_base` or `port`: without them every broker is unmapped"
                .into(),
        ));
    }
    Ok(BrokerAddresses {
        map,
        pattern,
        unmapped: raw.unmapped.unwrap_or(Unmapped::Drop),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Result<BrokerAddresses, AddressError> {
        parse(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn map_then_pattern() {
        let b = parsed(
            r#"{"map": {"1": "a.example:9001"}, "host": "k-{id}.proxy", "port_base": 19090}"#,
        )
        .unwrap();
        assert_eq!(
            b.address(1),
            Some(Address {
                host: "a.example".into(),
                port: 9001
            })
        );
        assert_eq!(
            b.address(7),
            Some(Address {
                host: "k-7.proxy".into(),
                port: 19097
            })
        );
        assert_eq!(b.address(70000), None, "past the last port");
        let by_name = parsed(r#"{"host": "kafka-{id}.proxy.example", "port": 9092}"#).unwrap();
        assert_eq!(
            by_name.address(70000),
            Some(Address {
                host: "kafka-70000.proxy.example".into(),
                port: 9092
            })
        );
        let only_map = parsed(r#"{"map": {"1": "[::1]:9001"}}"#).unwrap();
        assert_eq!(only_map.address(2), None);
        assert_eq!(only_map.unmapped, Unmapped::Drop);
    }

    #[test]
    fn bad_documents_name_the_field() {
        for (doc, field) in [
            (r#"{}"#, "map"),
            (r#"{"map": {"x": "a:1"}}"#, "map.x"),
            (r#"{"map": {"1": "a"}}"#, "map.1"),
            (r#"{"map": {"1": "a:0"}}"#, "map.1"),
            (r#"{"map": {"1": "a b:1"}}"#, "map.1"),
            (r#"{"host": "h"}"#, "port_base"),
            (r#"{"port_base": 1}"#, "host"),
            (r#"{"host": "h", "port_base": 70000}"#, "port_base"),
            (r#"{"host": "h", "port": 9092}"#, "host"),
            (r#"{"host": "h-{id}", "port": 0}"#, "port"),
            (
                r#"{"host": "h-{id}", "port": 9092, "port_base": 1}"#,
                "port",
            ),
            (r#"{"port": 9092}"#, "host"),
        ] {
            assert_eq!(parsed(doc).unwrap_err().0, field, "{doc}");
        }
    }
}
