//! Correlation integrity on a connection with stages configured (ACLs are stages), checked on the
//! four streams with the fuzz crate's own framing and kafka-protocol, not with the filter's table:
//!
//! * a request whose correlation id equals that of a request still waiting at the broker
//!   (including an acks=0 Produce, which a broker may still answer) never reaches the broker: the
//!   connection closes first;
//! * no request reaches the broker while `max_inflight_requests` others are waiting there;
//! * every response frame the client receives answers its oldest request still waiting (the
//!   client's view: Kafka answers in order, and an acks=0 Produce expects nothing), and comes from
//!   a broker frame made for that very request (the scenario records which request each
//!   generated broker frame answers) or is the filter's error response built from it; so neither
//!   the answer to an acks=0 Produce nor one request's answer in another's place reaches the
//!   client;
//! * it is filtered for that request: a Metadata answer lists a denied topic only as the error
//!   entry Kafka writes, a ListGroups answer never shows a denied group.
//!
//! The client may always get less (the connection closing); these checks only judge what did
//! reach it. Where the streams cannot tell (raw broker bytes, an unsolicited frame), the check
//! is left to what can be told: the order and the filtering.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ListGroupsResponse, MetadataResponse};
use kafka_protocol::protocol::Decodable;

use crate::acl_oracle::{DENIED_GROUP, DENIED_TOPIC, INTRUDER};
use crate::drive::Conn;
use crate::frames::{self, Req};
use crate::oracle::frames_at;

/// TOPIC_AUTHORIZATION_FAILED: what Kafka writes for a topic the client may not describe.
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

macro_rules! violation {
    ($($t:tt)*) => {
        panic!("ORACLE: {}", format!($($t)*))
    };
}

/// A request frame in a stream: where its size field starts, its length, what it says.
struct Frame {
    at: usize,
    len: usize,
    req: Req,
}

impl Frame {
    fn end(&self) -> usize {
        self.at + 4 + self.len
    }

    fn describe(&self) -> String {
        let r = &self.req;
        let acks0 = if r.acks0 { ", acks=0" } else { "" };
        format!(
            "api {} v{} corr {} client {:?}{acks0}",
            r.api_key, r.version, r.correlation_id, r.client_id
        )
    }
}

/// A response frame the broker sent: where it starts, its bytes, and the forwarded request it
/// was made for (`None`: unsolicited, or raw bytes: unknown).
struct Answer {
    at: usize,
    bytes: Bytes,
    made_for: Option<usize>,
}

impl Answer {
    /// Where the filter has read its correlation id.
    fn header_end(&self) -> usize {
        self.at + 4 + 4
    }

    fn corr(&self) -> Option<i32> {
        frames::response_correlation_id(&self.bytes)
    }
}

/// The streams, read once.
struct Streams<'c> {
    c: &'c Conn,
    /// What the client sent, the readable start of an incomplete last frame included (the
    /// filter reads a request's header before the frame is whole).
    client: Vec<Frame>,
    /// The complete request frames that reached the broker, and the client frame each one is
    /// (or stands in for).
    forwarded: Vec<(Frame, Option<usize>)>,
    /// What the broker sent.
    broker: Vec<Answer>,
}

pub fn check(c: &Conn, max_inflight: usize) {
    let s = Streams::read(c);
    check_responses(&s);
    check_duplicates(&s);
    check_overflow(&s, max_inflight);
}

impl<'c> Streams<'c> {
    fn read(c: &'c Conn) -> Self {
        let client = request_frames(frames_at(&c.orig_req));
        let mut complete = frames_at(&c.fwd_req);
        if frames::split(&c.fwd_req).len() < complete.len() {
            complete.pop();
        }
        let forwarded = origins(&client, request_frames(complete));
        let broker = frames_at(&c.orig_resp)
            .into_iter()
            .map(|(at, bytes)| Answer {
                at,
                made_for: made_for(c, at, bytes.len()),
                bytes,
            })
            .collect();
        let mut s = Streams {
            c,
            client,
            forwarded,
            broker,
        };
        s.forget_second_answers();
        s
    }

