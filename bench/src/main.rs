//! `kafka-load`: the load generator behind `make bench`.
//!
//! It speaks just enough Kafka to load a broker (or a proxy in front of one) without being the
//! bottleneck itself:
//!
//! - every request is encoded once with `kafka-protocol` (record batches with
//!   `RecordBatchEncoder`, no compression); per send only the 4-byte correlation id is patched;
//! - each connection keeps `--inflight` requests in flight (Kafka answers in request order on a
//!   connection), one thread per connection, blocking std::net I/O, responses read by frame size;
//! - every response is decoded and its error codes checked (a misconfigured proxy must not look
//!   fast): a non-zero error code, a wrong correlation id or an empty Fetch stops the run with an
//!   error in the report;
//! - it sends everything to the address it was given and ignores the broker list in Metadata,
//!   so one broker serves every proxy configuration.
//!
//! Commands (all print one JSON object on the last line of stdout):
//!
//! ```text
//! kafka-load versions      --addr A
//! kafka-load create-topic  --addr A --topic T --partitions P
//! kafka-load run           --addr A --workload produce|fetch|small --topic T --partitions P
//!                          [--connections C] [--inflight K] [--warmup S] [--seconds S]
//!                          [--requests N (per connection, instead of --seconds)]
//!                          [--record-bytes B] [--records R] [--fetch-partition-bytes B]
//!                          [--rate R (requests/s, all connections together: fixed-rate mode)]
//!                          [--samples-file F (fixed-rate mode: every latency, in ns, one a line)]
//! kafka-load hold          --addr A --connections N
//! ```
//!
//! Fixed-rate mode (`--rate`): instead of keeping K requests in flight, each connection sends on
//! a fixed schedule, one request in flight: connection c of C sends at `t0 + (c / C + k) * C / R`
//! for k = 0, 1, ... (the connections' schedules are staggered evenly). The schedule is open-loop:
//! it never slips. When a response arrives after the next send was due, that send goes out at once
//! and its latency is counted from its scheduled time, not from when it could go out (so a stall
//! is charged to every request it delayed: no coordinated omission); when the connection was idle
//! at the scheduled time, latency is counted from the actual send (the generator's own timer
//! wake-up lateness is not the system's latency; it is reported apart, as `wake_*`). Latencies are
//! kept exact (nanoseconds, every sample) and reported as p50 / p99 / p99.9 / mean / max.
//!
//! `run` prints `START` when the measured window opens and `END` when it closes, so the caller can
//! sample the CPU counters of the processes under test exactly around the window. `hold` opens N
//! connections, completes one ApiVersions exchange on each, prints `READY` and keeps them open
//! until its stdin is closed.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

const PRODUCE_VERSION: i16 = 9;
/// The last Fetch version that names topics (v13+ uses topic ids).
const FETCH_VERSION: i16 = 12;
const METADATA_VERSION: i16 = 12;
const API_VERSIONS_VERSION: i16 = 3;
const CREATE_TOPICS_VERSION: i16 = 5;
const CLIENT_ID: &str = "kafka-load";
/// Kafka's TOPIC_ALREADY_EXISTS.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Where the correlation id sits in a request frame: size (4), api key (2), api version (2).
const CORRELATION_AT: usize = 8;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// A pre-encoded request frame (size prefix included) and how to check its response.
#[derive(Clone)]
struct Template {
    frame: Vec<u8>,
    api: ApiKey,
    version: i16,
    /// Records carried by the request (Produce); counted when the response is clean.
    records: u64,
}

fn encode_request<T: Encodable>(api: ApiKey, version: i16, body: &T) -> Result<Template> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(0)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(&mut buf, api.request_header_version(version))?;
    body.encode(&mut buf, version)?;
    let size = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(Template {
        frame: buf.to_vec(),
        api,
        version,
        records: 0,
    })
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// One uncompressed v2 record batch of `count` records of `value_bytes` each.
fn record_batch(count: usize, value_bytes: usize) -> Result<Bytes> {
    let value = Bytes::from(vec![b'x'; value_bytes]);
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence must be constant for the encoder to keep one batch; the batch's
            // base sequence is then -1 (no idempotence).
            sequence: i as i32 - 1,
            timestamp: now,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    Ok(buf.freeze())
}

