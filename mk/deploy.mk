# The Kubernetes kit of the feed server (deploy/). Included by the root Makefile, which
# provides `cli` and CERTGATE_BIN; mk/venv.mk provides `venv` (kubernetes-validate).

# The Kubernetes version whose schemas the kit must validate against.
DEPLOY_KUBERNETES_VERSION := 1.33.0

.PHONY: deploy-check
deploy-check: venv cli ## render deploy/ (kubectl kustomize), validate every object against Kubernetes' schemas, check its policies
	@scripts/apt-install.sh kubectl kubernetes-client
	@out=$$(mktemp) && trap 'rm -f "$$out"' EXIT && \
	  kubectl kustomize deploy/ > "$$out" && \
	  $(VENV)/bin/kubernetes-validate --strict --quiet -k $(DEPLOY_KUBERNETES_VERSION) "$$out" && \
	  echo "deploy/: $$(grep -c '^kind:' "$$out") objects valid for Kubernetes $(DEPLOY_KUBERNETES_VERSION)"
	$(CERTGATE_BIN) check deploy/policies/

test: deploy-check
