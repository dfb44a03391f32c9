"""Plain Envoy fetching the module itself (`vm_config.code.remote`: an HTTP URL through a cluster,
with the module's sha256), with envoy-config/envoy.yaml otherwise as shipped.

Observed with Envoy 1.40: the right module is fetched once at start and the filter runs; a
checksum that does not match leaves the filter unloaded, and with the shipped FAIL_RELOAD every
connection is then closed (nothing reaches the broker), never passed through. Envoy 1.40 also logs
at start that remote code fetch "is unstable and may cause a crash", which is why the README
recommends a file (a volume) over it.
"""

from __future__ import annotations

import hashlib

from clients import CLIENT_OPS, BrokerView, closed_without_answer
from conftest import Stack, _stop_stacks
from harness import Broker, Envoy, free_ports, per_api, static_cluster, wait_until, wasm_filters
from module_server import ModuleServer

UNSTABLE = "Wasm remote code fetch is unstable and may cause a crash"


def remote_stack(request, tmp_path, server: ModuleServer, sha256: str) -> tuple[list, Stack]:
    listener_port, admin_port, broker_port = free_ports(3)
    port = server.server.server_address[1]
    cluster = static_cluster("kafka_filter_module", port)
    envoy = Envoy(broker_port, workdir=tmp_path, listener_port=listener_port, admin_port=admin_port,
                  extra_clusters=[cluster], log_level="info")
    for flt in wasm_filters(envoy.cfg):
        flt["typed_config"]["config"]["vm_config"]["code"] = {"remote": {
            "http_uri": {"uri": server.url(), "cluster": "kafka_filter_module", "timeout": "10s"},
            "sha256": sha256, "retry_policy": {"num_retries": 3}}}
    envoy._write_bootstrap()
    stack = Stack("filter-remote", Broker(workdir=tmp_path, port=broker_port, advertised_port=listener_port), envoy)
    stacks = [stack]
    try:
        stack.start()
    except BaseException:
        _stop_stacks(request, stacks)
        raise
    return stacks, stack


def test_the_module_fetched_by_envoy_runs(request, tmp_path, module_server):
    stacks, stack = remote_stack(request, tmp_path, module_server, module_server.sha256)
    try:
        with BrokerView(stack.broker.port) as view:
            view.create_topic("remote", 1)
        CLIENT_OPS["rdkafka"](stack.bootstrap, "remote").produce("remote", [b"r-0", b"r-1"])
        with BrokerView(stack.broker.port) as view:
            assert view.values("remote") == [b"r-0", b"r-1"]
        wait_until(lambda: per_api(stack.envoy.kafka_stats()).get("Produce", 0) >= 1, 20,
                   what="the filter to count the Produce requests")
        s = stack.envoy.stats()
        assert s.get("wasm.remote_load_fetch_successes") == 1 and not s.get("wasm.remote_load_fetch_failures")
        stack.envoy.stop()   # flushes Envoy's log file
        assert UNSTABLE in stack.envoy.log_text()
    finally:
        _stop_stacks(request, stacks)


def test_a_module_that_does_not_match_its_sha256_closes_every_connection(request, tmp_path, module_server):
    stacks, stack = remote_stack(request, tmp_path, module_server, hashlib.sha256(b"another").hexdigest())
    try:
        for _ in range(3):
            assert closed_without_answer(stack.envoy.listener_port, "remote")
        assert stack.envoy.stats().get("wasm.remote_load_fetch_failures") >= 1
        assert not stack.envoy.kafka_stats()
        with BrokerView(stack.broker.port) as view:
            assert view.topics() == {}
    finally:
        _stop_stacks(request, stacks)
