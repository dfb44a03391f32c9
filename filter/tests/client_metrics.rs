//! Per-client metrics through the whole sans-io connection: series per client id, principal and
//! API, client software, the cap on distinct clients, and bad configuration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::rc::Rc;

use common::{drive, request_from as request, response};
use kafka_filter::config::{self, Config};
use kafka_filter::connection::KafkaConnection;
use kafka_filter::limits::{BucketStore, LocalStore};
use kafka_filter::metrics::RecordingSink;
use kafka_filter::pipeline::held::HeldBudget;
use kafka_filter::pipeline::Peer;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;

fn config(json: &str) -> Rc<Config> {
    Rc::new(config::parse(json.as_bytes()).unwrap())
}

fn conn(cfg: &Rc<Config>, store: &Rc<LocalStore>, id: u32) -> KafkaConnection {
    let store: Rc<dyn BucketStore> = store.clone();
    KafkaConnection::with_shared(id, cfg.clone(), HeldBudget::new(1 << 26), store)
}

fn api_versions(corr: i32, client: &str, software: (&str, &str)) -> Vec<u8> {
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_string(software.0.into()))
        .with_client_software_version(StrBytes::from_string(software.1.into()));
    request(ApiKey::ApiVersions, 3, corr, client, &body)
}

fn metadata(corr: i32, client: &str) -> Vec<u8> {
    request(
        ApiKey::Metadata,
        12,
        corr,
        client,
        &MetadataRequest::default(),
    )
}

/// One exchange; the request and response sizes.
fn exchange(
    c: &mut KafkaConnection,
    req: &[u8],
    resp: &[u8],
    m: &mut RecordingSink,
) -> (usize, usize) {
    assert_eq!(drive(c, req, 5, true, m).unwrap(), req);
    assert_eq!(drive(c, resp, 5, false, m).unwrap(), resp);
    (req.len(), resp.len())
}

fn versions_response(corr: i32) -> Vec<u8> {
    response(
        ApiKey::ApiVersions,
        3,
        corr,
        &ApiVersionsResponse::default(),
    )
}

fn metadata_response(corr: i32) -> Vec<u8> {
    response(ApiKey::Metadata, 12, corr, &MetadataResponse::default())
}

const ON: &str = r#"{"client_metrics": {}}"#;

#[test]
fn series_per_client_and_api_with_bytes_latency_and_software() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    let mut bytes = (0, 0);
    let mut add = |b: (usize, usize)| {
        bytes.0 += b.0;
        bytes.1 += b.1;
    };
    add(exchange(
        &mut c,
        &api_versions(1, "app-a", ("librdkafka", "2.3.0")),
        &versions_response(1),
        &mut m,
    ));
    for corr in 2..5 {
        add(exchange(
            &mut c,
            &metadata(corr, "app-a"),
            &metadata_response(corr),
            &mut m,
        ));
    }
    let p = "client.app-a.principal.none.";
    let conns = format!("{p}software.librdkafka.version.2.3.0.client_connections");
    // The connection is counted as soon as it is seen; counters come with the flush.
    assert_eq!(m.named(&conns), 1);
    assert_eq!(m.named(&format!("{p}api.Metadata.client_requests")), 0);
    c.flush(&mut m);
    assert_eq!(m.named(&format!("{p}api.ApiVersions.client_requests")), 1);
    assert_eq!(m.named(&format!("{p}api.ApiVersions.client_responses")), 1);
    assert_eq!(m.named(&format!("{p}api.Metadata.client_requests")), 3);
    assert_eq!(m.named(&format!("{p}api.Metadata.client_responses")), 3);
    assert_eq!(
        m.named(&format!("{p}client_request_bytes")) as usize,
        bytes.0
    );
    assert_eq!(
        m.named(&format!("{p}client_response_bytes")) as usize,
        bytes.1
    );
    let samples = &m.named_samples[&format!("{p}api.Metadata.client_response_latency_us")];
    assert_eq!(samples.len(), 3);
    // Flushing again adds nothing; the end gives the connection back.
    c.flush(&mut m);
    assert_eq!(m.named(&format!("{p}api.Metadata.client_requests")), 3);
    c.end(&mut m);
    assert_eq!(m.named(&conns), 0);
    c.end(&mut m);
    assert_eq!(m.named(&conns), 0, "ended twice, given back once");
}

