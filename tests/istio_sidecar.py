"""What a broker's Istio sidecar runs for a WasmPlugin of type NETWORK, built here the way Istio
builds it, so that a real Envoy can boot it without a cluster.

No Istio binary can be installed on these machines (istiod and the agent are Go programs that no
package registry reachable here carries), so the three steps are ported from Istio's sources
(istio/istio, read through the search library) and kept to what they do with a WasmPlugin:

- istiod (pilot/pkg/model/extensions.go buildWasmPluginConfigCommon, buildDataSource,
  buildVMConfig; pilot/pkg/networking/core/extension/wasmplugin.go toEnvoyNetworkFilter): the
  listener gets a filter named `extensions.istio.io/wasmplugin/<ns>.<name>` whose configuration
  comes from ECDS (ADS, initial_fetch_timeout 0, type_urls: the Wasm network filter and the RBAC
  network filter); the ECDS resource is an envoy.filters.network.wasm whose PluginConfig has
  name `<ns>.<name>`, root_id = pluginName, configuration = pluginConfig as a JSON string
  (golang/protobuf jsonpb of a Struct: keys sorted, numbers as Go's encoding/json prints a
  float64), failure_policy from failStrategy, and a VM (runtime v8, no vm_id) whose code is a
  remote http_uri (cluster "_", timeout 30 s) with the WasmPlugin's sha256, plus the
  ISTIO_META_WASM_* environment variables.
- the Istio agent (pkg/wasm/convert.go MaybeConvertWasmExtensionConfig, httpfetcher.go,
  cache.go): it fetches the module (retrying server errors and failed connections), unpacks a
  gzip or tar body, checks the sha256 (of the unpacked module) and that it is a wasm binary,
  strips the ISTIO_META_ variables and hands Envoy the resource with the code as a local file. If
  it cannot, it hands Envoy, under the same name, an RBAC network filter instead: allow-all (stat
  prefix `wasm-default-allow`) when the failure policy is FAIL_OPEN, else deny-all
  (`wasm-default-deny`).
- the bootstrap (tools/packaging/common/envoy_bootstrap.json, pkg/bootstrap/config.go): a node id
  and cluster, Istio's own stats tags, and the stats matcher's inclusion list (Istio's required
  prefixes and suffixes plus the pod's proxyStatsMatcher), with the
  `sidecar.istio.io/bootstrapOverride` ConfigMap (istio/stats/) merged in (its stats tags after
  Istio's).

What differs from a mesh, and why it does not change what is tested: ECDS reaches Envoy from a
file (path_config_source, replaced atomically) rather than over ADS from the agent; Envoy applies
a resource (accepted, or rejected with the previous one kept) the same way whatever the
transport. The listener is the broker's inbound one reduced to what the filter sees: Istio's mTLS
(client certificate required, SPIFFE ids), the filter, tcp_proxy. In a mesh the inbound chain of
a TCP port is: metadata exchange, then AUTHN- and AUTHZ-phase plugins, Istio's RBAC (the
AuthorizationPolicy), STATS-phase and phaseless plugins (this one), istio.stats, tcp_proxy; so an
AuthorizationPolicy acts before the filter sees a byte, and metadata exchange has already taken
its preamble off the stream. Not ported: image pull secrets (istiod puts the secret's contents in
the VM's environment, the agent fails the fetch when it is missing; no shipped manifest uses
one), and the agent's cache keyed by URL (with imagePullPolicy IfNotPresent and no sha256 it
keeps serving the module it fetched first from a URL: pin the sha256).
"""

from __future__ import annotations

import copy
import decimal
import gzip
import hashlib
import io
import json
import math
import os
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from harness import REPO, Envoy, static_cluster

WASMPLUGIN_PREFIX = "extensions.istio.io/wasmplugin/"
WASM_NETWORK = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
RBAC_NETWORK = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
FAILURE_POLICY = {"FAIL_OPEN": "FAIL_OPEN", "FAIL_CLOSE": "FAIL_CLOSED", "FAIL_RELOAD": "FAIL_RELOAD"}
STATS_DIR = REPO / "istio" / "stats"
# pkg/bootstrap/config.go: what every sidecar keeps in its stats, whatever the pod says.
REQUIRED_PREFIXES = ["reporter=", "cluster_manager", "listener_manager", "server", "cluster.xds-grpc",
                     "wasm", "component", "istio"]