    /// The scenario's broker answers the requests it received in order, but does not know what
    /// raw broker bytes answered: a generated frame for a request that an earlier frame with its
    /// correlation id may already have answered is a second answer, as unsolicited as any (no
    /// filter can tell it from the next request's answer).
    fn forget_second_answers(&mut self) {
        for b in 0..self.broker.len() {
            let Some(i) = self.broker[b].made_for else {
                continue;
            };
            let Some((f, _)) = self.forwarded.get(i) else {
                continue;
            };
            let corr = f.req.correlation_id;
            let from = self.broker_bytes_after(self.chunk_forwarding(f.at + 1));
            let answered_before = self.broker[..b]
                .iter()
                .any(|e| e.header_end() > from && e.corr().is_none_or(|c| c == corr));
            if answered_before {
                self.broker[b].made_for = None;
            }
        }
    }

    /// The first chunk after which the broker had received `n` bytes.
    fn chunk_forwarding(&self, n: usize) -> usize {
        first_chunk(&self.c.forwarded, |(req, _)| req >= n)
    }

    /// The first chunk after which the client had received `n` bytes.
    fn chunk_delivering(&self, n: usize) -> usize {
        first_chunk(&self.c.forwarded, |(_, resp)| resp >= n)
    }

    /// Broker bytes handed to the filter up to and including chunk `t`.
    fn broker_bytes_after(&self, t: usize) -> usize {
        self.c
            .timeline
            .get(t)
            .map_or(self.c.orig_resp.len(), |(_, r)| *r)
    }

    /// Client bytes handed to the filter up to and including chunk `t`.
    fn client_bytes_after(&self, t: usize) -> usize {
        self.c
            .timeline
            .get(t)
            .map_or(self.c.orig_req.len(), |(r, _)| *r)
    }

    /// Broker bytes handed in before chunk `t`.
    fn broker_bytes_before(&self, t: usize) -> usize {
        t.checked_sub(1).map_or(0, |p| self.broker_bytes_after(p))
    }

    /// The client frame a forwarded request is (or stands in for), described.
    fn origin_of(&self, i: usize) -> String {
        match self.forwarded.get(i).and_then(|(_, o)| *o) {
            Some(o) => format!("client request #{o} ({})", self.client[o].describe()),
            None => "no request of the client".to_string(),
        }
    }
}

/// The first chunk whose record satisfies `done` (the last one if none does).
fn first_chunk(records: &[(usize, usize)], done: impl Fn((usize, usize)) -> bool) -> usize {
    records
        .iter()
        .position(|r| done(*r))
        .unwrap_or(records.len().saturating_sub(1))
}

fn request_frames(framed: Vec<(usize, Bytes)>) -> Vec<Frame> {
    framed
        .into_iter()
        .filter_map(|(at, f)| {
            Some(Frame {
                at,
                len: f.len(),
                req: frames::request(&f)?,
            })
        })
        .collect()
}

/// The ApiVersions v0 request (null client id) that stands in for a refused one.
fn is_stand_in(r: &Req) -> bool {
    r.api_key == 18 && r.version == 0 && r.client_id.is_none()
}

/// Which client frame each forwarded one is: the next, in the client's order, with its
/// correlation id, API, version and acks=0 or not (a stand-in: any that expects an answer). The
/// filter may drop a client frame (an acks=0 Produce it denies): the next with the same id can
/// be another Produce.
fn origins(client: &[Frame], forwarded: Vec<Frame>) -> Vec<(Frame, Option<usize>)> {
    let mut next = 0;
    forwarded
        .into_iter()
        .map(|f| {
            let origin = client[next.min(client.len())..]
                .iter()
                .position(|o| {
                    o.req.correlation_id == f.req.correlation_id
                        && (same_request(&o.req, &f.req) || (is_stand_in(&f.req) && !o.req.acks0))
                })
                .map(|p| next + p);
            if let Some(o) = origin {
                next = o + 1;
            }
            (f, origin)
        })
        .collect()
}

/// Whether a forwarded request can be this client request (rewriting keeps these).
fn same_request(client: &Req, forwarded: &Req) -> bool {
    client.api_key == forwarded.api_key
        && client.version == forwarded.version
        && client.acks0 == forwarded.acks0
}

