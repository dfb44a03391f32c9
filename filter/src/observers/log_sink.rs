//! Where request-log lines go besides Envoy's log: an HTTP collector. Lines wait in one bounded
//! buffer per VM, shared by its connections ([`LineBuffer`]); the host drains it in batches,
//! each one POST of newline-delimited JSON through an Envoy cluster ([`Shipper`] decides when and
//! what, `wasm::root` sends). Nothing waits for the collector: past the buffer's bounds, and for
//! batches it does not accept (down, slow, an error status), lines are dropped and counted.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use serde::Deserialize;

use crate::metrics::MetricsSink;

/// `request_log.http` in the plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSinkConfig {
    /// The Envoy cluster of the collector (it must be in Envoy's configuration).
    pub cluster: String,
    pub path: String,
    /// The `:authority` (Host) of the POSTs.
    pub authority: String,
    /// Lines per POST at most.
    pub batch_lines: usize,
    /// Lines and bytes waiting for the collector at most, per VM (per Envoy worker).
    pub max_buffered_lines: usize,
    pub max_buffered_bytes: usize,
    /// A batch smaller than `batch_lines` is sent once its oldest line is this old.
    pub flush_ms: u64,
    /// A POST not answered in this time counts as failed (its lines dropped).
    pub timeout_ms: u64,
    /// POSTs waiting for an answer at most; more lines wait in the buffer.
    pub max_in_flight: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpSink {
    cluster: String,
    path: Option<String>,
    authority: Option<String>,
    batch_lines: Option<i64>,
    max_buffered_lines: Option<i64>,
    max_buffered_bytes: Option<i64>,
    flush_ms: Option<i64>,
    timeout_ms: Option<i64>,
    max_in_flight: Option<i64>,
}

