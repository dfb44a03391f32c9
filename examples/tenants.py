#!/usr/bin/env python3
"""Two tenants on one Kafka broker, each with its own namespace, with the Kafka filter's topic rules.

Starts a tansu broker and an Envoy (envoy-config/envoy.yaml) whose Kafka filter has two rules:

    client ids `team-a-*`: every topic, consumer group and transactional id `x` is `team-a.x`
    client ids `team-b-*`: likewise with `team-b.`

Both teams create a topic `events` with their own configuration, produce to it and consume it with
consumer group `g`. Then team-a tries to reach team-b's data by its physical name `team-b.events`
(describe its configuration, fetch from it, produce to it, commit offsets on it) and to alter a
topic configuration (IncrementalAlterConfigs, an API the filter does not rewrite). It prints what
each team saw, what is physically on the broker (read over a direct connection, not through Envoy)
and the filter's counters. Exits 1 if anything is not as it should be.

    .venv/bin/python examples/tenants.py [--client rdkafka|kafka-python]
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenario import Broker, Checks, Envoy, fmt_topics, main, rewrite_counters, span, step  # noqa: E402
from clients import CLIENT_OPS, BrokerView  # noqa: E402

RULES = {"rules": [
    {"name": "team-a", "match": {"client_id": {"prefix": "team-a-"}}, "topics": {"prefix": "team-a."}},
    {"name": "team-b", "match": {"client_id": {"prefix": "team-b-"}}, "topics": {"prefix": "team-b."}},
]}


def attempt(f):
    """(result, None) or (None, short error)."""
    try:
        return f(), None
    except Exception as e:  # noqa: BLE001 - the error is what is shown
        return None, f"{type(e).__name__}: {str(e)[:140]}"


def scenario(client: str, broker: Broker, envoy: Envoy, check: Checks) -> None:
    Ops = CLIENT_OPS[client]
    a, b = Ops(envoy.bootstrap, "team-a-app"), Ops(envoy.bootstrap, "team-b-app")
    pool = concurrent.futures.ThreadPoolExecutor(2)

    def both(f, g):
        x, y = pool.submit(f), pool.submit(g)
        return x.result(), y.result()

    step(f"{client}: team-a creates `events` (1 partition, retention.ms=111111), "
         "team-b creates `events` (2 partitions, retention.ms=222222)")
    a.create_topic("events", 1, {"retention.ms": "111111"})
    b.create_topic("events", 2, {"retention.ms": "222222"})
    av = [f"team-a-{i:03d}".encode() for i in range(10)]
    bv = [f"team-b-{i:03d}".encode() for i in range(11)]
    step("both produce to `events` and consume it with consumer group `g`, at the same time")
    a_del, b_del = both(lambda: a.produce("events", av), lambda: b.produce("events", bv))
    (a_got, a_com), (b_got, b_com) = both(lambda: a.consume("events", "g", len(av)),
                                          lambda: b.consume("events", "g", len(bv)))
    a_topics, b_topics = a.list_topics(), b.list_topics()
    a_groups, b_groups = a.list_groups(), b.list_groups()
    a_cfg = a.describe_configs("events")

    step("team-a goes for team-b's data by its physical name `team-b.events`")
    x_cfg, x_cfg_err = attempt(lambda: a.describe_configs("team-b.events"))
    x_fetch, x_fetch_err = attempt(lambda: a.fetch_assigned("team-b.events", 2, seconds=2.0))
    x_prod, x_prod_err = attempt(lambda: a.produce("team-b.events", [b"team-a-intruder"], timeout=15))
    x_commit, x_commit_err = attempt(lambda: a.commit_offsets("team-b.g", "team-b.events", {0: 1, 1: 1}))
    refused_before = envoy.kafka_stats().get("kafka.rewrite.refused", 0)
    _, x_alter_err = attempt(lambda: a.alter_topic_config("events", "retention.ms", "1"))
    refused = envoy.kafka_stats().get("kafka.rewrite.refused", 0) - refused_before

    print()
    print("What each team saw (through Envoy)")
    rows = [
        ("topics in metadata", fmt_topics(a_topics), fmt_topics(b_topics)),
        ("delivery reports", f"{len(a_del)} to {sorted({d.topic for d in a_del})}",
         f"{len(b_del)} to {sorted({d.topic for d in b_del})}"),
        ("consumed (group g)", f"{span([m.value for m in a_got])}", f"{span([m.value for m in b_got])}"),
        ("committed offsets", ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(a_com.items())),
         ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(b_com.items()))),
        ("consumer groups listed", ", ".join(sorted(a_groups)), ", ".join(sorted(b_groups))),
    ]
    w = max(len(x) for _, x, _ in rows) + 2
    print(f"  {'':24} {'team-a (team-a-app)':{w}} team-b (team-b-app)")
    for name, x, y in rows:
        print(f"  {name:24} {x:{w}} {y}")
    print(f"  team-a's `events` configuration: retention.ms={a_cfg.get('retention.ms')}")
    print()
    print("team-a on `team-b.events` (the filter makes it team-a.team-b.events: team-a's own namespace)")
    print(f"  describe configs : {x_cfg if x_cfg_err is None else x_cfg_err}")
    fetched = [] if x_fetch is None else x_fetch[0]
    print(f"  fetch            : {len(fetched)} messages" + (f" ({x_fetch_err})" if x_fetch_err else ""))
    print(f"  produce          : {'delivered to ' + str(sorted({d.topic for d in x_prod})) if x_prod else x_prod_err}")
    print(f"  commit (team-b.g): {'ok' if x_commit_err is None else x_commit_err}")
    print(f"  alter config     : {x_alter_err or 'succeeded?!'}"
          f"  (kafka.rewrite.refused +{int(refused)})")

    print()
    print(f"What is physically on the broker (read directly from 127.0.0.1:{broker.port}, not through Envoy)")
    with BrokerView(broker.port) as view:
        b_topics_phys = view.topics()
        phys_a, phys_b = view.values("team-a.events"), view.values("team-b.events")
        groups = view.groups()
        b_committed = view.committed("team-b.g", "team-b.events", 2)
        b_config = view.topic_configs("team-b.events")
        intruder = view.values("team-a.team-b.events") if "team-a.team-b.events" in b_topics_phys else []
    print(f"  topics : {fmt_topics(b_topics_phys)}")
    print(f"  team-a.events records {span(phys_a)}")
    print(f"  team-b.events records {span(phys_b)}   retention.ms={b_config.get('retention.ms')}")
    if intruder:
        print(f"  team-a.team-b.events records {span(intruder)}")
    print(f"  groups : {', '.join(sorted(groups))}")
    print(f"  team-b.g committed on team-b.events {b_committed}")

    stats = rewrite_counters(envoy)

    b_counts: dict[int, int] = {}
    for d in b_del:
        b_counts[d.partition] = max(b_counts.get(d.partition, 0), d.offset + 1)
    print()
    print("Checks")
    check(a_topics == {"events": 1} and b_topics == {"events": 2},
          "each team lists only its own `events`, without prefix")
    check(a_groups == {"g"} and b_groups == {"g"}, "each team lists only its own group `g`")
    check(sorted(m.value for m in a_got) == sorted(av) and sorted(m.value for m in b_got) == sorted(bv),
          "each team consumed exactly its own messages")
    check(sorted(phys_a) == sorted(av) and sorted(phys_b) == sorted(bv),
          "physically: team-a.events and team-b.events, each with its own team's messages only")
    check({"team-a.g", "team-b.g"} <= groups, "physically: groups team-a.g and team-b.g")
    check(a_cfg.get("retention.ms") == "111111", "team-a describes its own `events`")
    check("222222" not in json.dumps(x_cfg), "team-a never read team-b's configuration")
    check(not [m for m in fetched if (m.value or b"").startswith(b"team-b")], "team-a never fetched team-b's messages")
    check(b_committed == b_counts, "team-b's committed offsets are untouched")
    check(b_config.get("retention.ms") == "222222", "team-b's topic configuration is untouched")
    check(x_alter_err is not None and (refused > 0 or "unsupported" in x_alter_err.lower() or "not supported" in x_alter_err
                                     or "Incompatible" in x_alter_err),
          "altering a topic configuration (not rewritten) fails under the rule")
    check(not stats.get("kafka.rewrite.errors"), "no rewrite errors")


if __name__ == "__main__":
    sys.exit(main(__doc__, "tenants", RULES, scenario))
