# End-to-end tests and the demo (e2e/). Included by the root Makefile, which provides
# the `envoy` and `cli` targets and exports CERTGATE_ENVOY and CERTGATE_BIN; mk/filter.mk
# provides `filter` and FILTER_WASM.

# Two Envoys at a time: one per core on the 2-core machines this runs on.
E2E_THREADS ?= 2

.PHONY: e2e
e2e: envoy envoys filter cli oci-tools venv ## end-to-end tests: real Envoy, real filter, real certificates and clients
	CERTGATE_FILTER_WASM=$(abspath $(FILTER_WASM)) \
	  cargo test -p certgate-e2e --test tests -- --test-threads $(E2E_THREADS)

.PHONY: demo
demo: envoy filter cli ## compile the demo policy, start a backend and Envoy, run four clients, print what happened
	CERTGATE_FILTER_WASM=$(abspath $(FILTER_WASM)) cargo run -q -p certgate-e2e --bin demo
