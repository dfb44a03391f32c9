# Kafka protocol filter for Envoy and Istio.
#   make demo   build the filter, start a broker and Envoy, push real traffic, show what the filter saw
#   make test   unit tests + end-to-end tests (real Envoy, real broker, real clients)
#   make bench  benchmarks against plain tcp_proxy and the broker directly
# Everything it needs is installed into the repository (.venv) or the user's rustup.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
WASM := target/wasm32-wasip1/release/kafka_filter.wasm
# Test-only build with the cargo feature fault-injection (traps the VM on a marker; tests/test_e2e_vm_failure.py).
WASM_FAULT := target/fault/wasm32-wasip1/release/kafka_filter.wasm
STAMP := $(VENV)/.installed
NODE_STAMP := tests/istio/node_modules/.installed
# A real Prometheus for the metrics tests: Debian's package, unpacked into the repository (no root,
# nothing installed system-wide). Pinned: the tests run this exact server.
PROM_DEB := prometheus=2.42.0+ds-5+b6
PROM := .deps/prometheus/usr/bin/prometheus
# umoci (Debian): the OCI tool the tests inspect `make oci`'s image layout with.
UMOCI_DEB := umoci=0.4.7+ds-3+b7
UMOCI := .deps/umoci/usr/bin/umoci
# docker-compose (Debian) and the Python packages it needs, unpacked: `make test` checks
# examples/docker-compose.yaml with `docker-compose config` (no container engine runs here).
COMPOSE_DEBS := docker-compose python3-attr python3-cached-property python3-certifi python3-chardet \
  python3-charset-normalizer python3-distro python3-distutils python3-docker python3-dockerpty \
  python3-docopt python3-dotenv python3-idna python3-importlib-metadata python3-importlib-resources \
  python3-jsonschema python3-lib2to3 python3-more-itertools python3-pkg-resources python3-pyrsistent \
  python3-requests python3-six python3-texttable python3-typing-extensions python3-urllib3 \
  python3-websocket python3-yaml python3-zipp
COMPOSE := .deps/compose/usr/bin/docker-compose
# kubectl (Debian's kubernetes-client): `make test` builds istio/kustomize with `kubectl kustomize`.
KUBECTL_DEB := kubernetes-client=1.20.5+really1.20.2-1.1+deb12u1
KUBECTL := .deps/kubectl/usr/bin/kubectl
OCI_DIR := target/oci/kafka-filter
OCI_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' filter/Cargo.toml | head -1)

.PHONY: all wasm wasm-fault deps rust-deps py-deps node-deps prom-deps oci-deps compose-deps kubectl-deps oci test unit unit-wasm e2e demo example-canary example-tenants example-ratelimit example-acls example-brokers bench lint fmt validate-config clean fuzz fuzz-smoke fuzz-seeds

all: wasm

rust-deps:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

$(STAMP): tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r tests/requirements.txt
	touch $(STAMP)

py-deps: $(STAMP)

# Istio's CRD schemas as typed models, for validating istio/*.yaml (Node.js and npm come with the machine).
$(NODE_STAMP): tests/istio/package.json tests/istio/package-lock.json
	npm ci --prefix tests/istio --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

node-deps: $(NODE_STAMP)

$(PROM):
	mkdir -p .deps/download
	cd .deps/download && { apt-get download $(PROM_DEB) || { apt-get update -qq && apt-get download $(PROM_DEB); }; }
	dpkg -x .deps/download/prometheus_*.deb .deps/prometheus
	@test -x $(PROM)

prom-deps: $(PROM)

$(UMOCI):
	mkdir -p .deps/download
	cd .deps/download && { apt-get download $(UMOCI_DEB) || { apt-get update -qq && apt-get download $(UMOCI_DEB); }; }
	dpkg -x .deps/download/umoci_*.deb .deps/umoci
	@test -x $(UMOCI)

oci-deps: $(UMOCI)

