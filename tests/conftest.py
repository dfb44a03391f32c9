"""pytest fixtures for the end-to-end tests: real tansu brokers, real Envoys, real clients.

Nothing is skipped silently: when the filter is not built the tests that need it fail with a
message telling how to build it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    WASM_PATH,
    Broker,
    Envoy,
    HarnessError,
    LdsEnvoy,
    free_ports,
    require_wasm,
)

if TYPE_CHECKING:
    from module_server import ModuleServer

ROUTES = ("direct", "tcp_proxy", "filter")
CONFIG_FOR_ROUTE = {"tcp_proxy": "tcp-proxy-only.yaml", "filter": "envoy.yaml"}


def pytest_configure(config):  # type: ignore[no-untyped-def]
    # kafka-python 3.0.12 loads its schemas with importlib.resources APIs deprecated in 3.11.
    for msg in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{msg}:DeprecationWarning")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def need_wasm() -> Path:
    """The built filter, or fail the test (never skip) with a message saying how to build it."""
    try:
        return require_wasm()
    except HarnessError as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A mesh CA, a server certificate and one client certificate per mesh_pki.SPIFFE workload;
    per module, since tests issue more into it."""
    from mesh_pki import SPIFFE, make_pki
    return make_pki(tmp_path_factory.mktemp("pki"), SPIFFE)


@pytest.fixture(scope="module")
def module_server() -> Iterator["ModuleServer"]:
    """The built module over HTTP (tests/module_server.py)."""
    from module_server import ModuleServer
    server = ModuleServer(need_wasm().read_bytes())
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    """A broker, optionally behind an Envoy. `bootstrap` is where clients connect."""

    route: str
    broker: Broker
    envoy: Envoy | None = None
    extra: dict = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.envoy.bootstrap if self.envoy else self.broker.bootstrap

    def start(self) -> "Stack":
        self.broker.start()
        if self.envoy is not None:
            self.envoy.start()
        return self

    def stop(self) -> None:
        # Envoy first: it flushes its log file only every few seconds (and at exit).
        if self.envoy is not None:
            self.envoy.stop()
        self.broker.stop()

    def logs(self) -> str:
        parts = [f"route={self.route}", self.broker.log_tail(40)]
        if self.envoy is not None:
            parts.append(self.envoy.log_tail(80))
        return "\n".join(parts)


def _report_logs(request: pytest.FixtureRequest, things: list) -> None:
    rep = getattr(request.node, "rep_call", None)
    failed = rep is None or rep.failed or getattr(request.node, "rep_setup", None) and request.node.rep_setup.failed
    if failed:
        for t in things:
            try:
                print(t.logs() if hasattr(t, "logs") else t.log_tail(), file=sys.stderr)
            except Exception as e:  # noqa: BLE001 - best effort
                print(f"(could not read logs: {e!r})", file=sys.stderr)


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """make_stack(route, plugin_config=None) -> Stack.

    route: "direct" (clients talk to the broker), "tcp_proxy" (envoy-config/tcp-proxy-only.yaml),
    or "filter" (envoy-config/envoy.yaml with the Kafka filter). Each stack has its own broker,
    which advertises the Envoy listener (or itself for "direct"), so nothing else talks through it.
    """
    stacks: list[Stack] = []

    def make(route: str = "filter", plugin_config: dict | str | None = None,
             concurrency: int = 1, component_log_level: str | None = None,
             extra_clusters: list[dict] | None = None) -> Stack:
        if route not in ROUTES:
            raise ValueError(route)
        n = len(stacks)
        workdir = tmp_path / f"stack{n}-{route}"
        workdir.mkdir()
        if route == "direct":
            broker = Broker(workdir=workdir)
            stack = Stack(route, broker)
            stacks.append(stack)
            broker.start()
            return stack
        if route == "filter":
            need_wasm()
        return _start_proxied_stack(
            stacks, route, workdir,
            lambda broker_port, **ports: Envoy(broker_port, config=CONFIG_FOR_ROUTE[route],
                                               plugin_config=plugin_config, workdir=workdir,
                                               concurrency=concurrency,
                                               component_log_level=component_log_level,
                                               extra_clusters=extra_clusters, **ports))

    try:
        yield make
    finally:
        _stop_stacks(request, stacks)


def _start_proxied_stack(stacks: list[Stack], route: str, workdir: Path,
                         new_envoy: Callable[..., Envoy]) -> Stack:
    """A broker advertising the listener of the Envoy new_envoy(broker_port, listener_port=,
    admin_port=) builds in front of it; both started, the stack recorded for teardown."""
    listener_port, admin_port, broker_port = free_ports(3)
    broker = Broker(workdir=workdir, port=broker_port, advertised_port=listener_port)
    envoy = new_envoy(broker_port, listener_port=listener_port, admin_port=admin_port)
    stack = Stack(route, broker, envoy)
    stacks.append(stack)
    broker.start()
    envoy.start()
    return stack


def _stop_stacks(request: pytest.FixtureRequest, stacks: list[Stack]) -> None:
    for s in reversed(stacks):
        s.stop()
    _report_logs(request, stacks)


@pytest.fixture
def make_envoy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Envoy]]:
    """make_envoy(upstream_port, plugin_config=None, start=True, **kw) -> Envoy (stopped at teardown)."""
    envoys: list[Envoy] = []

    def make(upstream_port: int, plugin_config: dict | str | None = None, start: bool = True,
             config: str = "envoy.yaml", **kw) -> Envoy:
        if config == "envoy.yaml" and "wasm_path" not in kw:
            need_wasm()
        workdir = tmp_path / f"envoy{len(envoys)}"
        workdir.mkdir()
        envoy = Envoy(upstream_port, config=config, plugin_config=plugin_config, workdir=workdir, **kw)
        envoys.append(envoy)
        if start:
            envoy.start()
        return envoy

    try:
        yield make
    finally:
        for e in envoys:
            e.stop()
        _report_logs(request, envoys)


@pytest.fixture
def make_lds_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """make_lds_stack(plugin_config) -> Stack whose Envoy (harness.LdsEnvoy) runs
    envoy-config/envoy-lds.yaml with the Kafka listener from a copy of
    envoy-config/lds/kafka-listener.yaml (stack.envoy.update_listener() replaces it)."""
    stacks: list[Stack] = []

    def make(plugin_config: dict | str | None = None) -> Stack:
        need_wasm()
        workdir = tmp_path / f"lds-stack{len(stacks)}"
        workdir.mkdir()
        return _start_proxied_stack(
            stacks, "filter-lds", workdir,
            lambda broker_port, **ports: LdsEnvoy(broker_port, plugin_config=plugin_config,
                                                  workdir=workdir, **ports))

    try:
        yield make
    finally:
        _stop_stacks(request, stacks)


def pytest_report_header(config):  # type: ignore[no-untyped-def]
    state = f"{WASM_PATH} ({WASM_PATH.stat().st_size} bytes)" if WASM_PATH.is_file() else f"{WASM_PATH} MISSING (run `make wasm`)"
    return [f"kafka filter: {state}"]
