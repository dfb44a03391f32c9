#!/usr/bin/env python3
"""Kafka-style ACLs in front of a broker that has none, with the Kafka filter.

Starts a tansu broker and an Envoy (envoy-config/envoy.yaml) whose Kafka filter has this policy
(identities by client id here; behind Istio the same entries match SPIFFE ids, see
istio/wasmplugin-acls.yaml):

    team-a-app: everything on topics, groups and transactional ids `team-a.*`
    team-b-app: the same on `team-b.*`, and Write on `shared.*`
    both:       Read and Describe on `shared.*`
    anything else: denied (default deny)

Each team creates, produces to and consumes its own topic. Then team-a produces to its topic and
to `shared.news` in one producer (one Produce request carries both: the filter forwards team-a's
records and answers TOPIC_AUTHORIZATION_FAILED for `shared.news`), tries team-b's topic, group
and transactional id, and creates a topic under team-b's prefix. It prints what each team saw,
what is physically on the broker (read directly, not through Envoy), the audit log and the ACL
counters. Exits 1 if anything is not as it should be.

    .venv/bin/python examples/acls.py [--client rdkafka|kafka-python]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenario import Broker, Checks, Envoy, main, step  # noqa: E402
from clients import CLIENT_OPS, BrokerView  # noqa: E402


def team(client_id: str, prefix: str) -> list[dict]:
    return [{"match": {"client_id": {"exact": client_id}}, "permission": "allow", "operations": ["All"],
             "resource_type": t, "pattern_type": "prefixed", "name": prefix}
            for t in ("topic", "group", "transactional_id")]


POLICY = {"acls": {"default": "deny", "entries": [
    *team("team-a-app", "team-a."),
    *team("team-b-app", "team-b."),
    {"match": {"client_id": {"prefix": "team-"}}, "permission": "allow", "operations": ["Read", "Describe"],
     "resource_type": "topic", "pattern_type": "prefixed", "name": "shared."},
    {"match": {"client_id": {"exact": "team-b-app"}}, "permission": "allow", "operations": ["Write"],
     "resource_type": "topic", "pattern_type": "prefixed", "name": "shared."},
]}}


def attempt(f):
    try:
        return f(), None
    except Exception as e:  # noqa: BLE001 - the error is what is shown
        return None, f"{type(e).__name__}: {str(e)[:120]}"


def scenario(client: str, broker: Broker, envoy: Envoy, check: Checks) -> None:
    Ops = CLIENT_OPS[client]
    a, b = Ops(envoy.bootstrap, "team-a-app"), Ops(envoy.bootstrap, "team-b-app")
    with BrokerView(broker.port) as view:
        view.create_topic("shared.news", 1)
    step(f"{client}: each team creates its `events` topic, produces to it and consumes it with its group")
    a.create_topic("team-a.events", 1)
    b.create_topic("team-b.events", 1)
    a.produce("team-a.events", [b"a-0", b"a-1"])
    b.produce("team-b.events", [b"b-0"])
    b.produce("shared.news", [b"news-0"])
    a_got, _ = a.consume("team-a.events", "team-a.readers", 2)
    b_got, _ = b.consume("team-b.events", "team-b.readers", 1)
    a_topics, b_topics = a.list_topics(), b.list_topics()
    a_groups = a.list_groups()

    step("team-a: one producer to `team-a.events` and `shared.news` (may read it, not write it)")
    _, mixed_err = attempt(lambda: a.produce_to([("team-a.events", b"a-2"), ("shared.news", b"a-news"),
                                                 ("team-a.events", b"a-3")], linger_ms=200, timeout=20))
    step("team-a goes for team-b's topic, group and transactional id, and creates a topic under team-b's prefix")
    _, prod_err = attempt(lambda: a.produce("team-b.events", [b"intruder"], timeout=10))
    _, group_err = attempt(lambda: a.consume("shared.news", "team-b.readers", 1, timeout=10))

    def txn():
        t = a.transactional_producer("team-b.tx")
        try:
            t.init()
        finally:
            t.close()
    _, txn_err = attempt(txn)
    _, create_err = attempt(lambda: a.create_topic("team-b.sneaky", 1, timeout=10))

    print()
    print("What each team saw (through Envoy)")
    print(f"  team-a topics: {sorted(a_topics)}   groups: {sorted(a_groups)}")
    print(f"  team-b topics: {sorted(b_topics)}")
    print(f"  team-a consumed {[m.value for m in a_got]}, team-b consumed {[m.value for m in b_got]}")
    print(f"  team-a, produce to team-a.events + shared.news: {mixed_err}")
    print(f"  team-a, produce to team-b.events:               {prod_err}")
    print(f"  team-a, consume with group team-b.readers:      {group_err}")
    print(f"  team-a, transactional id team-b.tx:             {txn_err}")
    print(f"  team-a, create topic team-b.sneaky:             {create_err}")

    print()
    print(f"What is physically on the broker (read directly from 127.0.0.1:{broker.port}, not through Envoy)")
    with BrokerView(broker.port) as view:
        topics = view.topics()
        a_phys, b_phys, news = view.values("team-a.events"), view.values("team-b.events"), view.values("shared.news")
    print(f"  topics: {sorted(topics)}")
    print(f"  team-a.events {a_phys}, team-b.events {b_phys}, shared.news {news}")

    marker = "kafka_audit "
    wanted = {"shared.news", "team-b.events", "team-b.readers", "team-b.tx", "team-b.sneaky"}

    def audit_lines() -> list[dict]:
        return [json.loads(ln.split(marker, 1)[1]) for ln in envoy.log_text().splitlines() if marker in ln]

    # Envoy writes its log file every few seconds.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not wanted <= {x["resource"] for x in audit_lines()}:
        time.sleep(0.5)
    audit = audit_lines()
    denials = [x for x in audit if x["event"] == "denied"]
    seen: dict[tuple, list[dict]] = {}
    for x in denials:
        seen.setdefault((x["client_id"], x["api"], x["operation"], x["resource_type"], x["resource"]), []).append(x)
    print()
    print(f"Audit log: {len(audit)} lines ({sum(x['event'] == 'connection' for x in audit)} connections, "
          f"{sum(x['event'] == 'admin' for x in audit)} administrative operations); the denials:")
    for (cid, api, op, rt, res), xs in seen.items():
        print(f"  {xs[0]['time']} {cid:>10} {api:>15} {op:>10} {rt}:{res}" + (f"  (x{len(xs)})" if len(xs) > 1 else ""))
    stats = envoy.kafka_stats()
    print("ACL counters:")
    for k, v in sorted(stats.items()):
        if k.startswith("kafka.acl") and v:
            print(f"  {k} = {int(v)}")

    print()
    print("Checks")
    check(set(a_topics) == {"team-a.events", "shared.news"}, "team-a sees its topic and the shared one only")
    check(set(b_topics) == {"team-b.events", "shared.news"}, "team-b sees its topic and the shared one only")
    check(a_groups <= {"team-a.readers"}, "team-a lists only its own groups")
    check(sorted(a_phys) == [b"a-0", b"a-1", b"a-2", b"a-3"], "team-a's records landed, also those sent with a denied one")
    check(news == [b"news-0"], "nothing of team-a's reached shared.news")
    check(b_phys == [b"b-0"], "team-b's topic has team-b's record only")
    check("team-b.sneaky" not in topics, "team-a could not create a topic under team-b's prefix")
    check(mixed_err is not None and "authoriz" in mixed_err.lower(), "the shared partition got TOPIC_AUTHORIZATION_FAILED")
    check(all(e is not None for e in (prod_err, group_err, txn_err, create_err)), "every intrusion failed")
    check({d["resource"] for d in denials} >= wanted, "every denial is in the audit log")


if __name__ == "__main__":
    sys.exit(main(__doc__, "acls", POLICY, scenario))
