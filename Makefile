# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create the virtual environment from the lock file first; nothing is
# installed by hand.

PY ?= python3
VENV := .venv
UV_VERSION := 0.13.9

.PHONY: demo test venv node system-deps bench

demo: venv
	$(VENV)/bin/streetsense demo

test: venv node system-deps
	$(VENV)/bin/python -m pytest

bench: venv
	$(VENV)/bin/streetsense bench ingest --json

venv: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(PY) -m uv sync --frozen --python $(PY)
	touch $@

node: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The tests start their own Mosquitto processes and drive a headless Chromium;
# both come from Debian's packages.
SYSTEM_PACKAGES := mosquitto chromium
system-deps:
	@missing=""; \
	{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || missing="$$missing mosquitto"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "the tests need:$$missing (sudo apt-get install$$missing)" >&2; exit 1; fi; \
	fi
