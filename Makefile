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
	$(PY) -m pytest tests

clean:
	rm -rf runs .pytest_cache
