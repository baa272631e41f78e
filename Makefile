# The two commands of the README. Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test clean

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
	$(PY) -m pytest tests

clean:
	rm -rf runs .pytest_cache