/// The forwarded request the scenario made the broker frame at `at` for, if it generated one
/// there (raw broker bytes can frame differently: unknown).
fn made_for(c: &Conn, at: usize, len: usize) -> Option<usize> {
    let (i, (_, answers)) = c
        .produced_for
        .iter()
        .enumerate()
        .find(|(_, (start, _))| *start == at)?;
    // The next generated frame (or raw bytes) must start where this one ends.
    let ends = c
        .produced_for
        .get(i + 1)
        .map_or(true, |(next, _)| *next >= at + 4 + len);
    if ends {
        *answers
    } else {
        None
    }
}

/// Duplicate correlation ids: a request must not reach the broker while an earlier one with its
/// id may still be answered there.
fn check_duplicates(s: &Streams) {
    for (k, (f, _)) in s.forwarded.iter().enumerate() {
        // The broker bytes the filter had when the frame was whole at the broker: the latest
        // moment, so that every answer that may have ended the earlier request's wait counts.
        let until = s.broker_bytes_after(s.chunk_forwarding(f.end()));
        for (r, (earlier, _)) in s.forwarded[..k].iter().enumerate() {
            if earlier.req.correlation_id != f.req.correlation_id {
                continue;
            }
            let from = s.broker_bytes_after(s.chunk_forwarding(earlier.at + 1));
            if !answered_between(s, &earlier.req, from, until) {
                violation!(
                    "request #{k} ({}) reached the broker while request #{r} ({}) with its \
                     correlation id was still waiting for an answer: a duplicate in-flight id must \
                     close the connection before the request is forwarded",
                    f.describe(),
                    earlier.describe()
                );
            }
        }
    }
}

/// Whether a broker frame whose header the filter read between `from` and `until` broker bytes
/// may have ended `r`'s wait: one with its correlation id (or too short to have one); for an
/// acks=0 Produce, any (a later request's answer ends it).
fn answered_between(s: &Streams, r: &Req, from: usize, until: usize) -> bool {
    s.broker.iter().any(|b| {
        let read = b.header_end() > from && b.header_end() <= until;
        read && (r.acks0 || b.corr().is_none_or(|c| c == r.correlation_id))
    })
}

/// Overflow: no request reaches the broker while `max` others are waiting there. Waiting at
/// least: the requests forwarded so far that expect an answer, less every broker frame whose
/// header had arrived (each answers at most one).
fn check_overflow(s: &Streams, max: usize) {
    let mut expecting = 0usize;
    for (k, (f, _)) in s.forwarded.iter().enumerate() {
        if f.req.acks0 {
            continue;
        }
        expecting += 1;
        let until = s.broker_bytes_after(s.chunk_forwarding(f.end()));
        let answers = s.broker.iter().filter(|b| b.header_end() <= until).count();
        let waiting = expecting.saturating_sub(answers);
        if waiting > max {
            violation!(
                "request #{k} ({}) reached the broker as at least the {waiting}th request waiting \
                 for an answer (max_inflight_requests {max}): an overflow must close the \
                 connection before it is forwarded",
                f.describe()
            );
        }
    }
}

/// Every response the client received answers its oldest waiting request, was made by the
/// broker for that request, and is filtered for it.
fn check_responses(s: &Streams) {
    let c = s.c;
    // The client's requests that expect an answer, oldest first; answered ones are taken.
    let mut waiting: Vec<usize> = (0..s.client.len())
        .filter(|o| !s.client[*o].req.acks0)
        .collect();
    let mut next_broker = 0usize;
    for (j, (at, f)) in frames_at(&c.fwd_resp)
        .into_iter()
        .take(frames::split(&c.fwd_resp).len())
        .enumerate()
    {
        let Some(corr) = frames::response_correlation_id(&f) else {
            violation!(
                "response #{j} of {} bytes (no correlation id) reached the client",
                f.len()
            );
        };
        // The chunks that delivered it, and what the client had sent by its last one.
        let first = s.chunk_delivering(at + 1);
        let last = s.chunk_delivering(at + 4 + f.len());
        let sent = s.client_bytes_after(last);
        let Some(q) = waiting
            .first()
            .copied()
            .filter(|o| s.client[*o].at + 4 + 8 <= sent)
        else {
            violation!(
                "response #{j} (corr {corr}) reached the client, which had no request waiting \
                 for an answer"
            );
        };
        let request = &s.client[q];
        if request.req.correlation_id != corr {
            violation!(
                "response #{j} (corr {corr}) reached the client, whose oldest waiting request is \
                 #{q} ({}): a response that is not its answer must close the connection",
                request.describe()
            );
        }
        waiting.remove(0);
        let lo = s.broker_bytes_before(first);
        let hi = s.broker_bytes_after(last);
        next_broker = source(s, j, corr, q, lo, hi, next_broker) + 1;
        check_filtered(&f, request, j);
    }
}

