//! The input formats of the fuzz targets, and running them.
//!
//! `request_stream`:  `[config][chunking][client bytes...]`
//! `response_stream`: `[chunking][request length: u16][client bytes][broker bytes...]`
//! `acl`: `[config]` + the rule targets' operations.
//! rule targets: a sequence of operations, each `[tag]` + operands; `tag & 7` is the operation,
//! `tag >> 3` the chunking its bytes are handed in with ([`Chunking`]):
//!
//! | op | operands | what |
//! |---|---|---|
//! | 0 | `len: u16`, bytes | raw client bytes |
//! | 1 | `len: u16`, bytes | raw broker bytes |
//! | 2 | `len: u16`, body | a client frame: the size field is added |
//! | 3 | `len: u16`, body | a broker frame: the size field is added |
//! | 4, 5 | choices | a generated request (API, version, client id, names) |
//! | 6, 7 | choices | the broker answers the next request it received (generated response; for `acl`, an acks=0 Produce next in line is answered or passed over as a choice says) |

use std::rc::Rc;

use kafka_filter::config::Config;
use kafka_protocol::messages::ApiKey;

use crate::drive::{config, Chunking, Conn, Dir};
use crate::frames;
use crate::gen::{self, NamePool, REQUEST_APIS};
use crate::input::Cursor;
use crate::names::{self, Treatment};
use crate::oracle::{self, Model};

/// Configurations of the no-rule targets.
const NO_RULE_CONFIGS: [&str; 5] = [
    "{}",
    r#"{"max_frame_bytes": 1024, "on_frame_error": "pass_through"}"#,
    r#"{"max_frame_bytes": 1024}"#,
    r#"{"max_inflight_requests": 1}"#,
    // Per-client metrics walk Produce requests and Fetch responses (codec/walk): still byte
    // for byte.
    r#"{"client_metrics": {"max_clients": 4, "max_topics": 4}, "consumer_lag": {"max_series": 4}}"#,
];
/// The configuration above that walks frames.
const WALKING: usize = 4;

thread_local! {
    static NO_RULE: Vec<Rc<Config>> = NO_RULE_CONFIGS.iter().map(|c| config(c)).collect();
}

/// The forwarded bytes of one direction with no rule: all of them, or (once the filter closed
/// the connection in that direction) exactly the chunks before the closing one.
fn byte_exact(what: &str, orig: &[u8], fwd: &[u8], closed_before: Option<usize>) {
    let want = match closed_before {
        Some(n) => &orig[..n],
        None => orig,
    };
    if fwd != want {
        let at = fwd
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(fwd.len().min(want.len()));
        panic!(
            "ORACLE: with no rule the {what} stream was changed: forwarded {} bytes, expected {} \
             (first difference at byte {at}; closed: {closed_before:?})",
            fwd.len(),
            want.len()
        );
    }
}

fn check_no_rule(c: &Conn, pass_through: bool) {
    if pass_through && c.closed.is_some() {
        panic!("ORACLE: on_frame_error=pass_through closed the connection");
    }
    let closed_req = (c.closed.is_some()).then_some(c.before_close.0);
    let closed_resp = (c.closed.is_some()).then_some(c.before_close.1);
    byte_exact("request", &c.orig_req, &c.fwd_req, closed_req);
    byte_exact("response", &c.orig_resp, &c.fwd_resp, closed_resp);
}

/// `request_stream`: arbitrary client bytes, no rule: forwarded byte for byte.
pub fn request_stream(data: &[u8]) {
    let mut c = Cursor::new(data);
    let which = usize::from(c.u8()) % NO_RULE_CONFIGS.len();
    let chunking = Chunking(c.u8());
    let cfg = NO_RULE.with(|v| v[which].clone());
    let mut conn = Conn::new(cfg);
    conn.feed(Dir::Request, c.rest(), chunking);
    conn.finish();
    check_no_rule(&conn, which == 1);
}

