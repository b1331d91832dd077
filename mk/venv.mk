# The project's Python virtualenv (.tools/venv) for test tools from PyPI, pinned in
# scripts/venv-requirements.txt. Included by the root Makefile, which provides TOOLS.
# Tests find the interpreter through CERTGATE_PYTHON and fail with a clear message when
# it is unset.
VENV := $(TOOLS)/venv
export CERTGATE_PYTHON := $(VENV)/bin/python

.PHONY: venv
venv: $(VENV)/.installed ## Python tools for the tests (jsonschema, PyYAML) in .tools/venv
# Debian's python3 creates venvs only with python3-venv installed (as root, like CI); a
# half-made venv without pip is removed and made again.
$(VENV)/.installed: scripts/venv-requirements.txt
	@[ -x $(VENV)/bin/pip ] || { rm -rf $(VENV); python3 -m venv $(VENV) 2>/dev/null; } || { \
	  rm -rf $(VENV); scripts/apt-install.sh - python3-venv && python3 -m venv $(VENV); }
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	@touch $@

# Every target that runs the tests that validate emitted WasmPlugins.
test e2e: venv
