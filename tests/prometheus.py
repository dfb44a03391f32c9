"""A real Prometheus server for the tests: Debian's package unpacked by `make prom-deps` into
.deps/prometheus, scraping Envoy's /stats/prometheus, queried over its HTTP API with PromQL.

    with PrometheusServer(workdir, targets=[envoy.admin_port]) as prom:
        prom.wait_for_scrape()
        prom.query('sum by (kafka_client_id) (kafka_client_requests)')

Started on a free loopback port and stopped by pid, like every process of the tests.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from harness import REPO, HarnessError, ManagedProcess, free_port, wait_for_port, wait_until

PROMETHEUS = REPO / ".deps" / "prometheus" / "usr" / "bin" / "prometheus"
SCRAPE_INTERVAL_S = 1


def prometheus_bin() -> Path:
    if not PROMETHEUS.is_file():
        raise HarnessError(f"{PROMETHEUS} is missing: run `make prom-deps`")
    return PROMETHEUS


class PrometheusServer:
    def __init__(self, workdir: Path, targets: list[int], port: int | None = None):
        self.workdir = Path(workdir) / "prometheus"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        config = self.workdir / "prometheus.yml"
        # Envoy's admin endpoint is the target; the filter's series come with Envoy's.
        config.write_text(json.dumps({
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                       "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
            "scrape_configs": [{
                "job_name": "envoy",
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in targets]}],
            }],
        }))
        self.proc = ManagedProcess("prometheus", [
            str(prometheus_bin()),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ], self.workdir / "prometheus.log", cwd=self.workdir)

    def start(self) -> "PrometheusServer":
        self.proc.start()

        def ready() -> bool:
            # The port opens before the storage is ready (503 until then).
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            wait_for_port(self.port, timeout=30)
            wait_until(ready, 30, interval=0.1, what="prometheus to be ready")
        except Exception as e:
            raise HarnessError(f"prometheus did not start: {e}\n{self.proc.log_tail()}") from e
        return self

    def stop(self) -> None:
        self.proc.stop()

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise HarnessError(f"prometheus {path} {params}: {doc}")
        return doc["data"]

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant vector query: (labels, value) per series."""
        data = self._get("/api/v1/query", {"query": promql})
        if data["resultType"] != "vector":
            raise HarnessError(f"{promql}: a {data['resultType']}, not a vector")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def targets_up(self) -> bool:
        data = self._get("/api/v1/targets", {})
        active = data.get("activeTargets", [])
        return bool(active) and all(t.get("health") == "up" for t in active)

    def wait_for_scrape(self, timeout: float = 30) -> None:
        wait_until(self.targets_up, timeout, interval=0.2, what="prometheus to scrape envoy")

    def wait_for(self, promql: str, check: Callable[[list[tuple[dict[str, str], float]]], bool],
                 timeout: float = 30) -> list[tuple[dict[str, str], float]]:
        """Query until `check` accepts the result (scrapes lag Envoy by up to an interval)."""
        last: list[tuple[dict[str, str], float]] = []

        def ok() -> bool:
            nonlocal last
            last = self.query(promql)
            return check(last)

        try:
            wait_until(ok, timeout, interval=0.5, what=f"PromQL {promql}")
        except Exception as e:
            raise AssertionError(f"{promql}: last result {last}") from e
        return last


def settle(seconds: float = SCRAPE_INTERVAL_S * 2.5) -> None:
    """Long enough for at least two scrapes."""
    time.sleep(seconds)
