"""`make oci`'s image, inspected with a standard OCI tool (umoci, from Debian): its one layer holds
the built module as `plugin.wasm` (what Istio's agent reads), byte for byte; the digest printed
is the one in the layout's index; the same module gives the same digests (reproducible).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import REPO, require_wasm

UMOCI = REPO / ".deps" / "umoci" / "usr" / "bin" / "umoci"
BUILD = REPO / "istio" / "build_oci.py"


def build(layout, tag="0.1.0") -> str:
    out = subprocess.run([sys.executable, str(BUILD), str(require_wasm()), str(layout), tag],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    first = out.splitlines()[0]
    assert first.startswith(f"{layout}:{tag} sha256:"), out
    return first.split()[-1]


def test_the_layer_is_the_built_module(tmp_path):
    if not UMOCI.exists():
        pytest.fail("umoci missing: run `make oci-deps` (part of `make e2e`)")
    layout = tmp_path / "kafka-filter"
    digest = build(layout)
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0"
    manifest = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    assert [l["mediaType"] for l in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    bundle = tmp_path / "bundle"
    subprocess.run([str(UMOCI), "unpack", "--rootless", "--image", f"{layout}:0.1.0", str(bundle)],
                   capture_output=True, text=True, timeout=120, check=True)
    files = sorted(p.name for p in (bundle / "rootfs").iterdir())
    assert files == ["plugin.wasm"], files
    assert (bundle / "rootfs" / "plugin.wasm").read_bytes() == require_wasm().read_bytes()
    stat = subprocess.run([str(UMOCI), "stat", "--json", "--image", f"{layout}:0.1.0"],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert len(json.loads(stat)["history"] or []) <= 1


def test_the_same_module_gives_the_same_image(tmp_path):
    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    assert a == b
    # Re-tagging keeps the other tags of the layout.
    build(tmp_path / "a", "latest")
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads((tmp_path / "a" / "index.json").read_text())["manifests"]}
    assert tags == {"0.1.0", "latest"}
