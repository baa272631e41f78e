# The two commands of the README. Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
# The suite's processes (pytest-xdist); each file's tests run in one of them, with its module
# fixtures, the longest files first (tests/conftest.py); 0 runs it in this one process.
# TensorFlow keeps its own thread pools in each: capping them at a core per worker made
# training-heavy files slower.
TEST_WORKERS ?= 2

.PHONY: demo test image clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Dependencies at the versions in constraints.txt, the same the Docker image installs.
$(VENV)/.installed: setup.py constraints.txt | $(PY)
	$(PY) -m pip install --quiet --constraint constraints.txt -e .
	touch $@

$(VENV)/.installed-test: setup.py constraints.txt | $(PY)
	$(PY) -m pip install --quiet --constraint constraints.txt -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m trainer.train_model_local

test: $(VENV)/.installed-test
	@# The report tests open report.html in a real browser and draw the model with Graphviz's `dot`;
	@# install Debian's Chromium and Graphviz if we can, so that those tests run instead of skipping.
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
		|| echo "make: could not install$$missing; the tests that need them will be skipped" >&2; fi
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# The training image, with the build args of cloudbuild.yaml's build step; BASE_IMAGE may name any
# Debian or Ubuntu image with Python 3.10+ and pip (docs/container.md). The builder is Docker when
# its daemon answers, else buildah (layers cached like Docker's; the host's CA bundle mounted, so
# that pip trusts what the host trusts, e.g. a TLS-inspecting proxy).
BASE_IMAGE  ?= tensorflow/tensorflow:2.21.0-gpu
IMAGE       ?= trainer
BUILD_FLAGS ?=
CA_BUNDLE   := /etc/ssl/certs/ca-certificates.crt

image:
	@if $$(command -v timeout >/dev/null && echo timeout 10) docker info >/dev/null 2>&1; then \
		set -x; docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) $(BUILD_FLAGS) --tag $(IMAGE) .; \
	elif command -v buildah >/dev/null 2>&1; then \
		set -x; buildah bud --layers --isolation chroot \
			$(if $(wildcard $(CA_BUNDLE)),--volume $(CA_BUNDLE):$(CA_BUNDLE):ro) \
			--build-arg BASE_IMAGE=$(BASE_IMAGE) $(BUILD_FLAGS) --tag $(IMAGE) .; \
	else echo "make: no image builder: install Docker (its daemon running) or buildah" >&2; exit 1; fi

clean:
	rm -rf runs .pytest_cache
