"""Plugin configuration errors with the real Envoy.

What Envoy 1.40 does (observed) when the filter's on_configure returns false for a wasm network
filter in a static listener: the base VM's configure fails ("Wasm VM failed Failed to configure
base Wasm plugin"), the plugin fails closed ("Plugin configured to fail closed failed to load"),
and Envoy refuses the bootstrap and exits with status 1 ("error initializing config ...
Unable to create Wasm plugin kafka_filter") before it opens any listener. `envoy --mode validate`
loads the module and runs on_configure too, so it rejects the same documents.
"""

from __future__ import annotations

import subprocess

import pytest

from harness import envoy_bin

BAD_CONFIGS = [
    ('{"max_frame_bytez": 5}', "max_frame_bytez"),
    ('{"max_frame_bytes": -1}', "max_frame_bytes"),
    ('{"on_frame_error": "drop"}', "on_frame_error"),
    ('{"max_inflight_requests": 0}', "max_inflight_requests"),
    ('{"on_frame_error": "pass_through", "rules": [{"name": "t", "topics": {"prefix": "t."}}]}',
     "on_frame_error"),
    ('{"max_held_frame_bytes": 4096, "max_held_bytes": 2048}', "max_held_bytes"),
    ('{"acls": {"default": "deny", "entries": [{"permission": "allow", "operations": ["Read"], '
     '"resource_type": "topic", "name": "a"}, {"permission": "allow", "operations": ["Write"], '
     '"resource_type": "group", "name": "g"}]}}', "acls.entries[1].operations"),
]
IDS = ["unknown-field", "negative-max_frame_bytes", "bad-on_frame_error", "zero-max_inflight_requests",
       "pass_through-with-rules", "budget-below-frame", "acl-operation-not-for-groups"]


@pytest.mark.parametrize("document, field", BAD_CONFIGS, ids=IDS)
def test_envoy_refuses_bad_plugin_config(make_envoy, document, field):
    envoy = make_envoy(1, plugin_config=document, start=False)  # upstream never used
    envoy.launch()
    rc = envoy.process.wait(timeout=60)
    log = envoy.log_text()
    assert rc == 1, f"envoy exited with {rc}\n{envoy.log_tail()}"
    # The filter's own message names the field...
    wasm_errors = [ln for ln in log.splitlines() if "[wasm]" in ln and "invalid plugin configuration" in ln]
    assert wasm_errors, f"no configuration error from the filter in Envoy's log\n{envoy.log_tail()}"
    assert any(f"`{field}`" in ln for ln in wasm_errors), wasm_errors
    # ...and Envoy fails closed on it: the plugin is not loaded and the bootstrap is refused.
    assert "Failed to configure base Wasm plugin" in log
    assert "Unable to create Wasm plugin kafka_filter" in log


@pytest.mark.parametrize("document, field", BAD_CONFIGS[:2], ids=IDS[:2])
def test_validate_mode_rejects_bad_plugin_config(make_envoy, document, field):
    envoy = make_envoy(1, plugin_config=document, start=False)
    proc = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(envoy.config_path),
                           "--disable-hot-restart", "--log-level", "warn"],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"`{field}`" in out and "Unable to create Wasm plugin kafka_filter" in out, out


@pytest.mark.parametrize("document", [
    "",
    "{}",
    '{"max_frame_bytes": 1024, "on_frame_error": "pass_through", "max_inflight_requests": 1}',
    '{"max_frame_bytes": 2147483647, "on_frame_error": "close", "max_inflight_requests": 1000000}',
], ids=["empty", "empty-object", "all-fields-low", "all-fields-high"])
def test_good_plugin_configs_start(make_envoy, document):
    envoy = make_envoy(1, plugin_config=document)
    assert envoy.poll() is None
    assert "invalid plugin configuration" not in envoy.log_text()
