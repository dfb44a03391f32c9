//! Driving the sans-io connection the way the wasm host does: chunks in, verdicts applied.

use std::rc::Rc;

use kafka_filter::config::{self, Config};
use kafka_filter::connection::{KafkaConnection, Verdict};
use kafka_filter::metrics::RecordingSink;

/// Which stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to broker.
    Request,
    /// Broker to client.
    Response,
}

/// A parsed configuration (panics on a bad one: the targets' configurations are constants).
pub fn config(json: &str) -> Rc<Config> {
    match config::parse(json.as_bytes()) {
        Ok(c) => Rc::new(c),
        Err(e) => panic!("fuzz target configuration rejected: {e}"),
    }
}

/// What the host forwards for one chunk under `verdict`; `None`: the connection is closed (the
/// chunk is not forwarded). The one place that knows the verdicts.
pub fn apply(verdict: Verdict, chunk: &[u8], out: &mut Vec<u8>) -> Option<()> {
    match verdict {
        Verdict::Continue => out.extend_from_slice(chunk),
        Verdict::Rewrite { prefix_len, bytes } => {
            assert!(
                prefix_len <= chunk.len(),
                "Rewrite prefix_len {prefix_len} beyond the chunk's {} bytes",
                chunk.len()
            );
            out.extend_from_slice(&bytes);
            out.extend_from_slice(&chunk[prefix_len..]);
        }
        Verdict::Close => return None,
    }
    Some(())
}

/// How a piece of stream is cut into chunks.
#[derive(Debug, Clone, Copy)]
pub struct Chunking(pub u8);

impl Chunking {
    /// Everything in one chunk.
    pub const WHOLE: Chunking = Chunking(0);

    /// The chunk sizes for `len` bytes: 0 is one chunk, 1..=15 a fixed size, 16.. sizes that
    /// vary (a small generator seeded by the selector).
    pub fn sizes(self, len: usize) -> Vec<usize> {
        const FIXED: [usize; 16] = [0, 1, 2, 3, 4, 5, 7, 8, 11, 13, 16, 31, 64, 100, 257, 1000];
        let mut out = Vec::new();
        let mut left = len;
        let mut state = u32::from(self.0).wrapping_mul(0x9E37_79B9) | 1;
        while left > 0 {
            let size = match self.0 {
                0 => left,
                s if usize::from(s) < FIXED.len() => FIXED[usize::from(s)],
                _ => {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    // Mostly small chunks, sometimes large ones.
                    match state % 8 {
                        0 => 1 + (state >> 8) as usize % 2000,
                        _ => 1 + (state >> 8) as usize % 12,
                    }
                }
            };
            let size = size.clamp(1, left);
            out.push(size);
            left -= size;
        }
        out
    }
}

/// One connection through the filter, with everything that went in and came out.
pub struct Conn {
    pub conn: KafkaConnection,
    pub sink: RecordingSink,
    /// What the client sent (every chunk handed to the filter, the closing one included).
    pub orig_req: Vec<u8>,
    /// What reached the broker.
    pub fwd_req: Vec<u8>,
    /// What the broker sent.
    pub orig_resp: Vec<u8>,
    /// What reached the client.
    pub fwd_resp: Vec<u8>,
    /// The filter closed the connection.
    pub closed: Option<Dir>,
    /// Bytes of each stream handed in before the chunk the filter closed on.
    pub before_close: (usize, usize),
    /// After each chunk: how many bytes of each stream (client, broker) had been handed in.
    pub timeline: Vec<(usize, usize)>,
    /// After each chunk: how many bytes had reached the broker and the client (when a frame was
    /// forwarded tells what the filter had read by then).
    pub forwarded: Vec<(usize, usize)>,
    /// The broker frames the scenario generated: where each starts in the broker stream, and the
    /// forwarded request frame it answers (index among the complete frames that reached the
    /// broker, those too short for a request header left out); `None`: unsolicited. Raw broker
    /// bytes are not listed.
    pub produced_for: Vec<(usize, Option<usize>)>,
    clock: u64,
}

impl Conn {
    pub fn new(cfg: Rc<Config>) -> Self {
        Conn {
            conn: KafkaConnection::new(1, cfg),
            sink: RecordingSink::default(),
            orig_req: Vec::new(),
            fwd_req: Vec::new(),
            orig_resp: Vec::new(),
            fwd_resp: Vec::new(),
            closed: None,
            before_close: (0, 0),
            timeline: Vec::new(),
            forwarded: Vec::new(),
            produced_for: Vec::new(),
            clock: 0,
        }
    }

    /// Hands `bytes` to the filter in chunks; nothing once the connection is closed.
    pub fn feed(&mut self, dir: Dir, bytes: &[u8], chunking: Chunking) {
        let mut at = 0;
        for size in chunking.sizes(bytes.len()) {
            if self.closed.is_some() {
                return;
            }
            let chunk = &bytes[at..at + size];
            at += size;
            self.chunk(dir, chunk);
        }
    }

    /// Hands one chunk to the filter.
    pub fn chunk(&mut self, dir: Dir, chunk: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        // A clock that moves by a third of a second per chunk: byte counters are flushed.
        self.clock += 333_333_333;
        let now = self.clock;
        let mut src: &[u8] = chunk;
        let (verdict, orig, out) = match dir {
            Dir::Request => (
                self.conn.on_request_data(&mut src, || now, &mut self.sink),
                &mut self.orig_req,
                &mut self.fwd_req,
            ),
            Dir::Response => (
                self.conn.on_response_data(&mut src, || now, &mut self.sink),
                &mut self.orig_resp,
                &mut self.fwd_resp,
            ),
        };
        let before = orig.len();
        orig.extend_from_slice(chunk);
        let closed = apply(verdict, chunk, out).is_none();
        self.timeline
            .push((self.orig_req.len(), self.orig_resp.len()));
        self.forwarded
            .push((self.fwd_req.len(), self.fwd_resp.len()));
        if closed {
            self.closed = Some(dir);
            self.before_close = match dir {
                Dir::Request => (before, self.orig_resp.len()),
                Dir::Response => (self.orig_req.len(), before),
            };
        }
    }

    /// How many client bytes had been handed in when the broker stream first reached `resp_len`
    /// bytes.
    pub fn requests_when(&self, resp_len: usize) -> usize {
        self.timeline
            .iter()
            .find(|(_, resp)| *resp >= resp_len)
            .map_or(self.orig_req.len(), |(req, _)| *req)
    }

    /// The connection ends (the host reports the byte counters).
    pub fn finish(&mut self) {
        self.conn.end(&mut self.sink);
    }
}
