"""The shipped Istio manifests (istio/*.yaml), checked the way a user's cluster would check them.

- Every document validates against Istio's CRD schemas (@kubernetes-models/istio, generated from
  Istio's own CRDs; installed by `make test` into tests/istio/node_modules).
- Every WasmPlugin is a NETWORK plugin, and its pluginConfig is accepted by the built filter:
  istiod hands pluginConfig to the filter as the JSON `configuration`, so the same document goes
  through a real Envoy's `--mode validate` with the built .wasm, which runs the filter's
  on_configure.
- The schema check can fail: a broken WasmPlugin is rejected with the field named.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import ENVOY_CONFIG_DIR, REPO, envoy_bin, require_wasm, rewrite_config
from validate_configs import run_validate

ISTIO_DIR = REPO / "istio"
VALIDATOR = REPO / "tests" / "istio" / "validate.mjs"
NODE_MODULES = REPO / "tests" / "istio" / "node_modules" / "@kubernetes-models" / "istio"
MANIFESTS = sorted(ISTIO_DIR.glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def schema_check(docs: list[dict]) -> list[dict]:
    if not NODE_MODULES.is_dir():
        pytest.fail(f"{NODE_MODULES} missing: `make test` installs it (npm ci --prefix tests/istio)")
    proc = subprocess.run(["node", str(VALIDATOR)], input=json.dumps(docs), capture_output=True,
                          text=True, timeout=60)
    if not proc.stdout.strip():
        pytest.fail(f"validator printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def envoy_accepts(plugin_config: dict, tmp_path: Path) -> tuple[bool, str]:
    """The shipped bootstrap with this pluginConfig, through `envoy --mode validate`."""
    with open(ENVOY_CONFIG_DIR / "envoy.yaml") as f:
        shipped = yaml.safe_load(f)
    cfg = rewrite_config(shipped, wasm_path=require_wasm(), plugin_config=plugin_config)
    return run_validate(cfg, tmp_path / "envoy-istio-plugin.yaml", envoy_bin())


def test_manifests_are_shipped():
    assert MANIFESTS, ISTIO_DIR
    kinds = {d["kind"] for p in MANIFESTS for d in documents(p)}
    assert {"WasmPlugin", "PeerAuthentication"} <= kinds, kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_istio_schemas(path):
    docs = documents(path)
    results = schema_check(docs)
    assert len(results) == len(docs)
    bad = [r for r in results if not r["ok"]]
    assert not bad, f"{path.name}: {bad}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_wasmplugin_config_is_accepted_by_the_filter(path, tmp_path):
    plugins = [d for d in documents(path) if d["kind"] == "WasmPlugin"]
    assert plugins, f"{path.name} has no WasmPlugin"
    for plugin in plugins:
        spec = plugin["spec"]
        assert spec["type"] == "NETWORK", spec
        # FAIL_RELOAD, as envoy-config/ ships it (tests/test_e2e_vm_failure.py): a VM that fails at
        # run time is replaced by one running the same pluginConfig, so the worker serves again with
        # the rules enforced; FAIL_CLOSE would refuse its later connections until a restart, and
        # FAIL_OPEN would let traffic bypass name conversion (a tenancy leak).
        assert spec.get("failStrategy") == "FAIL_RELOAD", (
            f"{path.name} {plugin['metadata']['name']}: failStrategy must be FAIL_RELOAD (reload a failed VM "
            f"with the same rules; never FAIL_OPEN, which bypasses the filter), got {spec.get('failStrategy')}")
        ok, message = envoy_accepts(spec.get("pluginConfig") or {}, tmp_path)
        assert ok, f"{path.name} {plugin['metadata']['name']}: the filter refused its pluginConfig:\n{message}"


def test_broken_wasmplugin_is_rejected_with_the_field_named():
    plugin = next(d for d in documents(ISTIO_DIR / "wasmplugin.yaml") if d["kind"] == "WasmPlugin")
    broken = copy.deepcopy(plugin)
    broken["spec"]["type"] = "NETWORKING"
    wrong_strategy = copy.deepcopy(plugin)
    wrong_strategy["spec"]["failStrategy"] = "CLOSE"
    results = schema_check([plugin, broken, wrong_strategy])
    assert [r["ok"] for r in results] == [True, False, False], results
    assert "spec/type" in results[1]["error"], results[1]
    assert "spec/failStrategy" in results[2]["error"], results[2]


def test_bad_plugin_config_in_a_wasmplugin_is_refused_by_the_filter(tmp_path):
    plugin = next(d for d in documents(ISTIO_DIR / "wasmplugin.yaml") if d["kind"] == "WasmPlugin")
    config = dict(plugin["spec"].get("pluginConfig") or {}, on_frame_error="ignore")
    ok, message = envoy_accepts(config, tmp_path)
    assert not ok
    assert "on_frame_error" in message, message


# ------------------------------------------------------------------------------------------
# The sidecar's stats configuration (istio/stats/): the filter's Prometheus labels.

STATS_DIR = ISTIO_DIR / "stats"


def stats_override() -> dict:
    (doc,) = documents(STATS_DIR / "kafka-filter-stats.yaml")
    assert doc["kind"] == "ConfigMap", doc["kind"]
    return json.loads(doc["data"]["custom_bootstrap.json"])


def test_sidecar_stats_tags_equal_the_shipped_bootstrap():
    with open(ENVOY_CONFIG_DIR / "envoy.yaml") as f:
        shipped = yaml.safe_load(f)["stats_config"]
    override = stats_override()["stats_config"]
    assert override["stats_tags"] == shipped["stats_tags"]
    assert override["histogram_bucket_settings"] == shipped["histogram_bucket_settings"]


def test_sidecar_stats_override_is_accepted_by_envoy(tmp_path):
    """The override merged into a bootstrap (as Istio merges it) passes a real Envoy's validation:
    every tag regex compiles and extracts as Envoy requires."""
    with open(ENVOY_CONFIG_DIR / "envoy.yaml") as f:
        shipped = yaml.safe_load(f)
    shipped["stats_config"] = stats_override()["stats_config"]
    cfg = rewrite_config(shipped, wasm_path=require_wasm())
    ok, message = run_validate(cfg, tmp_path / "envoy-istio-stats.yaml", envoy_bin())
    assert ok, message
    broken = copy.deepcopy(shipped)
    broken["stats_config"]["stats_tags"][0]["regex"] = "^wasmcustom\\.kafka\\.(api\\.([^.]+)"
    ok, message = run_validate(rewrite_config(broken, wasm_path=require_wasm()),
                               tmp_path / "envoy-istio-stats-broken.yaml", envoy_bin())
    assert not ok, "a broken tag regex must be refused"


def test_broker_pod_annotations_point_at_the_stats_override():
    (patch,) = documents(STATS_DIR / "broker-pod-annotations.yaml")
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    (doc,) = documents(STATS_DIR / "kafka-filter-stats.yaml")
    assert annotations["sidecar.istio.io/bootstrapOverride"] == doc["metadata"]["name"]
    proxy_config = yaml.safe_load(annotations["proxy.istio.io/config"])
    assert "wasmcustom.kafka" in proxy_config["proxyStatsMatcher"]["inclusionPrefixes"]


def test_every_shipped_wasmplugin_has_one_name():
    """Applying one of them replaces another: a second WasmPlugin selecting the same pods would
    add a second filter (two tenant filters prefix names twice)."""
    from test_istio_kustomize import TARGETS, build
    names = {(d["metadata"]["namespace"], d["metadata"]["name"])
             for p in MANIFESTS for d in documents(p) if d["kind"] == "WasmPlugin"}
    names |= {(d["metadata"]["namespace"], d["metadata"]["name"])
              for t in TARGETS for d in build(t) if d["kind"] == "WasmPlugin"}
    assert names == {("kafka", "kafka-filter")}, names
