# Policy CI for the example policies (policies/): what docs/ci.md runs in a pipeline, for
# people. `cargo test` runs the same tests (cli/tests/suite/policy_ci.rs). Included by
# the root Makefile; each example is its own table, so check and report go file by file.
POLICY_FILES := $(filter-out %.test.yaml,$(wildcard policies/*.yaml))

.PHONY: policy-test
policy-test: cli ## run the example policies' tests (policies/*.test.yaml) with rule coverage
	$(CERTGATE) test --coverage policies/

.PHONY: policy-check
policy-check: cli ## check every example policy, warnings denied
	@for p in $(POLICY_FILES); do echo "$$p"; $(CERTGATE) check --deny-warnings "$$p" || exit 1; done

.PHONY: policy-report
policy-report: cli ## score every example policy against docs/hardening.md (markdown)
	@for p in $(POLICY_FILES); do $(CERTGATE) report "$$p"; echo; done

# Diff a policy against another git revision: make policy-diff POLICY=policies/zero-trust.yaml BASE=origin/main
BASE ?= HEAD
.PHONY: policy-diff
policy-diff: cli ## diff POLICY against its version at BASE (default HEAD): who gains or loses access
	@test -n "$(POLICY)" || { echo "usage: make policy-diff POLICY=policies/x.yaml [BASE=rev]" >&2; exit 2; }
	@tmp=$$(mktemp -d); trap 'git worktree remove --force "$$tmp/base" >/dev/null 2>&1; rm -rf "$$tmp"' EXIT; \
	  git worktree add --detach --quiet "$$tmp/base" "$(BASE)" && \
	  $(CERTGATE) diff "$$tmp/base/$(POLICY)" "$(POLICY)"