/// `response_stream`: client requests (so that correlation ids match), then arbitrary broker
/// bytes, no rule: both forwarded byte for byte.
pub fn response_stream(data: &[u8]) {
    let mut c = Cursor::new(data);
    let chunking = Chunking(c.u8());
    let req_len = usize::from(c.u16());
    let requests = c.bytes(req_len);
    // Half the inputs (by the requests' length) walk the responses.
    let which = if req_len % 2 == 0 { 0 } else { WALKING };
    let cfg = NO_RULE.with(|v| v[which].clone());
    let mut conn = Conn::new(cfg);
    conn.feed(Dir::Request, requests, Chunking::WHOLE);
    conn.feed(Dir::Response, c.rest(), chunking);
    conn.finish();
    check_no_rule(&conn, false);
}

/// At most this many operations per input: keeps each run short.
const MAX_OPS: usize = 96;

/// A rule target: the operations above, then the oracle.
pub fn rule(model: &'static Model, data: &[u8]) {
    let conn = run(model, data, KAFKA);
    oracle::check(model, &conn);
}

/// The ACL target: `[config]` + the operations above under a policy, then its oracle. The first
/// byte chooses the policy's configuration (`acl_oracle::CONFIGS`: the plain one, or one with a
/// small correlation table to overflow); its broker sometimes answers an acks=0 Produce, as tansu
/// does (Kafka never does).
pub fn acl(data: &[u8]) {
    use crate::acl_oracle::{self, CONFIGS};
    let mut c = Cursor::new(data);
    let variant = &CONFIGS[usize::from(c.u8()) % CONFIGS.len()];
    let broker = Broker {
        answers_acks0: true,
    };
    let conn = run(&variant.model, data.get(1..).unwrap_or_default(), broker);
    acl_oracle::check(&conn, variant);
}

/// How the modelled broker behaves.
#[derive(Clone, Copy)]
struct Broker {
    /// Whether it may answer a Produce with acks=0 (the input chooses, request by request).
    answers_acks0: bool,
}

/// Kafka's behaviour: an acks=0 Produce is never answered.
const KAFKA: Broker = Broker {
    answers_acks0: false,
};

/// The operations of `data` on a connection under `model`'s configuration.
fn run(model: &'static Model, data: &[u8], broker: Broker) -> Conn {
    thread_local! {
        static CONFIGS: std::cell::RefCell<Vec<(&'static str, Rc<Config>)>> = Default::default();
    }
    let cfg = CONFIGS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, cfg)) = c.iter().find(|(k, _)| *k == model.config) {
            return cfg.clone();
        }
        let cfg = config(model.config);
        c.push((model.config, cfg.clone()));
        cfg
    });
    let mut conn = Conn::new(cfg);
    let mut c = Cursor::new(data);
    let mut corr = 0i32;
    // Forwarded request frames the broker has answered (or passed over).
    let mut answered = 0usize;
    let mut ops = 0;
    let verbose = std::env::var_os("KAFKA_FUZZ_VERBOSE").is_some();
    while !c.is_empty() && ops < MAX_OPS && conn.closed.is_none() {
        ops += 1;
        let tag = c.u8();
        let chunking = Chunking(tag >> 3);
        if verbose {
            eprintln!(
                "op {} (chunking {}) at client {} / broker {} bytes",
                tag & 7,
                tag >> 3,
                conn.orig_req.len(),
                conn.orig_resp.len()
            );
        }
        match tag & 7 {
            0 | 1 => {
                let dir = if tag & 7 == 0 {
                    Dir::Request
                } else {
                    Dir::Response
                };
                let n = usize::from(c.u16());
                conn.feed(dir, c.bytes(n), chunking);
            }
            2 | 3 => {
                let dir = if tag & 7 == 2 {
                    Dir::Request
                } else {
                    Dir::Response
                };
                let n = usize::from(c.u16());
                conn.feed(dir, &frames::frame(c.bytes(n)), chunking);
            }
            4 | 5 => {
                let frame = gen_request(model, &mut c, &mut corr);
                conn.feed(Dir::Request, &frame, chunking);
            }
            _ => {
                let (frame, answers) = gen_response(model, &mut c, &conn, &mut answered, broker);
                conn.produced_for.push((conn.orig_resp.len(), answers));
                conn.feed(Dir::Response, &frame, chunking);
            }
        }
    }
    conn.finish();
    conn
}

