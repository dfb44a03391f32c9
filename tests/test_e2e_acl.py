"""Kafka-style ACLs enforced by the filter in front of a broker that has none, the way it runs
behind Istio: Envoy terminates mTLS, the filter reads the SPIFFE id of the client certificate and
applies the `acls` of the shipped `istio/wasmplugin-acls.yaml`.

Two identities by certificate (team-a, team-b) and one by client id (`auditor`), with librdkafka
and kafka-python; what landed is read on the broker directly (not through Envoy); the audit log is
read from Envoy's log. Real Envoy + the built filter + tansu.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from clients import CLIENT_OPS, BrokerView, ClientTls, RawKafka
from conftest import _start_proxied_stack, _stop_stacks, need_wasm
from harness import REPO, Envoy, wait_until
from mesh_pki import SPIFFE, issue_workload
from test_e2e_mtls import with_mtls

ACLS_MANIFEST = REPO / "istio" / "wasmplugin-acls.yaml"
AUDIT = "kafka_audit "


def acls_plugin_config() -> dict:
    with open(ACLS_MANIFEST) as f:
        plugin = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "WasmPlugin")
    return plugin["spec"]["pluginConfig"]


def start_stack(request, tmp_path: Path, pki: Path, require_cert: bool = True):
    need_wasm()
    stacks: list = []

    def envoy(broker_port, **ports):
        e = with_mtls(Envoy(broker_port, plugin_config=acls_plugin_config(), workdir=tmp_path,
                            component_log_level="wasm:info", **ports), pki)
        if not require_cert:
            chain = e.cfg["static_resources"]["listeners"][0]["filter_chains"][0]
            chain["transport_socket"]["typed_config"]["require_client_certificate"] = False
            e._write_bootstrap()
        return e

    stack = _start_proxied_stack(stacks, "filter", tmp_path, envoy)
    return stacks, stack


@pytest.fixture
def acl_stack(request, tmp_path, pki):
    stacks, stack = start_stack(request, tmp_path, pki)
    try:
        yield stack
    finally:
        _stop_stacks(request, stacks)


def tls_for(pki: Path, name: str) -> ClientTls:
    return ClientTls(ca=str(pki / "ca.pem"), cert=str(pki / f"{name}.pem"), key=str(pki / f"{name}.key"))


def client(kind: str, stack, pki: Path, cert: str, client_id: str = "app"):
    return CLIENT_OPS[kind](stack.bootstrap, client_id, tls=tls_for(pki, cert))


def audit_lines(envoy: Envoy) -> list[dict]:
    return [json.loads(ln.split(AUDIT, 1)[1]) for ln in envoy.log_text().splitlines() if AUDIT in ln]


def wait_audit(envoy: Envoy, pred, what: str) -> list[dict]:
    wait_until(lambda: [a for a in audit_lines(envoy) if pred(a)], 20, what=what)
    return [a for a in audit_lines(envoy) if pred(a)]


def seed_topics(stack, *names: str) -> None:
    with BrokerView(stack.broker.port) as view:
        for n in names:
            view.create_topic(n, 1)


@pytest.mark.parametrize("kind", list(CLIENT_OPS))
def test_each_identity_does_what_its_acls_allow(kind, acl_stack, pki):
    """Create a topic, produce, consume with a group and commit, each team on its own names; the
    auditor sees every topic and group and may not write."""
    stack = acl_stack
    a, b = client(kind, stack, pki, "team-a"), client(kind, stack, pki, "team-b")
    a.create_topic("team-a.events", 1)
    b.create_topic("team-b.events", 1)
    a.produce("team-a.events", [b"a-0", b"a-1"])
    b.produce("team-b.events", [b"b-0"])
    got, committed = a.consume("team-a.events", "team-a.readers", 2)
    assert sorted(m.value for m in got) == [b"a-0", b"a-1"]
    assert committed == {("team-a.events", 0): 2}
    with BrokerView(stack.broker.port) as view:
        assert view.values("team-a.events") == [b"a-0", b"a-1"]
        assert view.values("team-b.events") == [b"b-0"]
        assert view.committed("team-a.readers", "team-a.events", 1) == {0: 2}
    # Metadata for all topics shows each team only what it may Describe.
    assert set(a.list_topics()) == {"team-a.events"}
    assert set(b.list_topics()) == {"team-b.events"}
    # The auditor (by client id, with a certificate no entry names) sees both, writes nothing.
    issue_workload(pki, "ops", "spiffe://cluster.local/ns/ops/sa/tools")
    auditor = client(kind, stack, pki, "ops", client_id="auditor")
    assert {"team-a.events", "team-b.events"} <= set(auditor.list_topics())
    with RawKafka(stack.envoy.listener_port, client_id="auditor", tls=tls_for(pki, "ops")) as raw:
        assert raw_produce(raw, "team-a.events", b"x") == 29
    with BrokerView(stack.broker.port) as view:
        assert view.values("team-a.events") == [b"a-0", b"a-1"]
    wait_audit(stack.envoy, lambda l: l["event"] == "denied" and l["client_id"] == "auditor"
               and l["operation"] == "Write", "the auditor's denied write")
    # Creating a topic is an administrative operation: audited, allowed.
    created = wait_audit(stack.envoy, lambda l: l["event"] == "admin" and l["resource"] == "team-a.events",
                         "the audit line of team-a's CreateTopics")
    assert created[0]["principal"] == SPIFFE["team-a"] and created[0]["operation"] == "Create"
    assert created[0]["outcome"] == "allowed" and created[0]["api"] == "CreateTopics"
    connections = wait_audit(stack.envoy, lambda l: l["event"] == "connection", "connection lines")
    assert {c["principal"] for c in connections} >= set(SPIFFE.values())
    assert any(c["client_software"] for c in connections), connections


@pytest.mark.parametrize("kind", list(CLIENT_OPS))
def test_a_produce_to_one_allowed_and_one_denied_topic(kind, acl_stack, pki):
    """team-a may read `shared.news` (so its client sends the Produce) but not write it: in one
    producer's requests, team-a's own records land and the shared partition gets
    TOPIC_AUTHORIZATION_FAILED; nothing reaches `shared.news`."""
    stack = acl_stack
    seed_topics(stack, "team-a.events", "shared.news")
    a = client(kind, stack, pki, "team-a")
    with pytest.raises(Exception, match="(?i)topic.?authorization.?failed") as failed:
        a.produce_to([("team-a.events", b"mine-0"), ("shared.news", b"not-mine"), ("team-a.events", b"mine-1")],
                     linger_ms=200, timeout=20)
    print(f"{kind}: {failed.value}")
    with BrokerView(stack.broker.port) as view:
        assert view.values("team-a.events") == [b"mine-0", b"mine-1"]
        assert view.values("shared.news") == []
    # Counted by operation and resource type, as labels.
    wait_until(lambda: stack.envoy.prometheus().find("kafka_acl_denied", kafka_acl_operation="Write",
                                                     kafka_acl_resource="topic"), 20,
               what="kafka_acl_denied{Write, topic}")
    assert stack.envoy.prometheus().find("kafka_acl_allowed", kafka_acl_operation="Write", kafka_acl_resource="topic")
    denied = wait_audit(stack.envoy, lambda l: l["event"] == "denied" and l["resource"] == "shared.news",
                        "the denial's audit line")
    assert denied[0]["principal"] == SPIFFE["team-a"] and denied[0]["operation"] == "Write"
    assert denied[0]["api"] == "Produce" and denied[0]["outcome"] == "denied" and denied[0]["time"]


def raw_produce(raw: RawKafka, topic: str, value: bytes) -> int:
    """The error code of partition 0 in the answer to a Produce v7 of one record."""
    from kafka.protocol.producer import ProduceRequest
    from kafka.record.memory_records import MemoryRecordsBuilder
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=None, key=None, value=value, headers=[])
    builder.close()
    T = ProduceRequest.TopicProduceData
    req = ProduceRequest(transactional_id=None, acks=-1, timeout_ms=5000, topic_data=[
        T(name=topic, partition_data=[T.PartitionProduceData(index=0, records=builder.buffer())])])
    resp = raw.call(req, 7)
    (t,) = resp.responses
    assert t.name == topic, resp
    return t.partition_responses[0].error_code


def test_a_denied_produce_never_reaches_the_broker(acl_stack, pki):
    """A Produce for a topic team-a may not even Describe, sent as is (a real client would stop at
    Metadata): answered TOPIC_AUTHORIZATION_FAILED by the filter, nothing on the broker."""
    stack = acl_stack
    seed_topics(stack, "team-b.events")
    with RawKafka(stack.envoy.listener_port, client_id="app", tls=tls_for(pki, "team-a")) as raw:
        assert raw_produce(raw, "team-b.events", b"intruder") == 29
    with BrokerView(stack.broker.port) as view:
        assert view.values("team-b.events") == []
    denied = wait_audit(stack.envoy, lambda l: l["event"] == "denied" and l["resource"] == "team-b.events",
                        "the denial's audit line")
    assert denied[0]["principal"] == SPIFFE["team-a"] and denied[0]["api"] == "Produce"


@pytest.mark.parametrize("kind", list(CLIENT_OPS))
def test_groups_of_another_team_are_hidden_and_denied(kind, acl_stack, pki):
    stack = acl_stack
    seed_topics(stack, "team-b.events", "shared.news")
    b = client(kind, stack, pki, "team-b")
    b.produce("team-b.events", [b"b-0"])
    b.consume("team-b.events", "team-b.readers", 1)
    a = client(kind, stack, pki, "team-a")
    assert "team-b.readers" not in a.list_groups()
    auditor = client(kind, stack, pki, "team-a", client_id="auditor")
    wait_until(lambda: "team-b.readers" in auditor.list_groups(), 20, what="the auditor to see team-b's group")
    # team-a may read shared.news but not with team-b's group: librdkafka reports
    # GROUP_AUTHORIZATION_FAILED; kafka-python keeps retrying its coordinator lookup and gets
    # nothing.
    with pytest.raises(Exception, match="(?i)group.?authorization|0 of 1 messages"):
        a.consume("shared.news", "team-b.readers", 1, timeout=10)
    denied = wait_audit(stack.envoy, lambda l: l["event"] == "denied" and l["resource"] == "team-b.readers",
                        "the denied group's audit line")
    assert denied[0]["principal"] == SPIFFE["team-a"] and denied[0]["resource_type"] == "group"


def test_describe_groups_answers_a_denied_group_with_the_error(acl_stack, pki):
    """A client's group lookup (FindCoordinator) for another team's group gets
    GROUP_AUTHORIZATION_FAILED, as from a broker with ACLs (librdkafka's DescribeConsumerGroups
    stops there); a DescribeGroups sent anyway gets it too, for the denied group only."""
    from kafka.protocol.admin import DescribeGroupsRequest
    from kafka.protocol.metadata import FindCoordinatorRequest
    stack = acl_stack
    seed_topics(stack, "team-b.events")
    b = client("rdkafka", stack, pki, "team-b")
    b.produce("team-b.events", [b"b-0"])
    b.consume("team-b.events", "team-b.readers", 1)
    for cert, expect in (("team-a", 30), ("team-b", 0)):
        with RawKafka(stack.envoy.listener_port, client_id="app", tls=tls_for(pki, cert)) as raw:
            coordinator = raw.call(FindCoordinatorRequest(key="team-b.readers", key_type=0), 2)
            described = raw.call(DescribeGroupsRequest(groups=["team-b.readers"]), 1)
        assert coordinator.error_code == expect, coordinator
        (g,) = described.groups
        assert (g.group_id, g.error_code) == ("team-b.readers", expect), described
        if expect == 0:
            assert g.group_state, described
    lines = wait_audit(stack.envoy, lambda l: l["resource"] == "team-b.readers" and l["event"] == "denied",
                       "the group denials")
    wait_until(lambda: {l["api"] for l in audit_lines(stack.envoy) if l["resource"] == "team-b.readers"
                        and l["event"] == "denied"} == {"FindCoordinator", "DescribeGroups"}, 20,
               what=f"both denials audited: {lines}")


@pytest.mark.parametrize("kind", list(CLIENT_OPS))
def test_denied_transactional_id_and_admin_operations(kind, acl_stack, pki):
    stack = acl_stack
    seed_topics(stack, "team-b.events")
    a = client(kind, stack, pki, "team-a")
    with pytest.raises(Exception, match="(?i)transactional.?id.?authorization"):
        t = a.transactional_producer("team-b.tx")
        try:
            t.init()
        finally:
            t.close()
    with pytest.raises(Exception, match="(?i)authoriz"):
        a.create_topic("team-b.new", 1, timeout=10)
    # DescribeConfigs answers per resource (no top-level error): the resource gets the error
    # (librdkafka raises it; kafka-python's admin returns no configuration).
    try:
        assert a.describe_configs("team-b.events") == {}
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001 - the error is the point
        assert "authoriz" in str(e).lower(), e
    wait_until(lambda: any(l["api"] == "DescribeConfigs" and l["event"] == "denied"
                           for l in audit_lines(stack.envoy)), 20, what="the DescribeConfigs denial")
    with BrokerView(stack.broker.port) as view:
        assert "team-b.new" not in view.topics()
    lines = audit_lines(stack.envoy)
    wait_until(lambda: any(l["resource"] == "team-b.new" for l in audit_lines(stack.envoy)), 20,
               what="the CreateTopics denial in the audit log")
    lines = audit_lines(stack.envoy)
    assert any(l["resource"] == "team-b.tx" and l["resource_type"] == "transactional_id"
               and l["event"] == "denied" for l in lines), lines
    create = next(l for l in lines if l["resource"] == "team-b.new")
    assert create["operation"] == "Create" and create["principal"] == SPIFFE["team-a"]


def fetch_v13(topic_id: bytes, corr: int, client_id: str = "app") -> bytes:
    """A Fetch v13 request (topics by id) for partition 0 of `topic_id`, framed."""
    def uvarint(n: int) -> bytes:
        out = b""
        while True:
            b7 = n & 0x7F
            n >>= 7
            if n:
                out += bytes([b7 | 0x80])
            else:
                return out + bytes([b7])
    cid = client_id.encode()
    header = struct.pack(">hhih", 1, 13, corr, len(cid)) + cid + b"\x00"
    partition = struct.pack(">iiqiqi", 0, -1, 0, -1, -1, 1 << 20) + b"\x00"
    topic = topic_id + uvarint(2) + partition + b"\x00"
    body = (struct.pack(">iiiibii", -1, 100, 1, 1 << 20, 0, 0, -1)
            + uvarint(2) + topic + uvarint(1) + uvarint(1) + b"\x00")
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def first_partition_error_v13(frame: bytes) -> tuple[bytes, int]:
    """(topic id, error code) of the first partition of a Fetch v13 response (after its size)."""
    # correlation id, header tags, throttle, error, session id, topics count (uvarint < 128)
    i = 4 + 1 + 4 + 2 + 4
    assert frame[i] >= 2, frame[:40]
    i += 1
    topic_id = frame[i:i + 16]
    i += 16 + 1   # partitions count
    _, error = struct.unpack(">ih", frame[i:i + 6])
    return topic_id, error


def test_bypass_attempts_fail_closed(acl_stack, pki):
    """A fetch by the topic id of a topic team-a may not read (its id learned by team-b), an
    unknown API key, a version newer than the filter knows: denied, each audited."""
    from confluent_kafka.admin import AdminClient
    stack = acl_stack
    seed_topics(stack, "team-b.secret")
    b = client("rdkafka", stack, pki, "team-b")
    b.produce("team-b.secret", [b"secret"])
    admin = AdminClient(b.conf())   # kept referenced until the result is in
    desc = admin.describe_topics(
        __import__("confluent_kafka").TopicCollection(["team-b.secret"]), request_timeout=10)
    tid = desc["team-b.secret"].result(15).topic_id
    topic_id = struct.pack(">qq", tid.get_most_significant_bits(), tid.get_least_significant_bits())
    with RawKafka(stack.envoy.listener_port, client_id="app", tls=tls_for(pki, "team-a")) as raw:
        raw.sock.sendall(fetch_v13(topic_id, 1))
        got_id, error = first_partition_error_v13(raw.recv_frame())
    assert (got_id, error) == (topic_id, 29)
    # An unknown API key: the connection is closed, nothing is answered.
    with RawKafka(stack.envoy.listener_port, client_id="app", tls=tls_for(pki, "team-a")) as raw:
        raw.sock.sendall(struct.pack(">ihhih", 10, 999, 0, 7, -1))
        with pytest.raises((ConnectionError, OSError)):
            raw.recv_frame()
    # Produce v99: the filter has no schema for it; never forwarded.
    with RawKafka(stack.envoy.listener_port, client_id="app", tls=tls_for(pki, "team-a")) as raw:
        payload = struct.pack(">hhih", 0, 99, 8, 3) + b"app" + b"\x00" * 16
        raw.sock.sendall(struct.pack(">i", len(payload)) + payload)
        try:
            frame = raw.recv_frame()
            assert struct.unpack(">i", frame[:4])[0] == 8 and frame[4:6] == struct.pack(">h", 35), frame
        except (ConnectionError, OSError):
            pass
    lines = wait_audit(stack.envoy, lambda l: l["event"] == "denied" and l["principal"] == SPIFFE["team-a"]
                       and l["api"] in ("Fetch", "999", "Produce"), "the bypass denials")
    wait_until(lambda: {l["api"] for l in audit_lines(stack.envoy) if l["event"] == "denied"} >= {"Fetch", "999", "Produce"},
               20, what=f"all three denials in the audit log, got {lines}")
    with BrokerView(stack.broker.port) as view:
        assert view.values("team-b.secret") == [b"secret"]
    stats = stack.envoy.kafka_stats()
    assert stats.get("kafka.acl_unreadable_denied", 0) >= 2, stats


def test_a_client_without_an_identity_is_denied(request, tmp_path, pki):
    """With client certificates optional, a client that presents none has no principal: no entry
    matches it, and the default (deny) applies from its first request."""
    stacks, stack = start_stack(request, tmp_path, pki, require_cert=False)
    try:
        seed_topics(stack, "team-a.events")
        anon = CLIENT_OPS["rdkafka"](stack.bootstrap, "app", tls=ClientTls(ca=str(pki / "ca.pem"), cert="", key=""))
        assert anon.list_topics() == {}
        with RawKafka(stack.envoy.listener_port, client_id="app",
                      tls=ClientTls(ca=str(pki / "ca.pem"), cert="", key="")) as raw:
            from kafka.protocol.metadata import MetadataRequest
            md = raw.call(MetadataRequest[4](topics=["team-a.events"], allow_auto_topic_creation=False), 4)
        assert [(t[1], t[0]) for t in md.topics] == [("team-a.events", 29)], md
        lines = wait_audit(stack.envoy, lambda l: l["event"] == "denied" and l["resource"] == "team-a.events",
                           "the anonymous denial")
        assert lines[0]["principal"] is None
    finally:
        _stop_stacks(request, stacks)
