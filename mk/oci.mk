# The filter as an OCI image (`certgate package`, cli/src/oci.rs) and the real registry
# and client its test pushes to. Included by the root Makefile.
OCI_OUT ?= $(TARGET_DIR)/oci
# Debian's distribution registry and skopeo: the OCI test (e2e/tests/oci.rs) runs
# `docker-registry` on 127.0.0.1 and pushes both image forms with `skopeo copy`.
OCI_TOOLS := /usr/bin/docker-registry,/usr/bin/skopeo

.PHONY: oci-tools
oci-tools: ## Debian's docker-registry and skopeo for the OCI test (installed as root when missing)
	@scripts/apt-install.sh --no-install-recommends $(OCI_TOOLS) docker-registry skopeo

.PHONY: oci
oci: filter cli ## the filter as an OCI image layout in target/oci/{compat,artifact} (under CARGO_TARGET_DIR when set); prints both manifest digests
	$(CERTGATE) package --wasm $(FILTER_WASM) --out $(OCI_OUT)
