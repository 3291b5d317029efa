# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create the virtual environment from the lock file first; nothing is
# installed by hand.

PY ?= python3
VENV := .venv
UV_VERSION := 0.13.9

.PHONY: demo test venv node mosquitto bench

demo: venv
	$(VENV)/bin/streetsense demo

test: venv node mosquitto
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

# The tests start their own Mosquitto processes; they need the binary.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || command -v /usr/sbin/mosquitto >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; \
	  else echo "mosquitto is needed by the tests: sudo apt-get install mosquitto" >&2; exit 1; fi; }
