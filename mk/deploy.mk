# The Kubernetes kit of the feed server (deploy/). Included by the root Makefile, which
# provides `cli` and CERTGATE_BIN; mk/venv.mk provides `venv` (kubernetes-validate). The
# kit's image, args, probes and `emit istio` invocation are tested against the real image
# and binary by e2e/tests/image.rs (`make image` builds them).

# The Kubernetes versions whose schemas (strict: no unknown field) the kit must validate
# against: the oldest and the newest that PyPI kubernetes-validate (pinned in
# scripts/venv-requirements.txt) carries and that clusters still run, and one between.
DEPLOY_KUBERNETES_VERSIONS := 1.30.0 1.33.0 1.37.0

.PHONY: deploy-tools
deploy-tools: ## Debian's kubectl (kubernetes-client) for deploy-check and the kit's e2e test (installed as root when missing)
	@scripts/apt-install.sh kubectl kubernetes-client

.PHONY: deploy-check
deploy-check: venv cli deploy-tools ## render deploy/ (kubectl kustomize), validate every object against the schemas of each pinned Kubernetes version, check its policies
	@out=$$(mktemp) && trap 'rm -f "$$out"' EXIT && \
	  kubectl kustomize deploy/ > "$$out" && \
	  for v in $(DEPLOY_KUBERNETES_VERSIONS); do \
	    $(VENV)/bin/kubernetes-validate --strict --quiet -k $$v "$$out" || exit 1; \
	    echo "deploy/: $$(grep -c '^kind:' "$$out") objects valid for Kubernetes $$v (strict)"; \
	  done
	$(CERTGATE_BIN) check deploy/policies/

test: deploy-check
# e2e/tests/image.rs renders the kit with kubectl.
e2e: deploy-tools
