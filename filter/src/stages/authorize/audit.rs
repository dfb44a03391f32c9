//! The audit log: one JSON line per security-relevant event (a denial, an administrative
//! operation allowed, a connection with who it is), with time, identity, operation, resource
//! and outcome in every line. Written where the request log writes (Envoy's log, and the HTTP
//! collector when one is configured), always on when ACLs are.
//!
//! A client cannot flood the log: each connection may write a burst of lines and then a few per
//! second; what it is refused is counted (`acl_audit_suppressed`).

use serde_json::{json, Value};

use crate::metrics::MetricsSink;
use crate::observers::log_sink::{SharedLines, DROPPED};
use crate::pipeline::Identity;

/// Every line starts with this, so a log pipeline can pick them out.
pub const LINE_PREFIX: &str = "kafka_audit ";

const BURST: u32 = 200;
const PER_SECOND: u64 = 50;

/// What one line says beyond who and when.
pub struct Event<'a> {
    pub event: &'static str,
    pub api: String,
    pub api_version: i16,
    pub correlation_id: i32,
    pub operation: &'a str,
    pub resource_type: &'a str,
    pub resource: &'a str,
    pub outcome: &'static str,
    /// The ACL entry that decided (its index), or the default (`None`).
    pub entry: Option<usize>,
    pub reason: Option<&'a str>,
}

pub struct Audit {
    connection: u32,
    envoy_log: bool,
    collector: Option<SharedLines>,
    wants_collector: bool,
    tokens: u32,
    refilled_ns: u64,
}

impl Audit {
    pub fn new(connection: u32, envoy_log: bool, wants_collector: bool) -> Self {
        Self {
            connection,
            envoy_log,
            collector: None,
            wants_collector,
            tokens: BURST,
            refilled_ns: 0,
        }
    }

    pub fn set_collector(&mut self, lines: &SharedLines) {
        if self.wants_collector {
            self.collector = Some(std::rc::Rc::clone(lines));
        }
    }

    fn take_token(&mut self, now_ns: u64) -> bool {
        if self.refilled_ns == 0 {
            self.refilled_ns = now_ns;
        }
        let elapsed = now_ns.saturating_sub(self.refilled_ns);
        let earned = elapsed.saturating_mul(PER_SECOND) / 1_000_000_000;
        if earned > 0 {
            self.tokens = u32::try_from(u64::from(self.tokens).saturating_add(earned))
                .unwrap_or(BURST)
                .min(BURST);
            self.refilled_ns = now_ns;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Write one line (unless the connection has written too many lately).
    pub fn write(
        &mut self,
        identity: &Identity,
        client_id: Option<&str>,
        now_ns: u64,
        e: &Event<'_>,
        m: &mut dyn MetricsSink,
    ) {
        if !self.take_token(now_ns) {
            m.add_named("acl_audit_suppressed", 1);
            return;
        }
        let line = line(self.connection, identity, client_id, now_ns, e).to_string();
        m.add_named("acl_audit_lines", 1);
        if self.envoy_log {
            crate::client_log::record(format_args!("{LINE_PREFIX}{line}"));
        }
        if let Some(c) = &self.collector {
            if !c.borrow_mut().push(line, now_ns) {
                m.add_named(DROPPED, 1);
            }
        }
    }
}

pub fn line(
    connection: u32,
    id: &Identity,
    client_id: Option<&str>,
    now_ns: u64,
    e: &Event<'_>,
) -> Value {
    json!({
        "type": "kafka_audit",
        "time": rfc3339(now_ns),
        "time_ms": now_ns / 1_000_000,
        "event": e.event,
        "connection": connection,
        "principal": id.peer.principal,
        "source": id.peer.source_ip.map(|ip| ip.to_string()),
        "client_id": client_id.or(id.client_id.as_deref()),
        "client_software": id.software.as_ref().map(|s| format!("{}/{}", s.name, s.version)),
        "api": e.api,
        "api_version": e.api_version,
        "correlation_id": e.correlation_id,
        "operation": e.operation,
        "resource_type": e.resource_type,
        "resource": e.resource,
        "outcome": e.outcome,
        "acl_entry": e.entry,
        "reason": e.reason,
    })
}

/// UTC time with milliseconds, e.g. `2026-12-03T15:04:05.123Z`.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let ms = (ns / 1_000_000) % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RecordingSink as Recorder;

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339(1_796_310_245_000_000_000),
            "2026-12-03T15:04:05.000Z"
        );
    }

    #[test]
    fn lines_go_to_the_collector_when_there_is_one() {
        use crate::observers::log_sink::LineBuffer;
        let lines = std::rc::Rc::new(std::cell::RefCell::new(LineBuffer::new(10, 1 << 20)));
        let mut m = Recorder::default();
        let e = Event {
            event: "connection",
            api: "Metadata".into(),
            api_version: 12,
            correlation_id: 1,
            operation: "Connect",
            resource_type: "cluster",
            resource: "kafka-cluster",
            outcome: "allowed",
            entry: None,
            reason: None,
        };
        let mut without = Audit::new(1, false, false);
        without.set_collector(&lines);
        without.write(&Identity::default(), Some("c"), 1, &e, &mut m);
        assert!(lines.borrow().is_empty());
        let mut with = Audit::new(1, false, true);
        with.set_collector(&lines);
        with.write(&Identity::default(), Some("c"), 1, &e, &mut m);
        assert_eq!(lines.borrow().len(), 1);
    }

    #[test]
    fn a_connection_writes_a_burst_then_a_few_a_second() {
        let mut a = Audit::new(1, false, false);
        let mut m = Recorder::default();
        let id = Identity::default();
        let e = Event {
            event: "denied",
            api: "Produce".into(),
            api_version: 9,
            correlation_id: 1,
            operation: "Write",
            resource_type: "topic",
            resource: "t",
            outcome: "denied",
            entry: None,
            reason: None,
        };
        let t0 = 1_000_000_000;
        for _ in 0..BURST + 10 {
            a.write(&id, None, t0, &e, &mut m);
        }
        assert_eq!(m.named("acl_audit_lines"), i64::from(BURST));
        assert_eq!(m.named("acl_audit_suppressed"), 10);
        for _ in 0..100 {
            a.write(&id, None, t0 + 1_000_000_000, &e, &mut m);
        }
        assert_eq!(
            m.named("acl_audit_lines"),
            i64::from(BURST) + PER_SECOND as i64
        );
    }
}
