"""Broker address rewrite: the broker advertises its own address (not Envoy's), and the filter
rewrites the broker endpoints in Metadata, FindCoordinator and DescribeCluster responses to the
Envoy listener (`broker_addresses`), so clients that bootstrap through Envoy never open a
connection to the broker directly.

One tansu broker (a multi-broker tansu cluster needs a shared storage engine this machine does
not run); several brokers are covered at the wire level in filter/tests/broker_addresses.rs, and
the shipped three-broker bootstrap (envoy-config/envoy-brokers.yaml) is booted with the one broker
behind it.
Checked from the client side: librdkafka's statistics list every broker connection it has (by
host:port), kafka-python's cluster metadata the brokers it knows; and beneath the libraries, no
TCP socket of this process (the clients run in it) is ever connected to the broker's port while
they run (sampled from /proc). From Envoy's side: every connection the listener accepted went to
the broker (the cluster's upstream connections equal the listener's). The control run without
the rewrite shows the checks can fail: there the client follows the broker's own address.
"""

from __future__ import annotations

import json

from broker_handles import DirectConnections, envoy_connections, kafka_python_brokers, rdkafka_brokers
from clients import CLIENT_OPS, BrokerView
from conftest import _stop_stacks, Stack, need_wasm
from harness import Broker, Envoy, free_ports, wasm_filters


def start(request, tmp_path, rewrite: bool):
    """A broker advertising its own port, behind an Envoy whose filter rewrites (or not)."""
    need_wasm()
    listener_port, admin_port, broker_port = free_ports(3)
    broker = Broker(workdir=tmp_path, port=broker_port)   # advertises itself
    stack = Stack("filter", broker)
    stacks = [stack]
    broker.start()
    with BrokerView(broker.port) as view:
        (node,) = view.node_ids()
    config = {"client_metrics": {}}
    if rewrite:
        config["broker_addresses"] = {"map": {str(node): f"127.0.0.1:{listener_port}"}}
    stack.envoy = Envoy(broker_port, plugin_config=config, workdir=tmp_path, listener_port=listener_port,
                        admin_port=admin_port)
    stack.envoy.start()
    return stacks, stack, node


def test_rdkafka_never_connects_to_the_broker_directly(request, tmp_path):
    stacks, stack, node = start(request, tmp_path, rewrite=True)
    try:
        with BrokerView(stack.broker.port) as view:
            view.create_topic("addr", 1)
        with DirectConnections(stack.broker.port) as direct:
            seen = rdkafka_brokers(stack.bootstrap, "addr")
        print(f"librdkafka broker handles: {seen}")
        assert seen, "no broker handle was up"
        assert not direct.seen, f"sockets connected to the broker directly: {direct.seen}"
        accepted, forwarded = envoy_connections(stack.envoy)
        assert accepted >= 2 and forwarded == accepted, (accepted, forwarded)
        assert all(f":{stack.envoy.listener_port}/" in s for s in seen), seen
        assert not any(f":{stack.broker.port}/" in s for s in seen), seen
        stats = stack.envoy.kafka_stats()
        assert stats.get("kafka.broker_addresses_rewritten", 0) > 0, stats
        assert not stats.get("kafka.broker_addresses_unmapped"), stats
    finally:
        _stop_stacks(request, stacks)


def test_without_the_rewrite_clients_follow_the_brokers_own_address(request, tmp_path):
    """The control: the same client, no `broker_addresses`: it connects to the broker itself."""
    stacks, stack, node = start(request, tmp_path, rewrite=False)
    try:
        with BrokerView(stack.broker.port) as view:
            view.create_topic("addr", 1)
        with DirectConnections(stack.broker.port) as direct:
            seen = rdkafka_brokers(stack.bootstrap, "addr")
        assert any(f":{stack.broker.port}/" in s for s in seen), seen
        assert direct.seen, "the sampler saw no direct connection where librdkafka reports one"
    finally:
        _stop_stacks(request, stacks)


