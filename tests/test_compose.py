"""examples/docker-compose.yaml, for users with Docker: checked with `docker-compose config` (no
container engine runs here), and the Envoy configuration it mounts is booted as is (the same file,
envoy-config/envoy-compose.yaml, with its ports and the broker's address made local) in front of a
real broker that advertises its own address, carrying real traffic.
"""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from clients import CLIENT_OPS, BrokerView
from conftest import Stack, _stop_stacks, need_wasm
from harness import REPO, Broker, Envoy, free_ports, load_config, plugin_configuration

COMPOSE_FILE = REPO / "examples" / "docker-compose.yaml"
COMPOSE = REPO / ".deps" / "compose" / "usr" / "bin" / "docker-compose"
ENVOY_FILE = REPO / "envoy-config" / "envoy-compose.yaml"


def compose_config() -> dict:
    if not COMPOSE.exists():
        raise AssertionError("docker-compose missing: run `make compose-deps` (part of `make e2e`)")
    env = {**os.environ, "PYTHONPATH": str(REPO / ".deps" / "compose" / "usr" / "lib" / "python3" / "dist-packages")}
    proc = subprocess.run([sys.executable, str(COMPOSE), "-f", str(COMPOSE_FILE), "config"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_compose_file_is_valid_and_mounts_the_tested_envoy_config():
    cfg = compose_config()
    assert set(cfg["services"]) == {"kafka", "envoy", "prometheus"}
    mounts = {}
    for v in cfg["services"]["envoy"]["volumes"]:
        src, dst = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        mounts[dst] = os.path.realpath(src)
    assert mounts["/etc/envoy/envoy.yaml"] == os.path.realpath(ENVOY_FILE)
    assert mounts["/etc/envoy/kafka_filter.wasm"] == os.path.realpath(
        REPO / "target" / "wasm32-wasip1" / "release" / "kafka_filter.wasm")
    # The broker advertises itself; the filter hands clients the published listener instead.
    env = cfg["services"]["kafka"]["environment"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    plugin = yaml.safe_load(plugin_configuration(load_config(ENVOY_FILE)))
    # "host_ip:published:target" or "published:target" (or the long form).
    published = {str(p["published"]) if isinstance(p, dict) else p.split(":")[-2]
                 for p in cfg["services"]["envoy"]["ports"]}
    assert plugin["broker_addresses"]["map"] == {env["KAFKA_NODE_ID"]: "localhost:19092"}
    assert {"19092", "9901"} <= {str(p) for p in published}


def test_the_mounted_envoy_config_carries_traffic(request, tmp_path):
    """The compose Envoy file booted here: its filter configuration with the broker address
    pointed at this test's listener (the broker here is tansu, with its own node id)."""
    need_wasm()
    listener_port, admin_port, broker_port = free_ports(3)
    broker = Broker(workdir=tmp_path, port=broker_port)
    stacks = [Stack("filter", broker)]
    try:
        broker.start()
        with BrokerView(broker.port) as view:
            from kafka.protocol.metadata import MetadataRequest
            (node,) = [b.node_id for b in view.call(MetadataRequest(topics=[], allow_auto_topic_creation=False), 4).brokers]
        plugin = yaml.safe_load(plugin_configuration(load_config(ENVOY_FILE)))
        plugin["broker_addresses"]["map"] = {str(node): f"127.0.0.1:{listener_port}"}
        stacks[0].envoy = Envoy(broker_port, config=ENVOY_FILE, plugin_config=plugin, workdir=tmp_path,
                                listener_port=listener_port, admin_port=admin_port)
        stacks[0].envoy.start()
        ops = CLIENT_OPS["rdkafka"](stacks[0].envoy.bootstrap, "compose-app")
        ops.create_topic("compose", 1)
        ops.produce("compose", [b"x", b"y"])
        got, _ = ops.consume("compose", "compose-group", 2)
        assert sorted(m.value for m in got) == [b"x", b"y"]
        stats = stacks[0].envoy.kafka_stats()
        assert stats.get("kafka.broker_addresses_rewritten", 0) > 0, stats
        assert not stats.get("kafka.broker_addresses_unmapped"), stats
    finally:
        _stop_stacks(request, stacks)
