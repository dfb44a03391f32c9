//! What one hostile client can make the filter allocate, counted by a global allocator: a
//! Metadata request under a prefix rule whose topic array claims 0x7ffffff0 entries, followed by
//! 100 MB of 10-byte names (the issue's reproduction, which aborted the VM). It is refused as it
//! streams: the filter's peak allocation stays a few kilobytes whatever the frame's size.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kafka_filter::config;
use kafka_filter::connection::{KafkaConnection, Verdict};
use kafka_filter::metrics::{MetricKey, RecordingSink};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the measuring thread counts: the test harness allocates on its own threads.
    static TRACKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn tracked() -> bool {
    TRACKED.try_with(|t| t.get()).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && tracked() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if tracked() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        }
    }
}

/// Start counting this thread's allocations from zero.
fn start_counting() {
    CURRENT.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    TRACKED.with(|t| t.set(true));
}

/// Stop counting; the peak since [`start_counting`].
fn stop_counting() -> usize {
    TRACKED.with(|t| t.set(false));
    PEAK.load(Ordering::Relaxed)
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counters are process-wide: tests that read them run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TENANTS: &str = r#"{"rules": [
    {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}}
]}"#;

/// The first bytes of a Metadata v1 request frame of `body_len` bytes after its header, whose
/// topic array claims `count` entries.
fn hostile_head(body_len: usize, count: i32) -> Vec<u8> {
    let client = b"team-a-hostile";
    let mut header = Vec::new();
    header.extend_from_slice(&3i16.to_be_bytes()); // Metadata
    header.extend_from_slice(&1i16.to_be_bytes()); // v1: header v1
    header.extend_from_slice(&1i32.to_be_bytes());
    header.extend_from_slice(&(client.len() as i16).to_be_bytes());
    header.extend_from_slice(client);
    let mut out = ((header.len() + 4 + body_len) as i32)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&count.to_be_bytes());
    out
}

/// 10-byte names (an int16 length of 8, then 8 letters), as many as fit in `n` bytes.
fn names(n: usize) -> Vec<u8> {
    let one = [0u8, 8, b't', b'o', b'p', b'i', b'c', b'-', b'x', b'y'];
    one.iter().copied().cycle().take(n).collect()
}

/// Feed a hostile frame of `total` body bytes in 64 KiB chunks; returns the peak allocation
/// above what was allocated before, and what was forwarded.
fn feed(total: usize) -> (usize, usize, RecordingSink) {
    let chunk = names(64 * 1024);
    let mut first_chunk = hostile_head(total, 0x7fff_fff0);
    first_chunk.extend_from_slice(&chunk);
    let mut conn = KafkaConnection::new(1, Rc::new(config::parse(TENANTS.as_bytes()).unwrap()));
    let mut m = RecordingSink::default();
    start_counting();
    let mut forwarded = 0usize;
    let mut fed = 0usize;
    while fed < total {
        let n = chunk.len().min(total - fed);
        let data: &[u8] = if fed == 0 {
            &first_chunk[..first_chunk.len() - chunk.len() + n]
        } else {
            &chunk[..n]
        };
        let mut src = data;
        match conn.on_request_data(&mut src, || 0, &mut m) {
            Verdict::Continue => forwarded += data.len(),
            Verdict::Rewrite { prefix_len, bytes } => {
                forwarded += bytes.len() + data.len() - prefix_len
            }
            Verdict::Close => panic!("closed"),
        }
        fed += n;
    }
    drop(conn);
    (stop_counting(), forwarded, m)
}

#[test]
fn a_huge_array_count_in_a_100_mb_frame_is_refused_in_a_few_kilobytes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (peak, forwarded, m) = feed(100_000_000);
    // The chunk copies of this test are made before the count starts; what remains is the
    // filter's own: the frame head it read, the substitute request, the connection's state.
    assert!(peak < 64 * 1024, "peak allocation {peak} bytes");
    // Forwarded: only the 14-byte substitute (ApiVersions v0), never the frame.
    assert_eq!(forwarded, 14);
    assert_eq!(m.get(MetricKey::HeldFrameTooLarge), 1);
    // The same just over max_held_frame_bytes: the peak does not grow with the frame.
    let (small_peak, _, _) = feed(17 << 20);
    assert!(peak <= small_peak + 1024, "{peak} vs {small_peak}");
    println!("peak allocation: {peak} bytes for 100 MB, {small_peak} bytes for 17 MiB");
}