fn produce_request(topic: &str, partition: i32, batch: Bytes, records: u64) -> Result<Template> {
    let body = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let mut t = encode_request(ApiKey::Produce, PRODUCE_VERSION, &body)?;
    t.records = records;
    Ok(t)
}

fn fetch_request(topic: &str, partitions: i32, partition_bytes: i32) -> Result<Template> {
    let body = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        // The backlog is there, so min_bytes=1 answers at once; tansu 0.6 answers max_wait_ms=0
        // with no data at all.
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(64 << 20)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(
                (0..partitions)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(0)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(partition_bytes)
                    })
                    .collect(),
            )]);
    encode_request(ApiKey::Fetch, FETCH_VERSION, &body)
}

fn metadata_request(topic: &str) -> Result<Template> {
    let body = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    encode_request(ApiKey::Metadata, METADATA_VERSION, &body)
}

fn api_versions_request() -> Result<Template> {
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    encode_request(ApiKey::ApiVersions, API_VERSIONS_VERSION, &body)
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    let s = b.get(at..at + 4)?;
    Some(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Records in the complete v2 batches of a Fetch partition's record set (the count sits at a
/// fixed offset of the batch header; a trailing partial batch is ignored, as clients do).
fn count_records(set: &[u8]) -> u64 {
    let mut at = 0usize;
    let mut n = 0u64;
    while let (Some(len), Some(count)) = (be_i32(set, at + 8), be_i32(set, at + 57)) {
        let Ok(len) = usize::try_from(len) else { break };
        let end = at + 12 + len;
        if end > set.len() {
            break;
        }
        n += u64::try_from(count).unwrap_or(0);
        at = end;
    }
    n
}

/// Decodes a response body and fails on any error code. Returns the records it carried (Fetch).
fn check_response(api: ApiKey, version: i16, mut body: Bytes) -> Result<u64> {
    match api {
        ApiKey::Produce => {
            let r = ProduceResponse::decode(&mut body, version)?;
            for t in &r.responses {
                for p in &t.partition_responses {
                    if p.error_code != 0 {
                        bail!(
                            "Produce error {} on partition {} ({:?})",
                            p.error_code,
                            p.index,
                            p.error_message
                        );
                    }
                }
            }
            Ok(0)
        }
        ApiKey::Fetch => {
            let r = FetchResponse::decode(&mut body, version)?;
            if r.error_code != 0 {
                bail!("Fetch error {}", r.error_code);
            }
            let mut n = 0;
            for t in &r.responses {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        bail!(
                            "Fetch error {} on partition {}",
                            p.error_code,
                            p.partition_index
                        );
                    }
                    n += p.records.as_deref().map_or(0, count_records);
                }
            }
            if n == 0 {
                bail!("Fetch returned no records (no backlog?)");
            }
            Ok(n)
        }
        ApiKey::Metadata => {
            let r = MetadataResponse::decode(&mut body, version)?;
            if r.error_code != 0 {
                bail!("Metadata error {}", r.error_code);
            }
            for t in &r.topics {
                if t.error_code != 0 {
                    bail!("Metadata error {} for topic {:?}", t.error_code, t.name);
                }
            }
            Ok(0)
        }
        ApiKey::ApiVersions => {
            let r = ApiVersionsResponse::decode(&mut body, version)?;
            if r.error_code != 0 {
                bail!("ApiVersions error {}", r.error_code);
            }
            Ok(0)
        }
        other => bail!("no response check for {other:?}"),
    }
}

/// One connection with its requests in flight.
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    next_correlation: i32,
}

impl Conn {
    fn open(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::with_capacity(256 * 1024, stream),
            next_correlation: 0,
        })
    }

    /// Sends a template with the next correlation id; returns that id.
    fn send(&mut self, t: &mut Template) -> Result<i32> {
        let id = self.next_correlation;
        self.next_correlation = id.wrapping_add(1);
        t.frame[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&id.to_be_bytes());
        self.writer.write_all(&t.frame)?;
        Ok(id)
    }

    /// Reads one response frame; returns its total size and its body after the header.
    fn receive(&mut self, t: &Template, correlation: i32) -> Result<(usize, Bytes)> {
        let mut size = [0u8; 4];
        self.reader.read_exact(&mut size)?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .map_err(|_| anyhow!("negative response size"))?;
        // read_to_end fills the spare capacity without zeroing it first, and a large frame goes
        // straight from the socket into it (BufReader bypasses its buffer).
        let mut frame = Vec::with_capacity(size);
        (&mut self.reader)
            .take(size as u64)
            .read_to_end(&mut frame)?;
        if frame.len() != size {
            bail!("connection closed in the middle of a response");
        }
        let mut body = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut body, t.api.response_header_version(t.version))?;
        if header.correlation_id != correlation {
            bail!(
                "response correlation id {} where {} was expected",
                header.correlation_id,
                correlation
            );
        }
        Ok((size + 4, body))
    }

    /// One request, one response, checked.
    fn round_trip(&mut self, t: &mut Template) -> Result<Bytes> {
        let id = self.send(t)?;
        let (_, body) = self.receive(t, id)?;
        Ok(body)
    }
}

