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

# The feed server's image: `certgate` linked statically (glibc's crt-static, so no libc is
# needed at run time) and packaged FROM scratch by the same packager. Built for the host's
# x86_64 target with target-scoped RUSTFLAGS (build scripts and proc macros stay dynamic);
# Debian's libc6-dev provides the static libc (libc.a). `serve` listens on an IP and
# resolves no name today; should it (CRL URLs), glibc 2.34 and later keep the `files` and
# `dns` lookups inside libc, so a static binary reads the /etc/hosts and /etc/resolv.conf
# Kubernetes mounts into every container, with no NSS module to load.
STATIC_TARGET := x86_64-unknown-linux-gnu
# scripts/apt-install.sh checks executables; the static libc is a library, so its absence is
# tested here and `-` tells the script something is missing.
STATIC_LIBC := /usr/lib/x86_64-linux-gnu/libc.a
STATIC_CERTGATE := $(TARGET_DIR)/$(STATIC_TARGET)/release/certgate
export CERTGATE_STATIC_BIN := $(abspath $(STATIC_CERTGATE))
# The image's tag (and version label): the workspace version, which `certgate --version`
# prints and deploy/deployment.yaml's image names (e2e/tests/image.rs checks both).
IMAGE_TAG := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
IMAGE_OUT ?= $(TARGET_DIR)/oci
export CERTGATE_IMAGE_LAYOUT := $(abspath $(IMAGE_OUT))/server

.PHONY: static-cli
static-cli: ## a statically linked certgate (target/x86_64-unknown-linux-gnu/release/certgate): runs with no file but itself
	@$(if $(wildcard $(STATIC_LIBC)),true,scripts/apt-install.sh - libc6-dev)
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
	  cargo build --release -p certgate-cli --bin certgate --target $(STATIC_TARGET)

.PHONY: image
image: static-cli cli ## the feed server (`certgate serve`) as a FROM scratch OCI image layout in target/oci/server; prints its manifest digest
	$(CERTGATE) package --binary $(STATIC_CERTGATE) --tag $(IMAGE_TAG) --out $(IMAGE_OUT)

# The image test (e2e/tests/image.rs) reads the layout and runs the static binary.
test e2e: image