fn pick_version(c: &mut Cursor<'_>, api_key: i16) -> i16 {
    let b = c.u8();
    match ApiKey::try_from(api_key) {
        Ok(k) => {
            let r = k.valid_versions();
            match b {
                250..=255 => r.max + 1 + i16::from(b - 250) % 3,
                249 => r.min - 1,
                _ => r.min + i16::from(b) % (r.max - r.min + 1),
            }
        }
        Err(()) => i16::from(b % 4),
    }
}

fn gen_request(model: &Model, c: &mut Cursor<'_>, corr: &mut i32) -> Vec<u8> {
    let api_key = *c.pick(REQUEST_APIS);
    let version = pick_version(c, api_key);
    let client = *c.pick(model.clients);
    *corr = if c.chance(12) {
        c.i32()
    } else {
        corr.wrapping_add(1)
    };
    let pool = NamePool {
        pool: model.logical,
        echo: Vec::new(),
    };
    let body = match gen::request_body(c, &pool, api_key, version) {
        Some(b) => b,
        None => {
            let n = usize::from(c.u8() % 32);
            c.bytes(n).to_vec()
        }
    };
    gen::request_frame(api_key, version, *corr, client, &body)
}

/// What the broker sends next: most often the answer to the next request it received, with the
/// names it was asked about (and others), as a broker would. Also returns the forwarded request
/// frame it answers (`None`: unsolicited), for the correlation oracle.
fn gen_response(
    model: &Model,
    c: &mut Cursor<'_>,
    conn: &Conn,
    answered: &mut usize,
    broker: Broker,
) -> (Vec<u8>, Option<usize>) {
    // Every complete request frame that reached the broker, with its index among them (frames
    // too short for a request header are not counted: no broker answers them).
    let received: Vec<(usize, frames::Req)> = frames::split(&conn.fwd_req)
        .iter()
        .filter_map(frames::request)
        .enumerate()
        .collect();
    skip_unanswered_acks0(c, &received, answered, broker);
    let mode = c.u8() % 8;
    let next = received.get(*answered).map(|(i, r)| (*i, r));
    let (key, version, corr, echo, answers) = match (mode, next) {
        (0..=5, Some((i, r))) => {
            *answered += 1;
            let echo = match (r.api, &r.body) {
                (Some(k), Some(body))
                    if names::treatment(r.api_key, r.version) == Treatment::Rewritten =>
                {
                    names::request_names(k, r.version, body)
                        .map(|f| f.names)
                        .unwrap_or_default()
                }
                _ => Vec::new(),
            };
            match r.api {
                Some(k) => (k, r.version, r.correlation_id, echo, Some(i)),
                None => (ApiKey::ApiVersions, 0, r.correlation_id, echo, Some(i)),
            }
        }
        (6, Some((i, r))) => {
            // A response in another API's layout.
            *answered += 1;
            let api = ApiKey::try_from(*c.pick(REQUEST_APIS)).unwrap_or(ApiKey::Metadata);
            let v = pick_version(c, api as i16);
            (api, v, r.correlation_id, Vec::new(), Some(i))
        }
        _ => {
            // Unsolicited: a correlation id of the input's choosing.
            let api = ApiKey::try_from(*c.pick(REQUEST_APIS)).unwrap_or(ApiKey::Metadata);
            let v = pick_version(c, api as i16);
            (api, v, c.i32(), Vec::new(), None)
        }
    };
    let pool = NamePool {
        pool: model.physical,
        echo,
    };
    let body = match gen::response_body(c, &pool, key, version) {
        Some(b) => b,
        None => {
            let n = usize::from(c.u8() % 32);
            c.bytes(n).to_vec()
        }
    };
    (gen::response_frame(key, version, corr, &body), answers)
}

/// Passes over the acks=0 Produce requests next in line that the broker does not answer: all of
/// them for Kafka (no input read, so the rule targets' inputs keep their meaning); for a broker
/// that may answer them, each one the input says.
fn skip_unanswered_acks0(
    c: &mut Cursor<'_>,
    received: &[(usize, frames::Req)],
    answered: &mut usize,
    broker: Broker,
) {
    while let Some((_, r)) = received.get(*answered) {
        if !r.acks0 || (broker.answers_acks0 && c.chance(128)) {
            return;
        }
        *answered += 1;
    }
}