#[derive(Default)]
struct Stats {
    requests: u64,
    responses: u64,
    records: u64,
    bytes_out: u64,
    bytes_in: u64,
    latencies_us: Vec<u32>,
    /// Fixed-rate mode: every latency in ns (see the module docs for where it is counted from).
    latencies_ns: Vec<u64>,
    /// Fixed-rate mode: sends that went out late because the previous response was late.
    behind: u64,
    /// Fixed-rate mode: how late the generator's timer woke up for sends that were not behind, ns.
    wake_ns: Vec<u64>,
    error: Option<String>,
}

struct Load {
    addr: String,
    templates: Vec<Template>,
    inflight: usize,
    max_requests: Option<u64>,
}

fn drive(load: &mut Load, phase: &AtomicU8, stats: &mut Stats) -> Result<()> {
    let mut conn = Conn::open(&load.addr)?;
    let mut pending: VecDeque<(i32, usize, Instant)> = VecDeque::with_capacity(load.inflight);
    let mut sent = 0u64;
    let mut next = 0usize;
    loop {
        let now_phase = phase.load(Ordering::Relaxed);
        while pending.len() < load.inflight
            && now_phase != STOP
            && load.max_requests.is_none_or(|m| sent < m)
        {
            let idx = next;
            next = (next + 1) % load.templates.len();
            let t = &mut load.templates[idx];
            let at = Instant::now();
            let id = conn.send(t)?;
            if now_phase == MEASURE {
                stats.requests += 1;
                stats.bytes_out += t.frame.len() as u64;
            }
            pending.push_back((id, idx, at));
            sent += 1;
        }
        let Some((id, idx, at)) = pending.pop_front() else {
            return Ok(());
        };
        let t = &load.templates[idx];
        let (size, body) = conn.receive(t, id)?;
        let elapsed = at.elapsed();
        let fetched = check_response(t.api, t.version, body)?;
        if phase.load(Ordering::Relaxed) == MEASURE {
            stats.responses += 1;
            stats.records += t.records + fetched;
            stats.bytes_in += size as u64;
            stats
                .latencies_us
                .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
        }
    }
}

/// The schedule of one connection in fixed-rate mode.
struct Schedule {
    /// When this connection's first request is due.
    first: Instant,
    /// Time between two requests of this connection.
    interval: Duration,
}

/// Fixed-rate mode: one request in flight, sent on `schedule` (open-loop, see the module docs).
fn drive_rate(
    load: &mut Load,
    schedule: &Schedule,
    phase: &AtomicU8,
    stats: &mut Stats,
) -> Result<()> {
    let mut conn = Conn::open(&load.addr)?;
    let mut due = schedule.first;
    let mut next = 0usize;
    // When the previous response arrived; a send due before it is behind.
    let mut prev_done = Instant::now();
    loop {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let now_phase = phase.load(Ordering::Relaxed);
        if now_phase == STOP {
            return Ok(());
        }
        let idx = next;
        next = (next + 1) % load.templates.len();
        let t = &mut load.templates[idx];
        let sent_at = Instant::now();
        let id = conn.send(t)?;
        let behind = prev_done > due;
        // Behind: the clock started when the request was due. On time: when it went out.
        let start = if behind { due } else { sent_at };
        let t = &load.templates[idx];
        let (size, body) = conn.receive(t, id)?;
        let done = Instant::now();
        check_response(t.api, t.version, body)?;
        if now_phase == MEASURE && phase.load(Ordering::Relaxed) == MEASURE {
            let lat = done.duration_since(start);
            stats.requests += 1;
            stats.bytes_out += t.frame.len() as u64;
            stats.responses += 1;
            stats.records += t.records;
            stats.bytes_in += size as u64;
            stats
                .latencies_ns
                .push(u64::try_from(lat.as_nanos()).unwrap_or(u64::MAX));
            if behind {
                stats.behind += 1;
            } else {
                stats.wake_ns.push(
                    u64::try_from(sent_at.saturating_duration_since(due).as_nanos())
                        .unwrap_or(u64::MAX),
                );
            }
        }
        prev_done = done;
        due += schedule.interval;
    }
}

