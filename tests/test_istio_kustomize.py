"""istio/kustomize: a base (the WasmPlugin observing, PeerAuthentication STRICT) and overlays
(canary, tenants), built with `kubectl kustomize` (Debian's kubectl, in .deps), every output
document validated against Istio's schemas, and every pluginConfig accepted by the built filter
(through a real Envoy's `--mode validate`, as for istio/*.yaml).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from harness import REPO
from test_istio_manifests import envoy_accepts, schema_check

KUBECTL = REPO / ".deps" / "kubectl" / "usr" / "bin" / "kubectl"
KUSTOMIZE = REPO / "istio" / "kustomize"
TARGETS = ["base", "overlays/canary", "overlays/tenants"]


def build(target: str) -> list[dict]:
    if not KUBECTL.exists():
        pytest.fail("kubectl missing: run `make kubectl-deps` (part of `make e2e`)")
    proc = subprocess.run([str(KUBECTL), "kustomize", str(KUSTOMIZE / target)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("target", TARGETS)
def test_each_build_validates_and_its_plugin_config_is_accepted(target, tmp_path):
    docs = build(target)
    assert {d["kind"] for d in docs} == {"WasmPlugin", "PeerAuthentication"}
    results = schema_check(docs)
    assert all(r["ok"] for r in results), results
    (plugin,) = [d for d in docs if d["kind"] == "WasmPlugin"]
    assert plugin["spec"]["type"] == "NETWORK" and plugin["spec"]["failStrategy"] != "FAIL_OPEN"
    ok, message = envoy_accepts(plugin["spec"]["pluginConfig"], tmp_path)
    assert ok, message


def test_overlays_add_their_rules_to_the_base():
    base = next(d for d in build("base") if d["kind"] == "WasmPlugin")["spec"]["pluginConfig"]
    assert "rules" not in base
    for target, names in (("overlays/canary", ["checkout-canary"]), ("overlays/tenants", ["team-a", "team-b"])):
        cfg = next(d for d in build(target) if d["kind"] == "WasmPlugin")["spec"]["pluginConfig"]
        assert [r["name"] for r in cfg["rules"]] == names
        assert cfg["client_metrics"] == base["client_metrics"], "the base's settings stay"
