"""What the runnable name-conversion scenarios (canary.py, tenants.py) share: a tansu broker and an
Envoy with the Kafka filter and the scenario's rules, a list of checks printed as they are made,
and the exit code (0 all passed, 1 a check failed, 2 the environment is missing something)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from clients import CLIENT_OPS  # noqa: E402
from harness import Broker, Envoy, HarnessError, free_ports, require_wasm, wait_until  # noqa: E402


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failed.append(what)

    def exit_code(self) -> int:
        """Prints the verdict: 0 when every check passed, else 1."""
        print()
        if self.failed:
            print(f"FAILED: {len(self.failed)} check(s)")
            return 1
        print("all checks passed")
        return 0


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def fmt_topics(t: dict[str, int]) -> str:
    return ", ".join(f"{k} ({v} partition{'' if v == 1 else 's'})" for k, v in sorted(t.items())) or "-"


def span(vals: list[bytes]) -> str:
    vs = sorted(v.decode(errors="replace") for v in vals)
    return f"{len(vs)}: {vs[0]} .. {vs[-1]}" if vs else "0"


def rewrite_counters(envoy: Envoy) -> dict[str, float]:
    """Once every client connection has closed: the filter's counters, with the rewrite ones
    printed."""
    wait_until(lambda: envoy.kafka_stats().get("kafka.connections_active", 0) == 0, 30,
               what="client connections to close")
    stats = envoy.settled_kafka_stats()
    print()
    print("The filter's rewrite counters (Envoy /stats, wasmcustom.kafka.rewrite.*)")
    for k in ("requests", "responses", "refused", "errors", "bytes_held"):
        print(f"  kafka.rewrite.{k:12} {int(stats.get(f'kafka.rewrite.{k}', 0))}")
    return stats


# body(client, broker, envoy, check): the scenario itself, with both processes running.
Body = Callable[[str, Broker, Envoy, Checks], None]


def run(name: str, rules: dict, body: Body, client: str) -> int:
    require_wasm()
    workdir = Path(tempfile.mkdtemp(prefix=f"kafka-filter-{name}-"))
    listener_port, admin_port, broker_port = free_ports(3)
    broker = Broker(workdir=workdir, port=broker_port, advertised_port=listener_port)
    # The audit log (ACLs) is written through Envoy's wasm log, at info.
    envoy = Envoy(broker_port, plugin_config=rules, workdir=workdir, listener_port=listener_port,
                  admin_port=admin_port, component_log_level="wasm:info" if "acls" in rules else None)
    check = Checks()
    try:
        entries = [(kind, e) for kind in ("rules", "limits") for e in rules.get(kind, [])]
        entries += [("acls", e) for e in rules.get("acls", {}).get("entries", [])]
        what = " and ".join(sorted({k for k, _ in entries}))
        step(f"tansu on 127.0.0.1:{broker_port}, Envoy on 127.0.0.1:{listener_port} with the {what}:")
        for _, e in entries:
            print("    " + json.dumps(e))
        broker.start()
        envoy.start()
        body(client, broker, envoy, check)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported with the logs
        check(False, f"the scenario ran to the end ({e!r})")
        envoy.stop()
        print(envoy.log_tail(30), file=sys.stderr)
    finally:
        envoy.stop()
        broker.stop()
        print(f"(logs in {workdir})")
    return check.exit_code()


def cli(doc: str | None, scenario: Callable[[str], int]) -> int:
    """Runs scenario(client) with the client library `--client` names; 2 when the environment
    is missing something."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client", choices=sorted(CLIENT_OPS), default="rdkafka",
                    help="client library: rdkafka (confluent-kafka) or kafka-python (default rdkafka)")
    args = ap.parse_args()
    try:
        return scenario(args.client)
    except HarnessError as e:
        print(e, file=sys.stderr)
        return 2


def main(doc: str | None, name: str, rules: dict, body: Body) -> int:
    return cli(doc, lambda client: run(name, rules, body, client))