/// Nearest-rank percentile (`per_mille` / 1000) of sorted samples.
fn rank<T: Copy + Default>(sorted: &[T], per_mille: usize) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let r = (sorted.len() * per_mille).div_ceil(1000).max(1);
    sorted[r.min(sorted.len()) - 1]
}

fn percentile(sorted: &[u32], p: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| anyhow!("expected --option, got {k}"))?;
            let v = it.next().ok_or_else(|| anyhow!("--{key} needs a value"))?;
            map.insert(key.to_owned(), v.clone());
        }
        Ok(Self(map))
    }

    fn str(&self, key: &str) -> Result<String> {
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| anyhow!("missing --{key}"))
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| anyhow!("bad --{key}: {v}")),
        }
    }

    fn float(&self, key: &str, default: f64) -> Result<f64> {
        self.num(key, default)
    }
}

fn cmd_run(args: &Args) -> Result<()> {
    let addr = args.str("addr")?;
    let workload = args.str("workload")?;
    let topic = args.str("topic")?;
    let partitions: i32 = args.num("partitions", 1)?;
    let connections: usize = args.num("connections", 1)?;
    let inflight: usize = args.num("inflight", 1)?;
    let warmup = args.float("warmup", 0.0)?;
    let seconds = args.float("seconds", 3.0)?;
    let max_requests: Option<u64> = args.0.get("requests").map(|v| v.parse()).transpose()?;
    let record_bytes: usize = args.num("record-bytes", 1024)?;
    let records: usize = args.num("records", 16)?;
    let fetch_partition_bytes: i32 = args.num("fetch-partition-bytes", 1 << 20)?;
    let rate: Option<f64> = args.0.get("rate").map(|v| v.parse()).transpose()?;
    let samples_file = args.0.get("samples-file").cloned();
    if let Some(r) = rate {
        if !r.is_finite() || r <= 0.0 || max_requests.is_some() {
            bail!("--rate needs a positive rate and --seconds (not --requests)");
        }
    }

    // One batch shared by all connections; each connection writes to its own partition.
    let batch = if workload == "produce" {
        Some(record_batch(records, record_bytes)?)
    } else {
        None
    };
    let mut loads = Vec::with_capacity(connections);
    for c in 0..connections {
        let templates = match workload.as_str() {
            "produce" => vec![produce_request(
                &topic,
                i32::try_from(c)? % partitions.max(1),
                batch.clone().unwrap_or_default(),
                records as u64,
            )?],
            "fetch" => vec![fetch_request(&topic, partitions, fetch_partition_bytes)?],
            "small" => vec![metadata_request(&topic)?, api_versions_request()?],
            other => bail!("unknown workload {other}"),
        };
        loads.push(Load {
            addr: addr.clone(),
            templates,
            inflight: inflight.max(1),
            max_requests,
        });
    }

    let phase = Arc::new(AtomicU8::new(if warmup > 0.0 { WARMUP } else { MEASURE }));
    // Fixed-rate mode: the connections' schedules, staggered evenly over one interval; the first
    // request is due once every thread has had time to connect.
    if rate.is_some() {
        // The default timer slack (50 us) would make every sleep overshoot by up to that much;
        // 1 ns is what a fixed schedule wants. The file is per process (its main thread, this
        // one) and threads inherit the slack of the thread that spawns them. Best effort: a
        // kernel without the file keeps the default (the lateness is reported as `wake_*`).
        let _ = std::fs::write("/proc/self/timerslack_ns", "1");
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
    let threads: Vec<_> = loads
        .into_iter()
        .enumerate()
        .map(|(c, mut load)| {
            let phase = Arc::clone(&phase);
            let schedule = interval.map(|interval| Schedule {
                first: t0 + interval.mul_f64(c as f64 / connections as f64),
                interval,
            });
            std::thread::spawn(move || {
                let mut stats = Stats::default();
                let result = match &schedule {
                    Some(schedule) => drive_rate(&mut load, schedule, &phase, &mut stats),
                    None => drive(&mut load, &phase, &mut stats),
                };
                if let Err(e) = result {
                    stats.error = Some(format!("{e:#}"));
                    // Stop the others: a broken run must not be measured.
                    phase.store(STOP, Ordering::Relaxed);
                }
                stats
            })
        })
        .collect();

    let mut out = std::io::stdout();
    let started;
    let elapsed;
    if max_requests.is_some() {
        started = Instant::now();
        let stats: Vec<Stats> = threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect();
        elapsed = started.elapsed();
        return report(&mut out, stats, elapsed, connections, inflight);
    }
    std::thread::sleep(Duration::from_secs_f64(warmup));
    // Fails only if a connection already failed (STOP): then the report carries its error.
    let _ = phase.compare_exchange(WARMUP, MEASURE, Ordering::Relaxed, Ordering::Relaxed);
    started = Instant::now();
    writeln!(out, "START")?;
    out.flush()?;
    let deadline = started + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline && phase.load(Ordering::Relaxed) != STOP {
        std::thread::sleep(Duration::from_millis(5).min(deadline - Instant::now()));
    }
    phase.store(STOP, Ordering::Relaxed);
    elapsed = started.elapsed();
    writeln!(out, "END")?;
    out.flush()?;
    let stats: Vec<Stats> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    if let Some(rate) = rate {
        return report_rate(&mut out, stats, elapsed, connections, rate, samples_file);
    }
    report(&mut out, stats, elapsed, connections, inflight)
}

/// The report of a fixed-rate run: the usual counts, the latency distribution (exact, from every
/// sample) and, if asked, every sample in ns into `samples_file`, one a line.
fn report_rate(
    out: &mut impl Write,
    stats: Vec<Stats>,
    elapsed: Duration,
    connections: usize,
    rate: f64,
    samples_file: Option<String>,
) -> Result<()> {
    let mut total = Stats::default();
    let mut errors = Vec::new();
    for s in stats {
        total.requests += s.requests;
        total.responses += s.responses;
        total.records += s.records;
        total.bytes_out += s.bytes_out;
        total.bytes_in += s.bytes_in;
        total.latencies_ns.extend(s.latencies_ns);
        total.wake_ns.extend(s.wake_ns);
        total.behind += s.behind;
        errors.extend(s.error);
    }
    let lat = &mut total.latencies_ns;
    lat.sort_unstable();
    total.wake_ns.sort_unstable();
    if let Some(path) = samples_file {
        let mut f = BufWriter::new(File::create(&path).with_context(|| format!("create {path}"))?);
        for v in lat.iter() {
            writeln!(f, "{v}")?;
        }
        f.flush()?;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&v| v as f64).sum::<f64>() / lat.len() as f64
    };
    writeln!(
        out,
        "{{\"seconds\": {:.6}, \"connections\": {}, \"inflight\": 1, \"rate\": {}, \
         \"achieved_rate\": {:.1}, \"requests\": {}, \"responses\": {}, \"records\": {}, \
         \"bytes_out\": {}, \"bytes_in\": {}, \"samples\": {}, \"p50_us\": {:.1}, \
         \"p99_us\": {:.1}, \"p999_us\": {:.1}, \"mean_us\": {:.1}, \"max_us\": {:.1}, \
         \"behind\": {}, \"wake_p50_us\": {:.1}, \"wake_p99_us\": {:.1}, \"wake_max_us\": {:.1}, \
         \"errors\": {}, \"error\": {}}}",
        elapsed.as_secs_f64(),
        connections,
        rate,
        total.responses as f64 / elapsed.as_secs_f64().max(1e-9),
        total.requests,
        total.responses,
        total.records,
        total.bytes_out,
        total.bytes_in,
        lat.len(),
        us(rank(lat, 500)),
        us(rank(lat, 990)),
        us(rank(lat, 999)),
        mean / 1000.0,
        us(lat.last().copied().unwrap_or(0)),
        total.behind,
        us(rank(&total.wake_ns, 500)),
        us(rank(&total.wake_ns, 990)),
        us(total.wake_ns.last().copied().unwrap_or(0)),
        errors.len(),
        errors.first().map_or("null".to_owned(), |e| json_str(e)),
    )?;
    out.flush()?;
    Ok(())
}

