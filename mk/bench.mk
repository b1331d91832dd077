# Benchmarks (bench/): criterion micro benchmarks of the engine, the Envoy harness that
# compares certgate with no filter, a no-op wasm filter and native RBAC, and the feed load
# test that runs `certgate serve` beside nginx under a fleet's pollers, and the fleet
# simulation (a revocation reaching 10,000 long-polling pollers as a delta). Included by the
# root Makefile; results land in docs/bench/ (docs/benchmarks.md explains them).
NOOP_WASM := $(TARGET_DIR)/wasm32-wasip1/wasm-release/certgate_noop_filter.wasm
export CERTGATE_NOOP_WASM := $(abspath $(NOOP_WASM))
# Where the tables and the chart go (docs/bench/ for the figures docs/benchmarks.md quotes).
BENCH_DOCS ?= docs/bench
# Envoy's pid while the harness runs, so the recipe can kill it even if the harness dies.
BENCH_PID := $(TARGET_DIR)/bench-envoy.pid
# Extra harness flags, e.g. BENCH_ENVOY_FLAGS="--rounds 5 --seconds 8".
BENCH_ENVOY_FLAGS ?=
# Seconds of each profiled phase (10 interleaved rounds of the wasm cases; 0: no profile); needs perf.
BENCH_PROFILE ?= 1.5

.PHONY: bench
bench: bench-micro bench-envoy bench-feed bench-fleet ## all four benchmarks (about 14 minutes with a warm build cache); tables printed and written to docs/bench/

.PHONY: bench-micro
bench-micro: ## criterion benchmarks of evaluate/decode/parse and the 1M-serial revocation goals
	CERTGATE_BENCH_DOCS=$(abspath $(BENCH_DOCS)) cargo bench -p certgate-bench --bench engine

.PHONY: bench-wasm-probe
bench-wasm-probe: wasm-target nodejs ## the filter's cold certificate path, piece by piece, as wasm under V8 (node)
	cargo build -p certgate-bench-wasm-probe --target wasm32-wasip1 --profile wasm-release
	node --no-liftoff --no-warnings bench/wasm-probe/run.mjs $(TARGET_DIR)/wasm32-wasip1/wasm-release/wasm-probe.wasm bench/wasm-probe/leaf.pem

.PHONY: noop-filter
noop-filter: wasm-target ## the no-op proxy-wasm filter of case (w)
	cargo build -p certgate-bench-noop-filter --target wasm32-wasip1 --profile wasm-release

.PHONY: perf
perf: ## Debian's linux-perf, for bench-envoy's profile (installed as root when missing)
	@perf --version >/dev/null 2>&1 || scripts/apt-install.sh - linux-perf

.PHONY: bench-envoy
bench-envoy: envoy filter noop-filter ## Envoy CPU/connection and conn/s: certgate vs no filter, no-op wasm, RBAC; then a perf profile
	cargo build --release -p certgate-bench --bin bench-envoy
	@[ "$(BENCH_PROFILE)" = 0 ] || $(MAKE) --no-print-directory perf || echo "bench-envoy: no perf, so no profile" >&2
	@rm -f $(BENCH_PID); \
	trap 'test -s $(BENCH_PID) && kill $$(cat $(BENCH_PID)) 2>/dev/null; rm -f $(BENCH_PID)' EXIT; \
	$(TARGET_DIR)/release/bench-envoy --out $(BENCH_DOCS) --pid-file $(BENCH_PID) --profile $(BENCH_PROFILE) $(BENCH_ENVOY_FLAGS); \
	status=$$?; exit $$status  # not the last command, so bash cannot exec it and skip the trap

# The feed load test's baseline: Debian's nginx serving the same table as a static file.
# The harness runs it unprivileged with a generated configuration in a scratch directory;
# it never touches the system service (where a Debian install starts one, it is left as is).
NGINX := /usr/sbin/nginx
export CERTGATE_NGINX := $(NGINX)
# The release build of the CLI: a debug server would measure the build, not the server.
CERTGATE_RELEASE := $(TARGET_DIR)/release/certgate
# The servers' pids while the harness runs, so the recipe can kill them if the harness dies.
BENCH_FEED_PID := $(TARGET_DIR)/bench-feed.pid
# Extra harness flags, e.g. BENCH_FEED_FLAGS="--pollers 1000 --seconds 5".
BENCH_FEED_FLAGS ?=

.PHONY: nginx
nginx: ## Debian's nginx, the baseline of the feed load test (installed as root when missing)
	@scripts/apt-install.sh --no-install-recommends $(NGINX) nginx

.PHONY: bench-feed
bench-feed: nginx ## `certgate serve` under 1,000/5,000/10,000 keep-alive pollers and an idle-connection attack, beside nginx (about 4 minutes)
	cargo build --release -p certgate-cli --bin certgate
	cargo build --release -p certgate-bench --bin bench-feed
	@rm -f $(BENCH_FEED_PID); \
	trap 'test -s $(BENCH_FEED_PID) && kill $$(cat $(BENCH_FEED_PID)) 2>/dev/null; rm -f $(BENCH_FEED_PID)' EXIT; \
	$(TARGET_DIR)/release/bench-feed --certgate $(CERTGATE_RELEASE) --out $(BENCH_DOCS) --pid-file $(BENCH_FEED_PID) $(BENCH_FEED_FLAGS); \
	status=$$?; exit $$status  # not the last command, so bash cannot exec it and skip the trap

# The fleet simulation's server pid while it runs, so the recipe can kill it if the harness dies.
BENCH_FLEET_PID := $(TARGET_DIR)/bench-fleet.pid
# Extra harness flags, e.g. BENCH_FLEET_FLAGS="--pollers 1000 --serials 100000".
BENCH_FLEET_FLAGS ?=

.PHONY: bench-fleet
bench-fleet: ## fleet simulation: 10,000 long-polling pollers get a one-serial revocation of a 1M-serial table as a delta, beside plain 5 s polling (about 2 minutes)
	cargo build --release -p certgate-cli --bin certgate
	cargo build --release -p certgate-bench --bin bench-fleet
	@rm -f $(BENCH_FLEET_PID); \
	trap 'test -s $(BENCH_FLEET_PID) && kill $$(cat $(BENCH_FLEET_PID)) 2>/dev/null; rm -f $(BENCH_FLEET_PID)' EXIT; \
	$(TARGET_DIR)/release/bench-fleet --certgate $(CERTGATE_RELEASE) --out $(BENCH_DOCS) --pid-file $(BENCH_FLEET_PID) $(BENCH_FLEET_FLAGS); \
	status=$$?; exit $$status  # not the last command, so bash cannot exec it and skip the trap