$(COMPOSE):
	mkdir -p .deps/download/compose
	cd .deps/download/compose && { apt-get download $(COMPOSE_DEBS) || { apt-get update -qq && apt-get download $(COMPOSE_DEBS); }; }
	for f in .deps/download/compose/*.deb; do dpkg -x $$f .deps/compose; done
	@test -f $(COMPOSE)

compose-deps: $(COMPOSE)

$(KUBECTL):
	mkdir -p .deps/download
	cd .deps/download && { apt-get download $(KUBECTL_DEB) || { apt-get update -qq && apt-get download $(KUBECTL_DEB); }; }
	dpkg -x .deps/download/kubernetes-client_*.deb .deps/kubectl
	@test -x $(KUBECTL)

kubectl-deps: $(KUBECTL)

# The filter as an OCI image for Istio (a single layer holding plugin.wasm), in an OCI layout
# directory, built without a container engine; prints the manifest digest. Push it with e.g.
# `skopeo copy oci:$(OCI_DIR):$(OCI_TAG) docker://<registry>/kafka-filter:$(OCI_TAG)`.
oci: wasm py-deps
	$(VPY) istio/build_oci.py $(WASM) $(OCI_DIR) $(OCI_TAG)

deps: rust-deps py-deps node-deps prom-deps oci-deps compose-deps kubectl-deps

wasm: rust-deps
	cargo build --release --target wasm32-wasip1 -p kafka-filter
	@ls -l $(WASM) | awk '{print "wasm size: " $$5 " bytes"}'

# Never shipped: its own target dir, so it never replaces $(WASM).
wasm-fault: rust-deps
	cargo build --release --target wasm32-wasip1 -p kafka-filter --features fault-injection --target-dir target/fault
	@ls -l $(WASM_FAULT) | awk '{print "fault-injection wasm size: " $$5 " bytes"}'

# The filter's tests, and the vendored decoder's own (its patch for untrusted input).
unit:
	cargo test -p kafka-filter
	cargo test -p kafka-protocol --lib

# The same tests built for wasm32-wasip1, where usize is 32 bits as in Envoy, run under Wasmtime (tests/wasi_run.py).
unit-wasm: rust-deps py-deps
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(abspath $(VPY)) $(abspath tests/wasi_run.py)" \
	  cargo test -p kafka-filter --target wasm32-wasip1

validate-config: wasm py-deps
	$(VPY) tests/validate_configs.py

# --durations: the slowest tests at the end of the log, to keep `make test` within CI's budget.
e2e: wasm wasm-fault py-deps node-deps prom-deps oci-deps compose-deps kubectl-deps
	$(VPY) -m pytest -v --durations=25 tests

test: lint unit unit-wasm validate-config fuzz-smoke e2e

# Coverage-guided fuzzing of the filter core (fuzz/: libFuzzer through cargo-fuzz, installed if
# missing; see fuzz/README.md). `fuzz` runs each target FUZZ_SECONDS; `fuzz-smoke` (part of `test`)
# builds without cargo-fuzz and runs each target FUZZ_SMOKE_SECONDS from a fixed seed.
# KAFKA_FUZZ_KNOWN (environment) lists open findings the oracles accept, see fuzz/README.md.
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 15

fuzz:
	fuzz/run.sh fuzz $(FUZZ_SECONDS)

fuzz-smoke:
	fuzz/run.sh smoke $(FUZZ_SMOKE_SECONDS)

# Re-record the seed corpora from real client traffic (tansu broker, librdkafka, kafka-python).
fuzz-seeds: py-deps
	$(VPY) fuzz/record.py

demo: wasm py-deps
	$(VPY) examples/demo.py

# Name conversion scenarios: a canary next to production, and two tenants on one broker.
example-canary: wasm py-deps
	$(VPY) examples/canary.py

example-tenants: wasm py-deps
	$(VPY) examples/tenants.py

# Two teams under ACLs by client id, and what the filter answers when one reaches for the other's.
example-acls: wasm py-deps
	$(VPY) examples/acls.py

# Plain Envoy in front of a broker that advertises itself: clients bypass Envoy without
# broker_addresses, and never with it.
example-brokers: wasm py-deps
	$(VPY) examples/brokers.py

# A producer held to its rate limit beside one that is not.
example-ratelimit: wasm py-deps
	$(VPY) examples/ratelimit.py

# The load generator (bench/, a workspace member), the do-nothing wasm filter (bench/wasm-floor), the filter core's cost harness built with
# symbols for callgrind, and valgrind itself (installed only if missing).
bench: wasm py-deps
	@command -v valgrind >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y valgrind || { $$SUDO apt-get update && $$SUDO apt-get install -y valgrind; }; }
	cargo build --release -p kafka-bench
	cargo build --release --target wasm32-wasip1 -p wasm-floor
	CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 \
	  cargo build --release -p kafka-filter --example core_cost --example conn_memory --target-dir target/cost
	$(VPY) bench/run.py $(BENCH_ARGS)

lint: rust-deps py-deps
	$(VPY) -m pyflakes tests/*.py istio/*.py examples/*.py bench/*.py fuzz/*.py
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p kafka-filter -p wasm-floor --target wasm32-wasip1 -- -D warnings
	cargo clippy -p kafka-filter --target wasm32-wasip1 --features fault-injection -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf $(VENV)