def test_kafka_python_sees_only_envoy(request, tmp_path):
    stacks, stack, node = start(request, tmp_path, rewrite=True)
    try:
        with DirectConnections(stack.broker.port) as direct:
            CLIENT_OPS["kafka-python"](stack.bootstrap, "addr-kp").create_topic("addr-kp", 1)
            brokers = kafka_python_brokers(stack.bootstrap, "addr-kp")
        assert not direct.seen, f"sockets connected to the broker directly: {direct.seen}"
        accepted, forwarded = envoy_connections(stack.envoy)
        assert accepted >= 2 and forwarded == accepted, (accepted, forwarded)
        assert brokers == {f"127.0.0.1:{stack.envoy.listener_port}/{node}"}, brokers
    finally:
        _stop_stacks(request, stacks)


def test_the_shipped_three_broker_bootstrap_carries_traffic(request, tmp_path):
    """envoy-config/envoy-brokers.yaml itself (ports rewritten to free ones): its bootstrap
    listener and three broker listeners, one filter configuration shared through a YAML anchor.
    One tansu broker stands behind every cluster, so its broker id (tansu has one, fixed) takes
    the map entry of broker 1: clients bootstrap through the bootstrap listener, are sent to
    broker 1's listener and use only that one."""
    need_wasm()
    admin_port, broker_port, *listener_ports = free_ports(6)
    broker = Broker(workdir=tmp_path, port=broker_port)   # advertises itself
    stack = Stack("filter", broker)
    stacks = [stack]
    try:
        broker.start()
        with BrokerView(broker.port) as view:
            (node,) = view.node_ids()
            view.create_topic("three", 1)
        envoy = Envoy(broker_port, config="envoy-brokers.yaml", workdir=tmp_path, admin_port=admin_port,
                      listener_port=listener_ports[0])
        listeners = envoy.cfg["static_resources"]["listeners"]
        assert [ls["name"] for ls in listeners] == ["kafka_bootstrap", "kafka_broker_1", "kafka_broker_2",
                                                    "kafka_broker_3"]
        for listener, port in zip(listeners, listener_ports):
            listener["address"]["socket_address"]["port_value"] = port
        for cluster in envoy.cfg["static_resources"]["clusters"]:
            for group in cluster["load_assignment"]["endpoints"]:
                for ep in group["lb_endpoints"]:
                    ep["endpoint"]["address"]["socket_address"]["port_value"] = broker_port
        (flt,) = {id(f): f for f in wasm_filters(envoy.cfg)}.values()   # one object: the anchor
        value = flt["typed_config"]["config"]["configuration"]
        shipped = json.loads(value["value"])
        assert sorted(shipped["broker_addresses"]["map"]) == ["1", "2", "3"], shipped
        value["value"] = json.dumps({**shipped, "broker_addresses": {"map": {
            str(node): f"127.0.0.1:{listener_ports[1]}", "2": f"127.0.0.1:{listener_ports[2]}",
            "3": f"127.0.0.1:{listener_ports[3]}"}}})
        envoy._write_bootstrap()
        stack.envoy = envoy
        envoy.start()
        with DirectConnections(broker.port) as direct:
            seen = rdkafka_brokers(envoy.bootstrap, "three")
        assert seen and all(f":{listener_ports[1]}/" in s for s in seen), seen
        assert not direct.seen, direct.seen
        s = envoy.stats()
        accepted = {name: s.get(f"listener.127.0.0.1_{port}.downstream_cx_total")
                    for name, port in zip(["bootstrap", "1", "2", "3"], listener_ports)}
        assert accepted["bootstrap"] >= 1 and accepted["1"] >= 2, accepted
        assert accepted["2"] == accepted["3"] == 0, accepted
        assert envoy.kafka_stats().get("kafka.broker_addresses_rewritten", 0) > 0
    finally:
        _stop_stacks(request, stacks)
