//! The request log through the sans-io connection: which requests get a line, and what a line
//! holds, read back as JSON from a capturing logger.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;
use std::sync::{Mutex, Once};

use common::{drive, record_set, request_from as request, response};
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::limits::{BucketStore, LocalStore};
use kafka_filter::metrics::RecordingSink;
use kafka_filter::observers::LINE_PREFIX;
use kafka_filter::pipeline::held::HeldBudget;
use kafka_filter::pipeline::Peer;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOGGER: Once = Once::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = record.args().to_string();
        if let Some(json) = line.strip_prefix(LINE_PREFIX) {
            LINES.lock().unwrap().push(json.to_string());
        }
    }

    fn flush(&self) {}
}

/// The lines logged while `f` ran, for connections with this id (tests run in parallel).
fn lines_of(connection: u32, f: impl FnOnce()) -> Vec<Value> {
    LOGGER.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
    f();
    LINES
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["connection"] == connection)
        .collect()
}

fn conn(cfg: &str, id: u32) -> KafkaConnection {
    let cfg: Rc<Config> = Rc::new(config::parse(cfg.as_bytes()).unwrap());
    let store: Rc<dyn BucketStore> = Rc::new(LocalStore::default());
    KafkaConnection::with_shared(id, cfg, HeldBudget::new(1 << 26), store)
}

fn produce(corr: i32, client: &str) -> Vec<u8> {
    let body =
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("audit.v1")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(record_set(&[3], 0)))])]);
    request(ApiKey::Produce, 9, corr, client, &body)
}

fn exchange(c: &mut KafkaConnection, req: &[u8], resp: &[u8]) {
    let mut m = RecordingSink::default();
    assert_eq!(drive(c, req, 9, true, &mut m).unwrap(), req);
    assert_eq!(drive(c, resp, 9, false, &mut m).unwrap(), resp);
}

#[test]
fn a_line_per_matching_request_with_who_what_and_how() {
    let cfg =
        r#"{"request_log": {"match": {"client_id": {"prefix": "logged-"}}, "apis": ["Produce"]}}"#;
    let lines = lines_of(101, || {
        let mut c = conn(cfg, 101);
        c.set_peer(Peer {
            principal: Some("spiffe://cluster.local/ns/a/sa/writer".into()),
            source_ip: Some("10.1.2.3".parse().unwrap()),
        });
        exchange(
            &mut c,
            &produce(1, "logged-app"),
            &response(ApiKey::Produce, 9, 1, &ProduceResponse::default()),
        );
        // Another API: not logged.
        let md = request(
            ApiKey::Metadata,
            12,
            2,
            "logged-app",
            &MetadataRequest::default(),
        );
        exchange(
            &mut c,
            &md,
            &response(ApiKey::Metadata, 12, 2, &MetadataResponse::default()),
        );
        c.end(&mut RecordingSink::default());
        // Another client: not logged.
        let mut other = conn(cfg, 101);
        exchange(
            &mut other,
            &produce(1, "quiet-app"),
            &response(ApiKey::Produce, 9, 1, &ProduceResponse::default()),
        );
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["api"], "Produce");
    assert_eq!(l["api_version"], 9);
    assert_eq!(l["client_id"], "logged-app");
    assert_eq!(l["principal"], "spiffe://cluster.local/ns/a/sa/writer");
    assert_eq!(l["source"], "10.1.2.3");
    assert_eq!(l["produced"][0]["topic"], "audit.v1");
    assert_eq!(l["produced"][0]["records"], 3);
    assert!(l["latency_us"].is_u64() && l["response_bytes"].as_u64().unwrap() > 0);
    assert_eq!(l["decided"], serde_json::json!([]));
}

#[test]
fn sampling_keeps_a_share_and_topics_filter() {
    let half = r#"{"request_log": {"sample": 0.5}}"#;
    let lines = lines_of(102, || {
        let mut c = conn(half, 102);
        for corr in 0..400 {
            let md = request(
                ApiKey::Metadata,
                12,
                corr,
                "app",
                &MetadataRequest::default(),
            );
            exchange(
                &mut c,
                &md,
                &response(ApiKey::Metadata, 12, corr, &MetadataResponse::default()),
            );
        }
    });
    assert!((150..=250).contains(&lines.len()), "{} of 400", lines.len());
    let topic = r#"{"request_log": {"topics": ["other"]}}"#;
    let lines = lines_of(103, || {
        let mut c = conn(topic, 103);
        exchange(
            &mut c,
            &produce(1, "app"),
            &response(ApiKey::Produce, 9, 1, &ProduceResponse::default()),
        );
    });
    assert!(lines.is_empty(), "{lines:?}");
}

#[test]
fn bad_request_log_configuration_names_the_field() {
    for (doc, field) in [
        (r#"{"request_log": {"sample": 1.5}}"#, "request_log.sample"),
        (
            r#"{"request_log": {"apis": ["Produc"]}}"#,
            "request_log.apis",
        ),
        (r#"{"request_log": {"apis": []}}"#, "request_log.apis"),
        (r#"{"request_log": {"topics": []}}"#, "request_log.topics"),
        (
            r#"{"request_log": {"match": {"client_id": {"prefix": ""}}}}"#,
            "request_log.match",
        ),
        (r#"{"request_log": {"sink": "http"}}"#, "request_log"),
    ] {
        let err = config::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(field), "{doc}: {err}");
    }
}

/// With an HTTP collector, lines go to the VM's buffer (and not to Envoy's log when
/// `envoy_log` is off); past the buffer's bound they are dropped and counted, and the shipper
/// batches what the buffer holds.
#[test]
fn lines_for_the_http_collector_wait_in_a_bounded_buffer() {
    use kafka_filter::observers::log_sink::Shipper;
    let cfg = r#"{"request_log": {"envoy_log": false,
        "http": {"cluster": "logs", "max_buffered_lines": 3, "batch_lines": 2}}}"#;
    let parsed = config::parse(cfg.as_bytes()).unwrap();
    let mut shipper = Shipper::new(parsed.request_log.as_ref().unwrap().http.clone().unwrap());
    let mut m = RecordingSink::default();
    // A connection id of its own: the sampling test above logs for 102 at the same time.
    let logged = lines_of(105, || {
        let mut c = conn(cfg, 105);
        c.set_collector(&shipper.buffer);
        for corr in 1..=5 {
            let req = produce(corr, "app");
            assert_eq!(drive(&mut c, &req, 9, true, &mut m).unwrap(), req);
            let resp = response(ApiKey::Produce, 9, corr, &ProduceResponse::default());
            drive(&mut c, &resp, 9, false, &mut m).unwrap();
        }
    });
    assert!(logged.is_empty(), "envoy_log is off");
    assert_eq!(m.named("request_log_lines"), 5);
    assert_eq!(m.named("request_log_dropped"), 2, "past max_buffered_lines");
    let batch = shipper.due(0).expect("a full batch");
    assert_eq!(batch.lines, 2);
    let lines: Vec<Value> = String::from_utf8(batch.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["correlation_id"], 1);
    assert_eq!(lines[1]["api"], "Produce");
    assert!(config::parse(br#"{"request_log": {"envoy_log": false}}"#)
        .unwrap_err()
        .to_string()
        .contains("request_log.envoy_log"));
    assert!(
        config::parse(br#"{"request_log": {"http": {"cluster": "c", "flush_ms": 1}}}"#)
            .unwrap_err()
            .to_string()
            .contains("request_log.http.flush_ms")
    );
}
