#!/usr/bin/env python3
"""Validate every shipped Envoy bootstrap with the real Envoy: `envoy --mode validate -c FILE`.

Checks envoy-config/*.yaml and examples/*.yaml (those that are Envoy bootstraps). The wasm filename
is rewritten to the absolute path of the built filter (the shipped files use a path relative to the
repository root); ports stay as shipped. Envoy 1.40's validate mode loads the wasm module and runs
its on_configure, so a bad plugin configuration fails here too.

Prints one line per file; exits non-zero if any file fails (or if the filter is not built).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REPO, WASM_PATH, HarnessError, envoy_bin, require_wasm, rewrite_config, wasm_filters  # noqa: E402

DIRS = [REPO / "envoy-config", REPO / "examples"]


def is_envoy_bootstrap(doc: object) -> bool:
    return isinstance(doc, dict) and ("static_resources" in doc or "dynamic_resources" in doc or "admin" in doc)


def validate(path: Path, tmpdir: Path, envoy: str) -> tuple[bool, str]:
    try:
        with open(path) as f:
            docs = list(yaml.safe_load_all(f))
    except yaml.YAMLError as e:
        return False, f"YAML error: {e}"
    if len(docs) != 1 or not is_envoy_bootstrap(docs[0]):
        return True, "skipped (not an Envoy bootstrap)"
    cfg = docs[0]
    uses_wasm = bool(wasm_filters(cfg))
    if uses_wasm:
        cfg = rewrite_config(cfg, wasm_path=require_wasm().resolve())
    out = tmpdir / f"{path.parent.name}-{path.name}"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(out), "--disable-hot-restart", "--log-level", "warn"],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        return False, f"envoy --mode validate exited {proc.returncode}:\n    " + "\n    ".join(detail[-15:])
    return True, "OK" + (" (with the built filter)" if uses_wasm else "")


def main() -> int:
    try:
        envoy = envoy_bin()
        require_wasm()
    except HarnessError as e:
        print(f"FAIL: {e}")
        return 2
    files = sorted(p for d in DIRS if d.is_dir() for p in list(d.glob("*.yaml")) + list(d.glob("*.yml")))
    if not files:
        print("FAIL: no configuration files found")
        return 2
    failed = 0
    checked = 0
    with tempfile.TemporaryDirectory(prefix="kafka-validate-") as tmp:
        for path in files:
            ok, msg = validate(path, Path(tmp), envoy)
            rel = path.relative_to(REPO)
            print(f"{'ok  ' if ok else 'FAIL'} {rel}: {msg}")
            if not ok:
                failed += 1
            elif not msg.startswith("skipped"):
                checked += 1
    print(f"{checked} valid, {failed} failed (envoy: {envoy}, filter: {WASM_PATH})")
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