/// The broker frame response #j came from (index into `s.broker`): one from `from` on with its
/// correlation id, handed in while it was delivered (or, if the filter held it, before), made for
/// `q` or for an unknown request. Panics if every candidate was made for another request.
fn source(s: &Streams, j: usize, corr: i32, q: usize, lo: usize, hi: usize, from: usize) -> usize {
    let same_corr = |b: &&Answer| b.corr() == Some(corr) && b.at < hi;
    let candidates: Vec<(usize, &Answer)> = s
        .broker
        .iter()
        .enumerate()
        .skip(from)
        .filter(|(_, b)| same_corr(b))
        .collect();
    // Those overlapping the delivering chunks, if any: the filter forwards a frame as it reads it
    // or once whole.
    let overlapping: Vec<(usize, &Answer)> = candidates
        .iter()
        .filter(|(_, b)| b.at + 4 + b.bytes.len() > lo)
        .copied()
        .collect();
    let candidates = if overlapping.is_empty() {
        candidates
    } else {
        overlapping
    };
    if candidates.is_empty() {
        violation!("response #{j} (corr {corr}) reached the client, but the broker sent none");
    }
    let for_q = |b: &Answer| match b.made_for {
        None => true,
        Some(i) => s.forwarded.get(i).and_then(|(_, o)| *o) == Some(q),
    };
    if let Some((i, _)) = candidates.iter().find(|(_, b)| for_q(b)) {
        return *i;
    }
    let (i, b) = candidates[0];
    let made_for = b.made_for.unwrap_or_default();
    violation!(
        "response #{j} (corr {corr}) reached the client as the answer to its request #{q} ({}), \
         but the broker made it (broker frame #{i}) for forwarded request #{made_for}, {}: an \
         answer to another request must never reach the client",
        s.client[q].describe(),
        s.origin_of(made_for)
    );
}

/// Names: what the client may see of its request's answer. Only decodable answers are judged
/// (an error response the filter built, or bytes it could not read, carry no listing).
fn check_filtered(f: &Bytes, q: &Frame, j: usize) {
    let (Some(key), v) = (q.req.api, q.req.version) else {
        return;
    };
    let Some((_, mut body)) = frames::response_body(f, key, v) else {
        return;
    };
    let client = q.req.client_id.as_deref();
    match key {
        ApiKey::Metadata => {
            let Ok(m) = MetadataResponse::decode(&mut body, v) else {
                return;
            };
            for t in &m.topics {
                let Some(name) = t.name.as_ref().map(|n| n.as_str()) else {
                    continue;
                };
                let denied = name == DENIED_TOPIC || client == Some(INTRUDER);
                let error_entry =
                    t.error_code == TOPIC_AUTHORIZATION_FAILED && t.partitions.is_empty();
                if denied && !error_entry {
                    violation!(
                        "Metadata response #{j} to {} lists the denied topic `{name}` (error \
                         {}, {} partitions)",
                        q.describe(),
                        t.error_code,
                        t.partitions.len()
                    );
                }
            }
        }
        ApiKey::ListGroups => {
            let Ok(l) = ListGroupsResponse::decode(&mut body, v) else {
                return;
            };
            if let Some(g) = l
                .groups
                .iter()
                .find(|g| g.group_id.as_str() == DENIED_GROUP)
            {
                violation!(
                    "ListGroups response #{j} to {} shows the denied group `{}`",
                    q.describe(),
                    g.group_id.as_str()
                );
            }
        }
        _ => {}
    }
}
