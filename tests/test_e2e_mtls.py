"""Tenants told apart by their mTLS identity (the SPIFFE id in the client certificate's URI SAN),
the way the filter runs behind Istio: Envoy terminates TLS with client certificates required, and
the filter matches rules on `connection.uri_san_peer_certificate`.

The rules are the shipped `istio/wasmplugin-tenants.yaml` pluginConfig. Both tenants use the same
client id, so only the certificate can tell them apart. Real Envoy + the built filter + tansu +
librdkafka and kafka-python over TLS; what landed where is read on the broker directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clients import CLIENT_OPS, BrokerView, ClientTls
from conftest import _start_proxied_stack, _stop_stacks, need_wasm
from harness import REPO, Envoy, wait_until
from mesh_pki import issue_workload

TENANTS_MANIFEST = REPO / "istio" / "wasmplugin-tenants.yaml"
CLIENT_ID = "app"   # the same for both tenants


def tenants_plugin_config() -> dict:
    with open(TENANTS_MANIFEST) as f:
        plugin = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "WasmPlugin")
    return plugin["spec"]["pluginConfig"]


def with_mtls(envoy: Envoy, pki: Path) -> Envoy:
    """Envoy's listener terminates TLS and requires a client certificate from the test CA."""
    chain = envoy.cfg["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(pki / "server.pem")},
                                      "private_key": {"filename": str(pki / "server.key")}}],
                "validation_context": {"trusted_ca": {"filename": str(pki / "ca.pem")}},
            },
        },
    }
    envoy._write_bootstrap()
    return envoy


@pytest.fixture
def mtls_stack(request, tmp_path, pki):
    need_wasm()
    stacks: list = []
    config = tenants_plugin_config()
    stack = _start_proxied_stack(
        stacks, "filter", tmp_path,
        lambda broker_port, **ports: with_mtls(Envoy(broker_port, plugin_config=config, workdir=tmp_path,
                                                     **ports), pki))
    try:
        yield stack
    finally:
        _stop_stacks(request, stacks)


def tenant(client: str, stack, pki: Path, name: str):
    tls = ClientTls(ca=str(pki / "ca.pem"), cert=str(pki / f"{name}.pem"), key=str(pki / f"{name}.key"))
    return CLIENT_OPS[client](stack.bootstrap, CLIENT_ID, tls=tls)


@pytest.mark.parametrize("client", list(CLIENT_OPS))
def test_tenants_are_told_apart_by_their_spiffe_id(client, mtls_stack, pki):
    stack = mtls_stack
    a, b = tenant(client, stack, pki, "team-a"), tenant(client, stack, pki, "team-b")
    with BrokerView(stack.broker.port) as view:
        view.create_topic("team-a.events", 1)
        view.create_topic("team-b.events", 1)
        view.create_topic("team-b.private", 1)
    a.produce("events", [b"a-0", b"a-1", b"a-2"])
    b.produce("events", [b"b-0", b"b-1"])
    # Each sees only its own topics, under its own (logical) names.
    assert a.list_topics() == {"events": 1}
    assert b.list_topics() == {"events": 1, "private": 1}
    with BrokerView(stack.broker.port) as view:
        assert view.values("team-a.events") == [b"a-0", b"a-1", b"a-2"]
        assert view.values("team-b.events") == [b"b-0", b"b-1"]
        assert "events" not in view.topics()
    wait_until(lambda: stack.envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 30,
               what="the clients' connections to close")
    stats = stack.envoy.settled_kafka_stats()
    assert stats.get("kafka.rewrite.requests", 0) > 0, stats
    assert not stats.get("kafka.rewrite.errors"), stats
    # Per-client series (client_metrics in the manifest): one client id, two principals.
    principals = {name.split(".")[4] for name in stats
                  if name.startswith(f"kafka.client.{CLIENT_ID}.principal.") and name.endswith(".client_requests")}
    assert {"spiffe___cluster_local_ns_team-a_" in p or "spiffe___cluster_local_ns_team-b_" in p
            for p in principals} == {True} and len(principals) == 2, principals


def test_a_client_without_a_matching_identity_is_not_mapped(mtls_stack, pki, tmp_path):
    """A certificate from the same CA whose SPIFFE id matches no rule: its names pass unchanged
    (this is the shipped manifest's behaviour; a catch-all rule would isolate it too)."""
    issue_workload(pki, "team-c", "spiffe://cluster.local/ns/team-c/sa/app")
    stack = mtls_stack
    with BrokerView(stack.broker.port) as view:
        view.create_topic("team-a.events", 1)
        view.create_topic("shared", 1)
    c = tenant("rdkafka", stack, pki, "team-c")
    assert {"team-a.events", "shared"} <= set(c.list_topics())
    c.produce("shared", [b"c-0"])
    with BrokerView(stack.broker.port) as view:
        assert view.values("shared") == [b"c-0"]
