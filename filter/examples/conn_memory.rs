//! Heap the filter keeps per open connection, for `make bench` (deterministic, native).
//!
//! Envoy's RSS moves in pages and the wasm VM's linear memory is invisible to Envoy's allocator
//! stats, so `make bench` also counts the core's own allocations exactly: `conn_memory [rule]`
//! opens 100 connections, runs one ApiVersions exchange on each (what the RSS measurement does
//! through Envoy), and reports the live heap bytes per connection, struct included. Native
//! pointers are 8 bytes and wasm32's are 4, so the figure is an upper bound for the VM.

use std::alloc::{GlobalAlloc, Layout, System};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use kafka_filter::codec::source::CountingSource;
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::metrics::{MetricKey, MetricsSink};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts responses and allocates nothing, so only the connections' heap is measured.
#[derive(Default)]
struct Responses(i64);

impl MetricsSink for Responses {
    fn add(&mut self, key: MetricKey, delta: i64) {
        if matches!(key, MetricKey::Responses(_)) {
            self.0 += delta;
        }
    }

    fn record(&mut self, _key: MetricKey, _value: u64) {}

    fn add_named(&mut self, _: &str, _: i64) {}

    fn gauge_named(&mut self, _: &str, _: i64) {}

    fn record_named(&mut self, _: &str, _: u64) {}

    fn set_gauge_named(&mut self, _: &str, _: u64) {}
}

const VERSION: i16 = 3;
const CONNECTIONS: usize = 100;

fn frame(body: BytesMut) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = i32::try_from(body.len())?.to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

fn exchange() -> Result<(Vec<u8>, Vec<u8>), Box<dyn std::error::Error>> {
    let mut req = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench-idle")))
        .encode(
            &mut req,
            ApiKey::ApiVersions.request_header_version(VERSION),
        )?;
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("bench"))
        .with_client_software_version(StrBytes::from_static_str("1.0"))
        .encode(&mut req, VERSION)?;
    let mut resp = BytesMut::new();
    ResponseHeader::default().with_correlation_id(1).encode(
        &mut resp,
        ApiKey::ApiVersions.response_header_version(VERSION),
    )?;
    let keys = [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::Metadata,
        ApiKey::ApiVersions,
    ];
    ApiVersionsResponse::default()
        .with_api_keys(
            keys.iter()
                .map(|k| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(0)
                        .with_max_version(9)
                })
                .collect(),
        )
        .encode(&mut resp, VERSION)?;
    Ok((frame(req)?, frame(resp)?))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rule = std::env::args().nth(1).as_deref() == Some("rule");
    let config = Rc::new(if rule {
        config::parse(
            br#"{"rules": [{"name": "bench", "topics": {"map": {"bench": "bench-physical"}}, "groups": "unchanged"}]}"#,
        )?
    } else {
        Config::default()
    });
    let (request, response) = exchange()?;
    let mut sink = Responses::default();
    // Warm up once so lazily built shared state is not charged to the connections.
    let mut warm = KafkaConnection::new(0, Rc::clone(&config));
    warm.on_request_data(&mut CountingSource::new(&request), || 1, &mut sink);
    warm.on_response_data(&mut CountingSource::new(&response), || 2, &mut sink);
    drop(warm);

    let before = LIVE.load(Ordering::Relaxed);
    let mut open = Vec::with_capacity(CONNECTIONS);
    let vec_bytes = LIVE.load(Ordering::Relaxed) - before;
    for id in 1..=CONNECTIONS {
        let mut conn = Box::new(KafkaConnection::new(u32::try_from(id)?, Rc::clone(&config)));
        conn.on_request_data(&mut CountingSource::new(&request), || 1, &mut sink);
        conn.on_response_data(&mut CountingSource::new(&response), || 2, &mut sink);
        open.push(conn);
    }
    let live = LIVE.load(Ordering::Relaxed) - before - vec_bytes;
    if sink.0 != i64::try_from(CONNECTIONS + 1)? {
        return Err(format!("{} of {} responses were matched", sink.0, CONNECTIONS + 1).into());
    }
    println!(
        "rule={rule} connections={CONNECTIONS} heap_bytes_per_connection={} struct_bytes={}",
        live / CONNECTIONS,
        std::mem::size_of::<KafkaConnection>()
    );
    drop(open);
    Ok(())
}
