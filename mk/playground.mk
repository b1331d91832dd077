# The browser playground (playground/): the certgate-playground crate (the compiler and
# engine built for the browser with wasm-bindgen), plus a static page. Included by the root
# Makefile.
PLAYGROUND_OUT := $(TARGET_DIR)/playground
PLAYGROUND_SITE := $(PLAYGROUND_OUT)/site
PLAYGROUND_WASM := $(TARGET_DIR)/wasm32-unknown-unknown/wasm-release/certgate_playground.wasm
PLAYGROUND_PORT ?= 8000
# The generated JavaScript glue must come from the same wasm-bindgen as the crate: read the
# exact pin from playground/Cargo.toml so there is one place to bump it.
WASM_BINDGEN_VERSION := $(shell sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' playground/Cargo.toml)
WASM_BINDGEN := $(TOOLS)/bin/wasm-bindgen
# As for the filter: no local path in the shipped module.
PLAYGROUND_RUSTFLAGS := --remap-path-prefix=$(or $(CARGO_HOME),$(HOME)/.cargo)=/cargo --remap-path-prefix=$(CURDIR)=/certgate
CHROMIUM := /usr/bin/chromium

.PHONY: playground-target
playground-target:
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# Installed into .tools/ once, and again only when the pin changes. 0.2.130's published
# lockfile names webpki-roots 1.0.11, which the registry here does not serve: when --locked
# cannot resolve, install with freshly resolved dependencies.
.PHONY: wasm-bindgen-tool
wasm-bindgen-tool:
	@[ -n "$(WASM_BINDGEN_VERSION)" ] || { echo "no exact wasm-bindgen pin in playground/Cargo.toml" >&2; exit 1; }
	@[ "$$($(WASM_BINDGEN) --version 2>/dev/null)" = "wasm-bindgen $(WASM_BINDGEN_VERSION)" ] || { \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into $(TOOLS) (a few minutes, once)"; \
	  cargo install --locked --root $(TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) || \
	  cargo install --root $(TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); }

# The workspace's size profile, but unstripped: wasm-bindgen reads the feature section that
# strip removes, and drops the name section itself. No wasm-opt pass: Debian's binaryen
# breaks the glue's reference-types table (seen with 0.2.130: `WebAssembly.Table.set()`
# fails at load), and it saved only 6%.
.PHONY: playground
playground: playground-target wasm-bindgen-tool ## build the browser playground into target/playground/site (under CARGO_TARGET_DIR when set)
	CARGO_PROFILE_WASM_RELEASE_STRIP=false RUSTFLAGS="$(PLAYGROUND_RUSTFLAGS)" cargo rustc -p certgate-playground --lib --crate-type cdylib \
	  --target wasm32-unknown-unknown --profile wasm-release
	rm -rf $(PLAYGROUND_SITE) && mkdir -p $(PLAYGROUND_SITE)/pkg
	$(WASM_BINDGEN) --target web --no-typescript --remove-name-section --remove-producers-section \
	  --out-dir $(PLAYGROUND_SITE)/pkg $(PLAYGROUND_WASM)
	cp playground/index.html playground/style.css playground/app.js $(PLAYGROUND_SITE)/
	python3 playground/bundle_examples.py $(PLAYGROUND_SITE)/examples.json
	@echo "$(PLAYGROUND_SITE): $$(du -sk $(PLAYGROUND_SITE) | cut -f1) KB ($$(stat -c %s $(PLAYGROUND_SITE)/pkg/certgate_playground_bg.wasm) bytes of wasm)"

.PHONY: playground-serve
playground-serve: playground ## serve the playground on http://localhost:8000/ (PLAYGROUND_PORT=N to change; Ctrl+C stops)
	@echo "certgate playground: http://localhost:$(PLAYGROUND_PORT)/"
	cd $(PLAYGROUND_SITE) && python3 -m http.server --bind 127.0.0.1 $(PLAYGROUND_PORT)

# node and npm: Debian's packages when missing (as root, like CI).
.PHONY: nodejs
nodejs:
	@scripts/apt-install.sh node,npm nodejs npm

# Debian's chromium (as root, like CI) and playwright-core from package-lock.json; Playwright
# never downloads a browser here.
.PHONY: playground-browser
playground-browser: nodejs
	@scripts/apt-install.sh $(CHROMIUM) chromium
	@[ -d playground/node_modules/playwright-core ] || (cd playground && npm ci --no-audit --no-fund)

.PHONY: playground-test
playground-test: playground cli playground-browser ## browser test: the page in headless chromium, decisions equal certgate eval
	cd playground && CHROMIUM=$(CHROMIUM) PLAYGROUND_SITE=$(abspath $(PLAYGROUND_SITE)) \
	  PLAYGROUND_ARTIFACTS=$(abspath $(PLAYGROUND_OUT)) node --test tests/