/// A multi-topic Produce under a rule is held whole (its names sit between records): the frame
/// is copied into the filter once, decoded from that copy, and the rewritten frame is encoded
/// once straight into the bytes handed to the host. Peak: the held frame and the new one.
#[test]
fn a_held_frame_is_copied_once_and_encoded_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    let payload = 2 << 20;
    let topic = |name: &'static str| {
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_partition_data(vec![
                PartitionProduceData::default().with_records(Some(Bytes::from(vec![7u8; payload])))
            ])
    };
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("team-a-app")))
        .encode(&mut buf, 2)
        .unwrap();
    ProduceRequest::default()
        .with_acks(1)
        .with_topic_data(vec![topic("a"), topic("b")])
        .encode(&mut buf, 9)
        .unwrap();
    let mut stream = (buf.len() as i32).to_be_bytes().to_vec();
    stream.extend_from_slice(&buf);
    drop(buf);
    let frame = stream.len();

    let mut conn = KafkaConnection::new(1, Rc::new(config::parse(TENANTS.as_bytes()).unwrap()));
    let mut m = RecordingSink::default();
    start_counting();
    let mut out_len = 0;
    for chunk in stream.chunks(64 * 1024) {
        let mut src = chunk;
        match conn.on_request_data(&mut src, || 0, &mut m) {
            Verdict::Continue => out_len += chunk.len(),
            Verdict::Rewrite { prefix_len, bytes } => {
                out_len += bytes.len() + chunk.len() - prefix_len
            }
            Verdict::Close => panic!("closed"),
        }
    }
    let peak = stop_counting();
    assert_eq!(m.get(MetricKey::RewriteRequests), 1);
    assert_eq!(out_len, frame + 2 * "team-a.".len());
    println!("peak allocation {peak} bytes for a {frame}-byte frame held and rewritten");
    // The held frame, the rewritten one, and a little: no third copy.
    assert!(
        peak < 2 * frame + frame / 10,
        "peak {peak} for a {frame}-byte frame"
    );
}

/// A frame small enough to be held, whose decoded form would be far larger than its bytes (a
/// Metadata request of 2-byte null topic names, each a full struct once decoded): decoding stops
/// at the budget (16 bytes per frame byte) and the request is refused, never half-decoded.
#[test]
fn a_held_frame_that_would_decode_out_of_proportion_is_refused_within_its_budget() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let count = 2_000_000usize;
    let mut stream = hostile_head(2 * count, count as i32);
    stream.extend(std::iter::repeat_n([0xffu8, 0xff], count).flatten());
    let frame = stream.len();
    let mut conn = KafkaConnection::new(1, Rc::new(config::parse(TENANTS.as_bytes()).unwrap()));
    let mut m = RecordingSink::default();
    start_counting();
    let mut forwarded = Vec::new();
    for chunk in stream.chunks(64 * 1024) {
        let mut src = chunk;
        match conn.on_request_data(&mut src, || 0, &mut m) {
            Verdict::Continue => forwarded.extend_from_slice(chunk),
            Verdict::Rewrite { prefix_len, bytes } => {
                forwarded.extend_from_slice(&bytes);
                forwarded.extend_from_slice(&chunk[prefix_len..]);
            }
            Verdict::Close => panic!("closed"),
        }
    }
    let peak = stop_counting();
    println!("peak allocation {peak} bytes for a {frame}-byte frame refused at its decode budget");
    assert_eq!(
        forwarded.len(),
        14,
        "refused: only the substitute request is forwarded"
    );
    assert_eq!(m.get(MetricKey::RewriteErrors), 1);
    assert!(peak < 18 * frame, "peak {peak} for a {frame}-byte frame");
}
