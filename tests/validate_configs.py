#!/usr/bin/env python3
"""Validate every shipped Envoy bootstrap with the real Envoy: `envoy --mode validate -c FILE`.

Checks envoy-config/*.yaml and examples/*.yaml (those that are Envoy bootstraps). The wasm filename
is rewritten to the absolute path of the built filter (the shipped files use a path relative to the
repository root); ports stay as shipped. Envoy 1.40's validate mode loads the wasm module and runs
its on_configure, so a bad plugin configuration fails here too.

A bootstrap whose listeners come from a file (dynamic_resources.lds_config.path_config_source, e.g.
envoy-config/envoy-lds.yaml with envoy-config/lds/kafka-listener.yaml) is checked twice: as shipped
(its paths made absolute), and with the listeners of its LDS file put into static_resources, so
that the listener file and its plugin configuration are validated with the built filter as well.

Prints one line per file; exits non-zero if any file fails (or if the filter is not built).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    REPO,
    WASM_PATH,
    HarnessError,
    envoy_bin,
    load_listener_doc,
    require_wasm,
    rewrite_config,
    rewrite_listener,
    wasm_filters,
)

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
    lds = lds_path_config_source(cfg)
    if lds is not None:
        return validate_lds(path, cfg, lds, tmpdir, envoy)
    uses_wasm = bool(wasm_filters(cfg))
    if uses_wasm:
        cfg = rewrite_config(cfg, wasm_path=require_wasm().resolve())
    ok, msg = run_validate(cfg, tmpdir / f"{path.parent.name}-{path.name}", envoy)
    if not ok:
        return ok, msg
    return True, "OK" + (" (with the built filter)" if uses_wasm else "")


def run_validate(cfg: dict, out: Path, envoy: str) -> tuple[bool, str]:
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(out), "--disable-hot-restart", "--log-level", "warn"],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        return False, f"envoy --mode validate exited {proc.returncode}:\n    " + "\n    ".join(detail[-15:])
    return True, "OK"


def lds_path_config_source(cfg: dict) -> dict | None:
    """The path_config_source of a bootstrap's LDS, if its listeners come from a file."""
    return ((cfg.get("dynamic_resources") or {}).get("lds_config") or {}).get("path_config_source")


def repo_path(p: str) -> Path:
    """A path as a shipped file gives it: relative to the repository root (where Envoy runs from)."""
    return Path(p) if Path(p).is_absolute() else REPO / p


def validate_lds(path: Path, cfg: dict, src: dict, tmpdir: Path, envoy: str) -> tuple[bool, str]:
    listener_file = repo_path(src["path"])
    if not listener_file.is_file():
        return False, f"its LDS file {src['path']} does not exist"
    watched = (src.get("watched_directory") or {}).get("path")
    if watched is not None and listener_file.parent.resolve() != repo_path(watched).resolve():
        return False, f"watched_directory {watched} is not the directory of {src['path']}: updates would be missed"
    # 1. The bootstrap as shipped, its paths made absolute.
    shipped = yaml.safe_load(yaml.safe_dump(cfg))
    shipped_src = lds_path_config_source(shipped)
    shipped_src["path"] = str(listener_file)
    if watched is not None:
        shipped_src["watched_directory"]["path"] = str(repo_path(watched))
    ok, msg = run_validate(shipped, tmpdir / f"{path.parent.name}-{path.name}", envoy)
    if not ok:
        return ok, msg
    # 2. Its listeners, static, with the built filter.
    doc = load_listener_doc(listener_file)
    listeners = [{k: v for k, v in rewrite_listener(r, wasm_path=require_wasm().resolve()).items() if k != "@type"}
                 for r in doc.get("resources", [])]
    if not listeners:
        return False, f"its LDS file {src['path']} has no resources"
    static = yaml.safe_load(yaml.safe_dump(cfg))
    del static["dynamic_resources"]
    static.setdefault("static_resources", {})["listeners"] = listeners
    ok, msg = run_validate(static, tmpdir / f"{path.parent.name}-{path.stem}-static.yaml", envoy)
    if not ok:
        return False, f"with the listeners of {src['path']} made static: {msg}"
    uses_wasm = bool(wasm_filters(static))
    return True, (f"OK, and with the listeners of {src['path']} made static"
                  + (" (with the built filter)" if uses_wasm else ""))


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
