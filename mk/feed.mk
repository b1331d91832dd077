# The feed server (server/, `certgate serve`). Its tests validate /metrics with Prometheus'
# `promtool check metrics`; Debian's `prometheus` package provides it.

PROMTOOL ?= promtool

.PHONY: promtool
promtool: ## install promtool (Debian prometheus), which the feed server's metrics test runs
	@scripts/apt-install.sh --no-install-recommends $(PROMTOOL) prometheus

.PHONY: test-server
test-server: promtool ## the feed server's tests: attacks on real sockets, endpoints, metrics through promtool
	cargo test -p certgate-server

# `make test` runs the workspace's tests, the feed server's among them.
test: promtool