/// The field (under `request_log.http`) and what is wrong with it.
pub type SinkError = (&'static str, String);

fn within(
    field: &'static str,
    value: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<u64, SinkError> {
    let v = value.unwrap_or(default);
    if !range.contains(&v) {
        return Err((
            field,
            format!(
                "{v} is out of range, expected {}..={}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(v.unsigned_abs())
}

pub fn parse_http_sink(raw: RawHttpSink) -> Result<HttpSinkConfig, SinkError> {
    if raw.cluster.trim().is_empty() {
        return Err((
            "request_log.http.cluster",
            "must name an Envoy cluster".into(),
        ));
    }
    let path = raw.path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.chars().any(char::is_control) {
        return Err((
            "request_log.http.path",
            format!("`{path}` is not a request path (it starts with `/`)"),
        ));
    }
    let authority = raw.authority.unwrap_or_else(|| raw.cluster.clone());
    if authority.is_empty() || authority.chars().any(|c| c.is_control() || c == ' ') {
        return Err((
            "request_log.http.authority",
            format!("`{authority}` is not a host name"),
        ));
    }
    Ok(HttpSinkConfig {
        batch_lines: within(
            "request_log.http.batch_lines",
            raw.batch_lines,
            500,
            1..=100_000,
        )? as usize,
        max_buffered_lines: within(
            "request_log.http.max_buffered_lines",
            raw.max_buffered_lines,
            10_000,
            1..=10_000_000,
        )? as usize,
        max_buffered_bytes: within(
            "request_log.http.max_buffered_bytes",
            raw.max_buffered_bytes,
            8 << 20,
            1024..=(1 << 30),
        )? as usize,
        flush_ms: within(
            "request_log.http.flush_ms",
            raw.flush_ms,
            1000,
            10..=600_000,
        )?,
        timeout_ms: within(
            "request_log.http.timeout_ms",
            raw.timeout_ms,
            5000,
            10..=600_000,
        )?,
        max_in_flight: within(
            "request_log.http.max_in_flight",
            raw.max_in_flight,
            4,
            1..=64,
        )? as usize,
        cluster: raw.cluster,
        path,
        authority,
    })
}

/// Lines waiting for the collector.
#[derive(Debug)]
pub struct LineBuffer {
    lines: VecDeque<String>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
    /// When the oldest line waiting arrived (the host's clock, ns).
    oldest_ns: u64,
}

pub type SharedLines = Rc<RefCell<LineBuffer>>;

impl LineBuffer {
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            bytes: 0,
            max_lines,
            max_bytes,
            oldest_ns: 0,
        }
    }

    pub fn shared(config: &HttpSinkConfig) -> SharedLines {
        Rc::new(RefCell::new(Self::new(
            config.max_buffered_lines,
            config.max_buffered_bytes,
        )))
    }

    /// Keep a line for the collector; false (the line dropped) when the buffer is full.
    pub fn push(&mut self, line: String, now_ns: u64) -> bool {
        if self.lines.len() >= self.max_lines || self.bytes + line.len() + 1 > self.max_bytes {
            return false;
        }
        if self.lines.is_empty() {
            self.oldest_ns = now_ns;
        }
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        true
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Up to `max_lines` lines, oldest first, as one newline-delimited body, and how many.
    fn take(&mut self, max_lines: usize, now_ns: u64) -> (Vec<u8>, usize) {
        let n = max_lines.min(self.lines.len());
        let mut body = Vec::new();
        for line in self.lines.drain(..n) {
            self.bytes -= line.len() + 1;
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
        // What is left arrived since the oldest of the batch; counted from now, it waits at
        // most one more flush period.
        self.oldest_ns = now_ns;
        (body, n)
    }
}

/// Lines that never reached the collector (the buffer was full, or their batch failed).
pub const DROPPED: &str = "request_log_dropped";

/// Count a batch of `lines` the collector did not take.
pub fn count_failed_batch(m: &mut dyn MetricsSink, lines: usize) {
    m.add_named("request_log_batches_failed", 1);
    m.add_named(DROPPED, i64::try_from(lines).unwrap_or(i64::MAX));
}

/// How long after its timeout a call the host never answered is given up.
const EXPIRE_MARGIN_MS: u64 = 5_000;

/// A batch to POST.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    pub body: Vec<u8>,
    pub lines: usize,
}

/// What became of a batch sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The collector answered 2xx: the lines are delivered.
    Accepted(usize),
    /// Any other answer, none in time, or the call could not be made: the lines are dropped.
    Failed(usize),
}

/// When to send what from a VM's buffer, and what is in flight.
#[derive(Debug)]
pub struct Shipper {
    pub config: HttpSinkConfig,
    pub buffer: SharedLines,
    /// Calls waiting for their answer: token, lines, and when sent (ns).
    in_flight: Vec<(u32, usize, u64)>,
}

impl Shipper {
    pub fn new(config: HttpSinkConfig) -> Self {
        let buffer = LineBuffer::shared(&config);
        Self {
            config,
            buffer,
            in_flight: Vec::new(),
        }
    }

    /// The next batch to send now, if one is due: a full one, or the lines waiting once the
    /// oldest is `flush_ms` old; none while `max_in_flight` calls wait for their answer.
    pub fn due(&mut self, now_ns: u64) -> Option<Batch> {
        if self.in_flight.len() >= self.config.max_in_flight {
            return None;
        }
        let mut b = self.buffer.borrow_mut();
        let full = b.len() >= self.config.batch_lines;
        let old = !b.is_empty()
            && now_ns.saturating_sub(b.oldest_ns) >= self.config.flush_ms.saturating_mul(1_000_000);
        if !full && !old {
            return None;
        }
        let (body, lines) = b.take(self.config.batch_lines, now_ns);
        Some(Batch { body, lines })
    }

    /// A batch is on its way under `token`.
    pub fn sent(&mut self, token: u32, lines: usize, now_ns: u64) {
        self.in_flight.push((token, lines, now_ns));
    }

    /// Calls the host never answered, well past their timeout: given up (their lines are
    /// dropped, counted by the caller), so that their slots serve again. How many lines.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let give_up_ns = self
            .config
            .timeout_ms
            .saturating_add(EXPIRE_MARGIN_MS)
            .saturating_mul(1_000_000);
        let mut lines = 0;
        self.in_flight.retain(|&(_, n, at)| {
            let alive = now_ns.saturating_sub(at) < give_up_ns;
            if !alive {
                lines += n;
            }
            alive
        });
        lines
    }

    /// The answer to call `token`: its HTTP status (`None`: no response, e.g. the collector is
    /// down or did not answer in time).
    pub fn answered(&mut self, token: u32, status: Option<u16>) -> Option<Delivery> {
        let at = self.in_flight.iter().position(|(t, _, _)| *t == token)?;
        let (_, lines, _) = self.in_flight.swap_remove(at);
        Some(match status {
            Some(200..=299) => Delivery::Accepted(lines),
            _ => Delivery::Failed(lines),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<HttpSinkConfig, SinkError> {
        parse_http_sink(serde_json::from_str(json).unwrap())
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn defaults_and_errors_name_the_field() {
        let c = config(r#"{"cluster": "logs"}"#).unwrap();
        assert_eq!(
            (c.path.as_str(), c.authority.as_str(), c.batch_lines),
            ("/", "logs", 500)
        );
        for (json, field) in [
            (r#"{"cluster": ""}"#, "request_log.http.cluster"),
            (r#"{"cluster": "c", "path": "x"}"#, "request_log.http.path"),
            (
                r#"{"cluster": "c", "authority": "a b"}"#,
                "request_log.http.authority",
            ),
            (
                r#"{"cluster": "c", "batch_lines": 0}"#,
                "request_log.http.batch_lines",
            ),
            (
                r#"{"cluster": "c", "max_buffered_bytes": 5}"#,
                "request_log.http.max_buffered_bytes",
            ),
            (
                r#"{"cluster": "c", "flush_ms": -1}"#,
                "request_log.http.flush_ms",
            ),
            (
                r#"{"cluster": "c", "max_in_flight": 1000}"#,
                "request_log.http.max_in_flight",
            ),
        ] {
            assert_eq!(config(json).unwrap_err().0, field, "{json}");
        }
    }

    #[test]
    fn full_batches_go_at_once_partial_ones_after_flush_ms() {
        let c = config(r#"{"cluster": "c", "batch_lines": 3, "flush_ms": 1000}"#).unwrap();
        let mut s = Shipper::new(c);
        assert_eq!(s.due(0), None);
        for i in 0..4 {
            assert!(s.buffer.borrow_mut().push(format!("{{\"n\":{i}}}"), S));
        }
        let b = s.due(S).unwrap();
        assert_eq!(b.lines, 3);
        assert_eq!(b.body, b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
        // One line left: not before it is a flush period old.
        assert_eq!(s.due(S + S / 2), None);
        assert_eq!(s.due(2 * S).unwrap().lines, 1);
        assert_eq!(s.due(10 * S), None);
    }

    #[test]
    fn the_buffer_is_bounded_and_in_flight_calls_are_capped() {
        let c = config(
            r#"{"cluster": "c", "batch_lines": 1, "max_buffered_lines": 2, "max_in_flight": 1}"#,
        )
        .unwrap();
        let mut s = Shipper::new(c);
        let mut b = s.buffer.borrow_mut();
        assert!(b.push("a".into(), 0) && b.push("b".into(), 0));
        assert!(!b.push("c".into(), 0), "full: dropped");
        drop(b);
        let first = s.due(0).unwrap();
        s.sent(7, first.lines, 0);
        assert_eq!(s.due(0), None, "one call in flight at most");
        assert_eq!(s.answered(7, None), Some(Delivery::Failed(1)));
        assert_eq!(s.answered(7, Some(200)), None, "answered once");
        let second = s.due(0).unwrap();
        s.sent(8, second.lines, 0);
        assert_eq!(s.answered(8, Some(204)), Some(Delivery::Accepted(1)));
        // A call never answered is given up past its timeout: its slot serves again.
        assert!(s.buffer.borrow_mut().push("d".into(), 0));
        let third = s.due(0).unwrap();
        s.sent(9, third.lines, 0);
        assert_eq!(s.expire(5 * S), 0, "within its timeout and margin");
        assert_eq!(s.expire(11 * S), 1);
        assert_eq!(
            s.answered(9, Some(200)),
            None,
            "an answer after that counts nothing"
        );
        let mut bytes = LineBuffer::new(100, 1024);
        assert!(!bytes.push("x".repeat(2000), 0), "over the byte bound");
    }
}
