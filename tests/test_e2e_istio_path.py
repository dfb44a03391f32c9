"""Istio's own configuration path, booted: the shipped tenants overlay (`kubectl kustomize
istio/kustomize/overlays/tenants`) rendered as istiod renders a NETWORK WasmPlugin, the module
fetched as the Istio agent fetches it (over HTTP from a local server, its sha256 checked), and
the result run by a real Envoy configured as the broker's sidecar (inbound mTLS with SPIFFE
client certificates, the filter's ECDS resource, tcp_proxy to a tansu broker). How each step is
ported from Istio, and what differs from a mesh: tests/istio_sidecar.py.

What it shows, with librdkafka and kafka-python:
- the filter as Istio names it (`extensions.istio.io/wasmplugin/kafka.kafka-filter`), root_id
  from pluginName, pluginConfig as its JSON configuration: tenants' names are converted by their
  SPIFFE ids, and the per-client series reach /stats/prometheus with their labels through the
  sidecar's stats settings (istio/stats/);
- a module the agent cannot fetch (unreachable, or not the sha256 the WasmPlugin names):
  FAIL_CLOSE and FAIL_RELOAD leave a deny-all RBAC filter in its place (every connection
  closed, nothing reaches the broker); FAIL_OPEN leaves an allow-all one, and traffic reaches
  the broker without the filter: names unconverted. Why the shipped manifests never use it;
- a pluginConfig the filter refuses: Envoy rejects the resource whatever the failStrategy (the
  log names the field); with no earlier configuration, every connection is closed; over a
  running one, the running filter stays;
- a WasmPlugin with neither pluginName nor pluginConfig runs the filter with its defaults.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import pytest

from clients import CLIENT_OPS, BrokerView, ClientTls, RawKafka, closed_without_answer, metadata_partitions
from conftest import Stack, _stop_stacks
from harness import Broker, free_ports, per_api, require_wasm, wait_until
from istio_sidecar import (
    FAILURE_POLICY,
    SidecarEnvoy,
    agent_convert,
    go_json,
    istiod_extension_config,
    istiod_listener_filter,
)
from module_server import PACKED_PATH, ModuleServer
from test_istio_kustomize import build

CLIENT_ID = "app"


def tenants_plugin(server: ModuleServer, **spec) -> dict:
    """The tenants overlay's WasmPlugin, built by kubectl kustomize, its url pointing at the
    module server (with the module's sha256), and `spec` overriding fields."""
    (plugin,) = [d for d in build("overlays/tenants") if d["kind"] == "WasmPlugin"]
    plugin["spec"].update({"url": server.url(), "sha256": server.sha256, **spec})
    return plugin


class Sidecar(Stack):
    """A tansu broker behind a SidecarEnvoy, the ECDS resource delivered before Envoy starts."""

    def __init__(self, workdir: Path, plugin: dict, pki: Path):
        listener_port, admin_port, broker_port = free_ports(3)
        super().__init__("istio-sidecar", Broker(workdir=workdir, port=broker_port, advertised_port=listener_port),
                         SidecarEnvoy(broker_port, plugin, pki, workdir, listener_port=listener_port,
                                      admin_port=admin_port))
        self.pki = pki
        self.cache = workdir / "agent-cache"
        resource, self.fetch_error = agent_convert(istiod_extension_config(plugin), self.cache)
        self.envoy.deliver(resource)

    def tls(self, workload: str) -> ClientTls:
        return ClientTls(ca=str(self.pki / "ca.pem"), cert=str(self.pki / f"{workload}.pem"),
                         key=str(self.pki / f"{workload}.key"))

    def client(self, kind: str, workload: str):
        return CLIENT_OPS[kind](self.envoy.bootstrap, CLIENT_ID, tls=self.tls(workload))

    def refused(self, workload: str = "team-a") -> bool:
        """A TLS connection as `workload` gets no answer to a Metadata request: closed."""
        return closed_without_answer(self.envoy.listener_port, CLIENT_ID, tls=self.tls(workload))

    def broker_topics(self) -> dict[str, int]:
        with BrokerView(self.broker.port) as view:
            return view.topics()


@pytest.fixture
def sidecars(request) -> Iterator[list[Sidecar]]:
    running: list[Sidecar] = []
    try:
        yield running
    finally:
        _stop_stacks(request, running)


def start(sidecars: list, tmp_path: Path, plugin: dict, pki: Path) -> Sidecar:
    sidecar = Sidecar(tmp_path / f"sidecar{len(sidecars)}", plugin, pki)
    sidecars.append(sidecar)
    return sidecar.start()


# --------------------------------------------------------------------------------------------


def test_the_wasmplugin_as_istiod_and_the_agent_render_it(module_server, tmp_path):
    plugin = tenants_plugin(module_server)
    spec = plugin["spec"]
    flt = istiod_listener_filter(plugin)
    assert flt["name"] == "extensions.istio.io/wasmplugin/kafka.kafka-filter"
    assert flt["config_discovery"]["type_urls"] == [
        "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
        "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"]
    resource = istiod_extension_config(plugin)
    config = resource["typed_config"]["config"]
    assert resource["name"] == flt["name"]
    assert (config["name"], config["root_id"]) == ("kafka.kafka-filter", spec["pluginName"])
    assert config["failure_policy"] == FAILURE_POLICY[spec["failStrategy"]] == "FAIL_RELOAD"
    assert config["configuration"]["value"] == go_json(spec["pluginConfig"])
    assert config["vm_config"]["code"]["remote"]["sha256"] == module_server.sha256
    assert "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION" in config["vm_config"]["environment_variables"]["key_values"]
    converted, error = agent_convert(resource, tmp_path)
    assert error is None
    vm = converted["typed_config"]["config"]["vm_config"]
    assert Path(vm["code"]["local"]["filename"]).read_bytes() == require_wasm().read_bytes()
    assert "environment_variables" not in vm   # only ISTIO_META_ ones: stripped, as the agent does
    # The agent unpacks a gzip tar (an image layer served as a file); the sha256 is the module's.
    packed = tenants_plugin(module_server, url=module_server.url(PACKED_PATH))
    converted, error = agent_convert(istiod_extension_config(packed), tmp_path / "packed")
    assert error is None, error
    filename = converted["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
    assert Path(filename).read_bytes() == require_wasm().read_bytes()
    # A WasmPlugin without failStrategy gets FAIL_CLOSE, the API's zero value.
    del packed["spec"]["failStrategy"]
    assert istiod_extension_config(packed)["typed_config"]["config"]["failure_policy"] == "FAIL_CLOSED"
    # Numbers as istiod writes a Struct: integral ones without a fraction, which the filter's
    # integer fields need.
    assert go_json({"max_frame_bytes": 104857600, "b": [0.5, 1e-7]}) == '{"b":[0.5,1e-7],"max_frame_bytes":104857600}'


@pytest.mark.parametrize("kind", list(CLIENT_OPS))
def test_the_tenants_overlay_runs_in_the_sidecar(kind, module_server, pki, sidecars, tmp_path):
    sidecar = start(sidecars, tmp_path, tenants_plugin(module_server), pki)
    assert sidecar.fetch_error is None
    envoy = sidecar.envoy
    assert envoy.ecds_counters()["config_reload"] == 1
    a, b = sidecar.client(kind, "team-a"), sidecar.client(kind, "team-b")
    with BrokerView(sidecar.broker.port) as view:
        view.create_topic("team-a.events", 1)
        view.create_topic("team-b.events", 1)
    a.produce("events", [b"a-0", b"a-1"])
    b.produce("events", [b"b-0"])
    assert a.list_topics() == {"events": 1}
    with BrokerView(sidecar.broker.port) as view:
        assert view.values("team-a.events") == [b"a-0", b"a-1"]
        assert view.values("team-b.events") == [b"b-0"]
        assert "events" not in view.topics()
    # The filter Istio named, running the plugin as Istio names it (its VM's stats).
    dump = envoy.admin_get("/config_dump?resource=ecds_filters")
    assert "extensions.istio.io/wasmplugin/kafka.kafka-filter" in dump and '"root_id": "kafka_filter"' in dump
    assert "wasm.kafka.kafka-filter.vm_reload_failure" in envoy.stats().values
    # Per-client series with their labels, through the sidecar's stats matcher and tags.
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 30,
               what="the clients' connections to close")

    def principals() -> set[str]:
        return {lb.get("kafka_principal") for lb, _ in
                envoy.prometheus().find("kafka_client_requests", kafka_client_id=CLIENT_ID, kafka_api="Produce")}

    wait_until(lambda: len(principals()) == 2, 20, what="Produce series for both principals")
    assert {p.split("_ns_")[1][:6] for p in principals()} == {"team-a", "team-b"}, principals()


@pytest.mark.parametrize("strategy,failure", [("FAIL_CLOSE", "unreachable"), ("FAIL_RELOAD", "checksum"),
                                              ("FAIL_OPEN", "checksum")])
def test_a_module_the_agent_cannot_fetch(strategy, failure, module_server, pki, sidecars, tmp_path):
    spec = {"failStrategy": strategy}
    if failure == "unreachable":
        spec["url"] = module_server.url("/kafka-filter/missing.wasm")
    else:
        spec["sha256"] = hashlib.sha256(b"another module").hexdigest()
    sidecar = start(sidecars, tmp_path, tenants_plugin(module_server, **spec), pki)
    assert sidecar.fetch_error, "the agent fetched a module it should not have"
    assert ("404" if failure == "unreachable" else "does not match") in sidecar.fetch_error
    envoy = sidecar.envoy
    assert envoy.ecds_counters()["config_reload"] == 1   # the RBAC filter the agent put in its place
    with BrokerView(sidecar.broker.port) as view:
        view.create_topic("team-a.events", 1)
    if strategy != "FAIL_OPEN":
        assert sidecar.refused("team-a")
        # Istio's stats tags make the RBAC outcome a label.
        assert envoy.prometheus().value("envoy_wasm_default_deny_rbac", authz_enforce_result="denied") >= 1
        assert set(sidecar.broker_topics()) == {"team-a.events"}
        return
    # FAIL_OPEN: the client is served without the filter, and its names are not converted.
    sidecar.client("rdkafka", "team-a").produce("events", [b"bypassed"])
    with BrokerView(sidecar.broker.port) as view:
        assert view.values("events") == [b"bypassed"]
        assert view.values("team-a.events") == []
    # (An RBAC filter without rules counts nothing: only the config dump shows it is there.)
    assert '"stat_prefix": "wasm-default-allow"' in envoy.admin_get("/config_dump?resource=ecds_filters")
    assert not envoy.kafka_stats()


def refused_plugin(server: ModuleServer, **spec) -> dict:
    """The tenants overlay with one mistake an operator makes: a size written with a unit."""
    plugin = tenants_plugin(server, **spec)
    plugin["spec"]["pluginConfig"]["max_frame_bytes"] = "100MiB"
    return plugin


@pytest.mark.parametrize("strategy", ["FAIL_OPEN", "FAIL_CLOSE"])
def test_a_refused_plugin_config_closes_connections(strategy, module_server, pki, sidecars, tmp_path):
    sidecar = start(sidecars, tmp_path, refused_plugin(module_server, failStrategy=strategy), pki)
    envoy = sidecar.envoy
    assert sidecar.fetch_error is None
    # Envoy 1.40 counts a refused resource in config_reload too; config_fail is the one to watch.
    counters = envoy.ecds_counters()
    assert (counters["update_rejected"], counters["config_fail"], counters["update_success"]) == (1, 1, 0), counters
    wait_until(lambda: "invalid plugin configuration at `max_frame_bytes`" in envoy.log_text(), 10,
               what="the filter's refusal, naming the field, in Envoy's log")
    assert sidecar.refused("team-a")
    assert envoy.connections_without_config() >= 1
    assert sidecar.broker_topics() == {}


def test_a_refused_update_keeps_the_running_filter(module_server, pki, sidecars, tmp_path):
    sidecar = start(sidecars, tmp_path, tenants_plugin(module_server), pki)
    envoy = sidecar.envoy
    resource, error = agent_convert(istiod_extension_config(refused_plugin(module_server), resource_version="2"),
                                    sidecar.cache)
    assert error is None
    envoy.deliver(resource)
    wait_until(lambda: envoy.ecds_counters()["update_rejected"] == 1, 20, what="Envoy to reject the update")
    counters = envoy.ecds_counters()
    assert (counters["update_success"], counters["config_fail"]) == (1, 1), counters
    with BrokerView(sidecar.broker.port) as view:
        view.create_topic("team-a.events", 1)
    sidecar.client("kafka-python", "team-a").produce("events", [b"still-converted"])
    with BrokerView(sidecar.broker.port) as view:
        assert view.values("team-a.events") == [b"still-converted"]
        assert "events" not in view.topics()


def test_a_wasmplugin_without_plugin_name_or_config_runs_with_the_defaults(module_server, pki, sidecars,
                                                                           tmp_path):
    """istiod then sends an empty root_id and an empty configuration (an Any with nothing in it,
    which Envoy hands the filter as zero bytes, as when it is left out)."""
    plugin = tenants_plugin(module_server)
    del plugin["spec"]["pluginName"], plugin["spec"]["pluginConfig"]
    config = istiod_extension_config(plugin)["typed_config"]["config"]
    assert config["root_id"] == "" and "configuration" not in config
    sidecar = start(sidecars, tmp_path, plugin, pki)
    with BrokerView(sidecar.broker.port) as view:
        view.create_topic("events", 1)
    sidecar.client("rdkafka", "team-a").produce("events", [b"plain"])
    with BrokerView(sidecar.broker.port) as view:
        assert view.values("events") == [b"plain"]
    wait_until(lambda: per_api(sidecar.envoy.kafka_stats()).get("Produce", 0) >= 1, 20,
               what="the filter to count the Produce")


def test_istio_stats_tags_add_a_label_to_a_client_id_ending_in_cache(module_server, pki, sidecars, tmp_path):
    """Istio's bootstrap tags `(cache\\.(.+?)\\.)` and `(component\\.(.+?)\\.)` are not anchored,
    so they apply to the filter's metric names too (the README says so): a client id ending in
    `cache` gets a `cache` label besides its own, which keep their values."""
    sidecar = start(sidecars, tmp_path, tenants_plugin(module_server), pki)
    with BrokerView(sidecar.broker.port) as view:
        view.create_topic("team-a.events", 1)
    CLIENT_OPS["rdkafka"](sidecar.envoy.bootstrap, "pricecache", tls=sidecar.tls("team-a")).produce(
        "events", [b"x"])

    def series():
        return sidecar.envoy.prometheus().find("kafka_client_requests", kafka_client_id="pricecache",
                                               kafka_api="Produce")

    (labels, value), = wait_until(series, 20, what="the client's Produce series")
    assert value >= 1 and labels.get("cache") == "principal", labels
    assert labels["kafka_principal"] == "spiffe___cluster_local_ns_team-a_sa_app", labels


def test_a_changed_plugin_config_reaches_new_connections_and_spares_open_ones(module_server, pki, sidecars,
                                                                              tmp_path):
    """The tenants overlay, then the base (no rules) delivered over ECDS: a connection opened
    before keeps converting, one opened after does not."""
    sidecar = start(sidecars, tmp_path, tenants_plugin(module_server), pki)
    envoy = sidecar.envoy
    with BrokerView(sidecar.broker.port) as view:
        view.create_topic("team-a.events", 1)
    with RawKafka(envoy.listener_port, client_id=CLIENT_ID, tls=sidecar.tls("team-a")) as before:
        assert metadata_partitions(before, "events") == {"events": 1}   # team-a.events, converted
        (base,) = [d for d in build("base") if d["kind"] == "WasmPlugin"]
        base["spec"].update({"url": module_server.url(), "sha256": module_server.sha256})
        resource, error = agent_convert(istiod_extension_config(base, resource_version="2"), sidecar.cache)
        assert error is None
        envoy.deliver(resource)
        wait_until(lambda: envoy.ecds_counters()["update_success"] == 2, 20, what="Envoy to take the update")
        with RawKafka(envoy.listener_port, client_id=CLIENT_ID, tls=sidecar.tls("team-a")) as after:
            assert metadata_partitions(after, "team-a.events") == {"team-a.events": 1}   # unconverted
            assert metadata_partitions(after, "events") == {}
        assert metadata_partitions(before, "events") == {"events": 1}