#[test]
fn a_client_that_names_itself_later_moves_from_unknown() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    exchange(&mut c, &metadata(1, "late"), &metadata_response(1), &mut m);
    let p = "client.late.principal.none.software.";
    assert_eq!(
        m.named(&format!("{p}unknown.version.unknown.client_connections")),
        1
    );
    exchange(
        &mut c,
        &api_versions(2, "late", ("kafka-python", "2.0.2")),
        &versions_response(2),
        &mut m,
    );
    assert_eq!(
        m.named(&format!("{p}unknown.version.unknown.client_connections")),
        0
    );
    assert_eq!(
        m.named(&format!("{p}kafka-python.version.2.0.2.client_connections")),
        1
    );
}

#[test]
fn principal_and_odd_client_ids_become_plain_labels() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    c.set_peer(Peer {
        principal: Some("spiffe://cluster.local/ns/a/sa/b".into()),
        source_ip: None,
    });
    exchange(&mut c, &metadata(1, "a.b c"), &metadata_response(1), &mut m);
    c.flush(&mut m);
    assert_eq!(
        m.named(
            "client.a_b_c.principal.spiffe___cluster_local_ns_a_sa_b.api.Metadata.client_requests"
        ),
        1
    );
}

#[test]
fn clients_past_the_cap_are_counted_under_other_and_the_series_add_up() {
    let cfg = config(r#"{"client_metrics": {"max_clients": 3, "latency_histograms": false}}"#);
    // One store for every connection: the cap is per Envoy process, not per connection.
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    for i in 0..50 {
        let mut c = conn(&cfg, &store, i);
        let client = format!("id-{i}");
        exchange(&mut c, &metadata(1, &client), &metadata_response(1), &mut m);
        exchange(&mut c, &metadata(2, &client), &metadata_response(2), &mut m);
        c.end(&mut m);
    }
    let requests: Vec<(&String, &i64)> = m
        .named
        .iter()
        .filter(|(k, _)| k.ends_with(".api.Metadata.client_requests"))
        .collect();
    assert_eq!(requests.len(), 4, "3 clients and other: {requests:?}");
    assert_eq!(requests.iter().map(|(_, v)| **v).sum::<i64>(), 100);
    assert_eq!(
        m.named("client.other.principal.other.api.Metadata.client_requests"),
        94
    );
    assert!(m.named_samples.is_empty(), "latency histograms are off");
    // A client admitted before the cap filled keeps its series.
    let mut c = conn(&cfg, &store, 99);
    exchange(&mut c, &metadata(1, "id-0"), &metadata_response(1), &mut m);
    c.end(&mut m);
    assert_eq!(
        m.named("client.id-0.principal.none.api.Metadata.client_requests"),
        3
    );
}

#[test]
fn off_unless_configured() {
    let cfg = config("{}");
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    exchange(&mut c, &metadata(1, "app"), &metadata_response(1), &mut m);
    c.end(&mut m);
    assert!(m.named.is_empty(), "{:?}", m.named);
}

#[test]
fn bad_client_metrics_configuration_names_the_field() {
    for (doc, field) in [
        (
            r#"{"client_metrics": {"max_clients": -1}}"#,
            "client_metrics.max_clients",
        ),
        (
            r#"{"client_metrics": {"max_clients": 100001}}"#,
            "client_metrics.max_clients",
        ),
        (r#"{"client_metrics": {"max_client": 5}}"#, "client_metrics"),
        (
            r#"{"client_metrics": {"latency_histograms": "yes"}}"#,
            "client_metrics.latency_histograms",
        ),
    ] {
        let err = config::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(field), "{doc}: {err}");
    }
}

#[test]
fn requests_never_answered_are_counted_when_the_connection_ends() {
    let cfg = config(ON);
    let store = Rc::new(LocalStore::default());
    let mut m = RecordingSink::default();
    let mut c = conn(&cfg, &store, 1);
    exchange(&mut c, &metadata(1, "app"), &metadata_response(1), &mut m);
    // Two more requests: the broker answers only the second (the first is passed over), and a
    // third is still waiting when the connection ends.
    for corr in 2..5 {
        let req = metadata(corr, "app");
        assert_eq!(drive(&mut c, &req, 64, true, &mut m).unwrap(), req);
    }
    let resp = metadata_response(3);
    assert_eq!(drive(&mut c, &resp, 64, false, &mut m).unwrap(), resp);
    c.end(&mut m);
    let p = "client.app.principal.none.api.Metadata.";
    assert_eq!(m.named(&format!("{p}client_requests")), 4);
    assert_eq!(m.named(&format!("{p}client_responses")), 2);
}