fn report(
    out: &mut impl Write,
    stats: Vec<Stats>,
    elapsed: Duration,
    connections: usize,
    inflight: usize,
) -> Result<()> {
    let mut total = Stats::default();
    let mut errors = Vec::new();
    for s in stats {
        total.requests += s.requests;
        total.responses += s.responses;
        total.records += s.records;
        total.bytes_out += s.bytes_out;
        total.bytes_in += s.bytes_in;
        total.latencies_us.extend(s.latencies_us);
        errors.extend(s.error);
    }
    total.latencies_us.sort_unstable();
    let lat = &total.latencies_us;
    writeln!(
        out,
        "{{\"seconds\": {:.6}, \"connections\": {}, \"inflight\": {}, \"requests\": {}, \
         \"responses\": {}, \"records\": {}, \"bytes_out\": {}, \"bytes_in\": {}, \
         \"p50_us\": {}, \"p99_us\": {}, \"max_us\": {}, \"errors\": {}, \"error\": {}}}",
        elapsed.as_secs_f64(),
        connections,
        inflight,
        total.requests,
        total.responses,
        total.records,
        total.bytes_out,
        total.bytes_in,
        percentile(lat, 50),
        percentile(lat, 99),
        lat.last().copied().unwrap_or(0),
        errors.len(),
        errors.first().map_or("null".to_owned(), |e| json_str(e)),
    )?;
    out.flush()?;
    Ok(())
}