REQUIRED_SUFFIXES = ["rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied"]
REQUIRED_REGEXES = [r"vhost\..*\.route\..*"]
# envoy_bootstrap.json's stats_tags (no extraStatTags): the unanchored ones apply to every metric,
# the filter's too.
ISTIO_STATS_TAGS = [
    {"tag_name": "cluster_name", "regex": r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"},
    {"tag_name": "tcp_prefix", "regex": r"^tcp\.((.*?)\.)\w+?$"},
    {"tag_name": "response_code", "regex": r"_rq(_(\d{3}))$"},
    {"tag_name": "response_code_class", "regex": r"_rq(_(\dxx))$"},
    {"tag_name": "http_conn_manager_listener_prefix",
     "regex": r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"},
    {"tag_name": "http_conn_manager_prefix",
     "regex": r"^http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"},
    {"tag_name": "listener_address",
     "regex": r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"},
    {"tag_name": "mongo_prefix", "regex": r"^mongo\.(.+?)\.(collection|cmd|cx_|op_|delays_|decoding_)(.*?)$"},
    {"tag_name": "cache", "regex": r"(cache\.(.+?)\.)"},
    {"tag_name": "component", "regex": r"(component\.(.+?)\.)"},
    {"tag_name": "tag", "regex": r"(tag\.(.+?);\.)"},
    {"tag_name": "wasm_filter", "regex": r"(wasm_filter\.(.+?)\.)"},
    {"tag_name": "authz_enforce_result", "regex": r"rbac(\.(allowed|denied))"},
    {"tag_name": "authz_dry_run_action", "regex": r"(\.istio_dry_run_(allow|deny)_)"},
    {"tag_name": "authz_dry_run_result", "regex": r"(\.shadow_(allowed|denied))"},
]


# --------------------------------------------------------------------------------------------
# istiod


def resource_name(plugin: dict) -> str:
    meta = plugin["metadata"]
    return f"{WASMPLUGIN_PREFIX}{meta['namespace']}.{meta['name']}"


def go_json(value: Any) -> str:
    """pluginConfig as istiod writes it: a google.protobuf.Struct through golang/protobuf jsonpb.
    A Struct holds every number as a float64, which Go's encoding/json prints without a fraction
    when it has none (and in exponent form below 1e-6 or from 1e21 on); keys come out sorted."""
    def number(x: float) -> str:
        if not math.isfinite(x):
            raise ValueError(f"pluginConfig holds {x}: no JSON for it")
        ax = abs(x)
        if ax != 0 and (ax < 1e-6 or ax >= 1e21):
            return repr(x).replace("e-0", "e-")   # Go: shortest digits, exponent without padding
        if x.is_integer():
            return "-0" if x == 0 and math.copysign(1, x) < 0 else str(int(x))
        return format(decimal.Decimal(repr(x)), "f")   # shortest digits, never an exponent

    def string(v: str) -> str:
        # Go's encoding/json escapes what HTML would read and the two JS line separators, and
        # keeps other characters as UTF-8.
        return (json.dumps(v, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
                .replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))

    def enc(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return number(float(v))
        if isinstance(v, str):
            return string(v)
        if isinstance(v, list):
            return "[" + ",".join(enc(i) for i in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(f"{string(str(k))}:{enc(v[k])}" for k in sorted(v)) + "}"
        raise TypeError(f"pluginConfig holds a {type(v).__name__}")

    return enc(value)


def istiod_listener_filter(plugin: dict) -> dict:
    """The filter istiod puts in the listener: a name, and where its configuration comes from.
    The ADS source of a mesh is replaced by `config_source` (see the module's docstring)."""
    return {"name": resource_name(plugin),
            "config_discovery": {"config_source": {"ads": {}, "resource_api_version": "V3",
                                                   "initial_fetch_timeout": "0s"},
                                 "type_urls": [WASM_NETWORK, RBAC_NETWORK]}}


def istiod_extension_config(plugin: dict, resource_version: str = "1") -> dict:
    """The ECDS resource istiod sends for the WasmPlugin (before the agent rewrites it)."""
    spec = plugin["spec"]
    if spec.get("type") != "NETWORK":
        raise ValueError(f"{resource_name(plugin)}: type {spec.get('type')!r}, not NETWORK")
    meta = plugin["metadata"]
    url = spec["url"]
    if "://" not in url:
        url = "oci://" + url
    if url.startswith("file://"):
        code = {"local": {"filename": url[len("file://"):]}}
    else:
        code = {"remote": {"http_uri": {"uri": url, "cluster": "_", "timeout": "30s"},
                           "sha256": spec.get("sha256", "")}}
    env = {}
    if spec.get("imagePullSecret"):
        env["ISTIO_META_WASM_IMAGE_PULL_SECRET"] = spec["imagePullSecret"]
    if spec.get("imagePullPolicy"):
        env["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = spec["imagePullPolicy"]
    env["ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"] = resource_version
    host_keys = []
    for e in (spec.get("vmConfig") or {}).get("env", []):
        if e.get("valueFrom", "INLINE") == "INLINE":
            env[e["name"]] = e.get("value", "")
        else:
            host_keys.append(e["name"])
    vm_env: dict = {"key_values": env}
    if host_keys:
        vm_env["host_env_keys"] = host_keys
    config: dict = {
        "name": f"{meta['namespace']}.{meta['name']}",
        "root_id": spec.get("pluginName", ""),
        "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": code, "environment_variables": vm_env},
    }
    if spec.get("pluginConfig"):
        config["configuration"] = {"@type": STRING_VALUE, "value": go_json(spec["pluginConfig"])}
    # FAIL_CLOSE is the API's zero value: a WasmPlugin without failStrategy gets it.
    config["failure_policy"] = FAILURE_POLICY[spec.get("failStrategy") or "FAIL_CLOSE"]
    return {"@type": TYPED_EXTENSION_CONFIG, "name": resource_name(plugin),
            "typed_config": {"@type": WASM_NETWORK, "config": config}}


# --------------------------------------------------------------------------------------------
# the Istio agent


class FetchError(Exception):
    pass


def is_wasm(b: bytes) -> bool:
    return len(b) >= 8 and b[:4] == b"\0asm"


def unbox(body: bytes) -> bytes:
    """httpfetcher.go unboxIfPossible: gzip and tar layers taken off until a wasm binary shows
    (a tar's first file); the original bytes if anything fails."""
    b = body
    while not is_wasm(b):
        try:
            if b[:2] == b"\x1f\x8b":
                b = gzip.decompress(b)
            elif len(b) > 262 and b[257:262] == b"ustar":
                with tarfile.open(fileobj=io.BytesIO(b)) as tar:
                    first = tar.next()
                    f = tar.extractfile(first) if first is not None else None
                    if f is None:
                        return body
                    b = f.read()
            else:
                return body
        except (OSError, EOFError, tarfile.TarError):
            return body
    return b


def fetch_module(uri: str, sha256: str, timeout: float, cache_dir: Path, retries: int = 5) -> Path:
    """The agent's cache.Get for an http(s) URL: the body (server errors and failed connections
    retried with a backoff), unpacked, its sha256 checked when one is given, checked to be a wasm
    binary, stored under its checksum."""
    delay = 0.1
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(uri, timeout=timeout) as r:
                body = r.read()
            break
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt == retries:
                raise FetchError(f"cannot fetch Wasm module {uri}: {e}") from e
        except (urllib.error.URLError, OSError) as e:
            if attempt == retries:
                raise FetchError(f"cannot fetch Wasm module {uri}: {e}") from e
        time.sleep(delay)
        delay *= 2
    module = unbox(body)
    digest = hashlib.sha256(module).hexdigest()
    if sha256 and sha256 not in ("nil", digest):
        raise FetchError(f"module downloaded from {uri} has checksum {digest}, which does not match: {sha256}")
    if not is_wasm(module):
        raise FetchError(f"fetched Wasm binary from {uri} is invalid")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{digest}.wasm"
    path.write_bytes(module)
    return path


def agent_convert(resource: dict, cache_dir: Path) -> tuple[dict, str | None]:
    """What the agent hands Envoy for one ECDS resource, and the fetch error if it fell back to
    RBAC (MaybeConvertWasmExtensionConfig for a network Wasm resource)."""
    resource = copy.deepcopy(resource)
    config = resource["typed_config"]["config"]
    vm = config["vm_config"]
    remote = vm["code"].get("remote")
    if remote is None:
        return resource, None
    env = vm.get("environment_variables") or {}
    kv = env.get("key_values") or {}
    for key in [k for k in kv if k.startswith("ISTIO_META_")]:
        del kv[key]
    if not kv:
        if env.get("host_env_keys"):
            env.pop("key_values", None)
        else:
            vm.pop("environment_variables", None)
    timeout = float(remote["http_uri"].get("timeout", "5s").rstrip("s"))
    try:
        path = fetch_module(remote["http_uri"]["uri"], remote.get("sha256", ""), timeout, cache_dir)
    except FetchError as e:
        fail_open = config.get("failure_policy") == "FAIL_OPEN"
        rbac = ({"stat_prefix": "wasm-default-allow"} if fail_open
                else {"rules": {}, "stat_prefix": "wasm-default-deny"})
        return {"@type": TYPED_EXTENSION_CONFIG, "name": resource["name"],
                "typed_config": {"@type": RBAC_NETWORK, **rbac}}, str(e)
    vm["code"] = {"local": {"filename": str(path)}}
    return resource, None


# --------------------------------------------------------------------------------------------
# the sidecar's Envoy


def stats_override() -> dict:
    """istio/stats/kafka-filter-stats.yaml: the bootstrap the broker pods' annotation merges in."""
    with open(STATS_DIR / "kafka-filter-stats.yaml") as f:
        doc = yaml.safe_load(f)
    return json.loads(doc["data"]["custom_bootstrap.json"])


def pod_stats_matcher() -> dict:
    """proxyStatsMatcher from istio/stats/broker-pod-annotations.yaml."""
    with open(STATS_DIR / "broker-pod-annotations.yaml") as f:
        doc = yaml.safe_load(f)
    proxy_config = yaml.safe_load(doc["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    return proxy_config["proxyStatsMatcher"]


def sidecar_stats_config() -> dict:
    """stats_config as the sidecar's bootstrap has it: Istio's inclusion list with the pod's
    (pkg/bootstrap/config.go: "reporter=", the pod's prefixes, the required ones; the pod's
    suffixes and regexes before the required ones), Istio's stats tags and then the override's
    (a bootstrap override's repeated fields are appended)."""
    pod = pod_stats_matcher()
    prefixes = [REQUIRED_PREFIXES[0], *pod.get("inclusionPrefixes", []), *REQUIRED_PREFIXES[1:]]
    suffixes = [*pod.get("inclusionSuffixes", []), *REQUIRED_SUFFIXES]
    regexes = [*pod.get("inclusionRegexps", []), *REQUIRED_REGEXES]
    patterns = ([{"prefix": p} for p in prefixes] + [{"suffix": s} for s in suffixes]
                + [{"safe_regex": {"regex": r}} for r in regexes])
    override = stats_override()["stats_config"]
    return {"use_all_default_tags": False, "stats_tags": ISTIO_STATS_TAGS + override["stats_tags"],
            "histogram_bucket_settings": override.get("histogram_bucket_settings", []),
            "stats_matcher": {"inclusion_list": {"patterns": patterns}}}


class SidecarEnvoy(Envoy):
    """An Envoy configured as a broker's sidecar with one NETWORK WasmPlugin: the inbound
    listener (mTLS with the given certificates) holds the filter istiod names, configured over
    ECDS from a file that deliver() replaces."""

    def __init__(self, upstream_port: int, plugin: dict, pki: Path, workdir: Path,
                 listener_port: int | None = None, admin_port: int | None = None,
                 log_level: str = "info", name: str = "sidecar"):
        self._setup("istio sidecar", upstream_port, workdir, listener_port, admin_port, log_level,
                    None, name)
        self.concurrency = 1
        self.uses_wasm = True
        self.plugin = plugin
        self.ecds_dir = self.workdir / "ecds"
        self.ecds_dir.mkdir(parents=True, exist_ok=True)
        self.ecds_path = self.ecds_dir / "extension-config.yaml"
        self.version = 0
        self.cfg = self._bootstrap(upstream_port, pki)
        self._write_bootstrap()

    @property
    def filter_name(self) -> str:
        return resource_name(self.plugin)

    def _bootstrap(self, upstream_port: int, pki: Path) -> dict:
        flt = istiod_listener_filter(self.plugin)
        flt["config_discovery"]["config_source"] = {
            "path_config_source": {"path": str(self.ecds_path), "watched_directory": {"path": str(self.ecds_dir)}},
            "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
        tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(pki / "server.pem")},
                                      "private_key": {"filename": str(pki / "server.key")}}],
                "validation_context": {"trusted_ca": {"filename": str(pki / "ca.pem")}}}}}
        tcp_proxy = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "inbound|9092||", "cluster": "inbound|9092||"}}
        cluster = static_cluster("inbound|9092||", upstream_port)
        ns = self.plugin["metadata"]["namespace"]
        return {
            "node": {"id": f"sidecar~127.0.0.1~kafka-broker-0.{ns}~{ns}.svc.cluster.local",
                     "cluster": f"kafka-broker.{ns}"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "stats_config": sidecar_stats_config(),
            "static_resources": {
                "listeners": [{"name": "virtualInbound-kafka",
                               "address": {"socket_address": {"address": "127.0.0.1",
                                                              "port_value": self.listener_port}},
                               "filter_chains": [{"transport_socket": tls, "filters": [flt, tcp_proxy]}]}],
                "clusters": [cluster]},
        }

    def deliver(self, resource: dict) -> str:
        """Hand Envoy this ECDS resource (the next version of the file); its version_info."""
        self.version += 1
        version = str(self.version)
        tmp = self.ecds_dir / f".extension-config.{version}.tmp"
        tmp.write_text(yaml.safe_dump({"version_info": version, "resources": [resource]}, sort_keys=False))
        os.rename(tmp, self.ecds_path)
        return version

    def ecds_counters(self) -> dict[str, float]:
        s = self.stats()
        prefix = f"extension_config_discovery.network_filter.{self.filter_name}."
        return {k: s.get(prefix + k) for k in ("update_success", "update_rejected", "config_reload",
                                               "config_fail")}

    def connections_without_config(self) -> float:
        return self.stats().get(f"listener.127.0.0.1_{self.listener_port}.network_extension_config_missing")
