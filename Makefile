# Kiln: every target sets up its own virtual environment from the lock files first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kiln-installed-2
WORKSPACE ?= demo-workspace
PYTEST_ARGS ?=

# Debian packages steps need: the aarch64 cross compiler (kiln compile --target aarch64), and qemu and debootstrap
# for the emulated ARM device the tests run the edge agent on, and wrk for load tests (`kiln endpoint recommend`,
# the soak). Installed once, skipped when present.
SYSTEM_PACKAGES := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static debootstrap wrk
# The tests' own: a real browser for Kiln Studio's pages.
TEST_PACKAGES := chromium

.PHONY: setup system images demo test lock layers clean

setup: system $(STAMP)

system:
	@missing=""; for p in $(SYSTEM_PACKAGES) $(EXTRA_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then echo "installing Debian packages:$$missing"; \
			apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
		else echo "missing Debian packages (run as root, or: sudo apt-get install$$missing)"; fi; \
	fi

$(STAMP): requirements.lock requirements-bootstrap.lock pyproject.toml edge/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-bootstrap.lock
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes --compile-bytecode requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e . -e edge
	@# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set, every start would compile MLflow anew (seconds).
	$(BIN)/python -m compileall -q -j 0 src edge/src components pipelines >/dev/null
	@touch $(STAMP)

## The main job: Kiln's lifecycle, end to end, on the local embedded default.
demo: setup
	$(BIN)/kiln demo --workspace $(WORKSPACE)

## Kiln's images (platform and edge agent), on a base made here from Debian packages; a Docker engine is started for
## the build only when none answers (scripts/docker-engine.sh), and stopped after it.
images: system
	scripts/docker-engine.sh run scripts/images.sh

## The test suite (slow tests included): the images are built (or found up to date) and Kubernetes built once from
## Debian's source (scripts/dev-cluster.sh build, about 6 minutes the first time) first, and the suite runs with a
## Docker engine, started and stopped as for `images`.
test: setup
	@$(MAKE) --no-print-directory system EXTRA_PACKAGES="$(TEST_PACKAGES)"
	scripts/docker-engine.sh run sh -c 'scripts/images.sh && scripts/dev-cluster.sh build >/dev/null && \
		$(BIN)/python -m pytest $(PYTEST_ARGS)'

## Layer check alone (also part of the test suite).
layers: setup
	$(BIN)/lint-imports

## Re-resolve the locks after changing dependencies in pyproject.toml.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra test --extra build --extra examples --python-version 3.11 \
		--generate-hashes --no-header -o requirements.lock
	@# The platform image's: the same pins, without the test tools and the examples' libraries (Keras, JAX).
	$(BIN)/uv pip compile pyproject.toml --extra build --python-version 3.11 --generate-hashes --no-header \
		-c requirements.lock -o requirements-runtime.lock
	$(BIN)/uv pip compile requirements-bootstrap.in --python-version 3.11 --generate-hashes --no-header \
		-o requirements-bootstrap.lock

clean:
	rm -rf $(VENV) $(WORKSPACE)