fn cmd_create_topic(args: &Args) -> Result<()> {
    let addr = args.str("addr")?;
    let topic = args.str("topic")?;
    let partitions: i32 = args.num("partitions", 1)?;
    let mut conn = Conn::open(&addr)?;
    let body = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(&topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let mut t = encode_request(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &body)?;
    let mut resp = conn.round_trip(&mut t)?;
    let r = CreateTopicsResponse::decode(&mut resp, CREATE_TOPICS_VERSION)?;
    for t in &r.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            bail!(
                "CreateTopics error {} for {:?}: {:?}",
                t.error_code,
                t.name,
                t.error_message
            );
        }
    }
    // Wait until Metadata shows every partition with a leader.
    let mut meta = metadata_request(&topic)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut resp = conn.round_trip(&mut meta)?;
        let r = MetadataResponse::decode(&mut resp, METADATA_VERSION)?;
        let ready = r.topics.iter().any(|t| {
            t.error_code == 0
                && t.partitions.len() == usize::try_from(partitions).unwrap_or(0)
                && t.partitions
                    .iter()
                    .all(|p| p.error_code == 0 && p.leader_id.0 >= 0)
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("topic {topic} not ready after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{{\"topic\": {}, \"partitions\": {partitions}}}",
        json_str(&topic)
    );
    Ok(())
}

fn cmd_versions(args: &Args) -> Result<()> {
    let mut conn = Conn::open(&args.str("addr")?)?;
    let mut t = api_versions_request()?;
    let mut resp = conn.round_trip(&mut t)?;
    let r = ApiVersionsResponse::decode(&mut resp, API_VERSIONS_VERSION)?;
    let keys: Vec<String> = r
        .api_keys
        .iter()
        .map(|k| format!("\"{}\": [{}, {}]", k.api_key, k.min_version, k.max_version))
        .collect();
    println!("{{{}}}", keys.join(", "));
    Ok(())
}

fn cmd_hold(args: &Args) -> Result<()> {
    let addr = args.str("addr")?;
    let connections: usize = args.num("connections", 100)?;
    let mut t = api_versions_request()?;
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = Conn::open(&addr)?;
        conn.round_trip(&mut t)?;
        conns.push(conn);
    }
    println!("READY {}", conns.len());
    std::io::stdout().flush()?;
    // Hold them until the caller closes our stdin.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    drop(conns);
    println!("{{\"held\": {connections}}}");
    Ok(())
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        bail!("usage: kafka-load versions|create-topic|run|hold --addr HOST:PORT ...");
    };
    let args = Args::parse(rest)?;
    match cmd.as_str() {
        "run" => cmd_run(&args),
        "create-topic" => cmd_create_topic(&args),
        "versions" => cmd_versions(&args),
        "hold" => cmd_hold(&args),
        other => bail!("unknown command {other}"),
    }
}
