# Every target that runs code depends on the install stamp, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs

.PHONY: install test lint summary demo m1 m2 m3 c1 data bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check den_tf experiments tests
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check den_tf experiments tests

summary: $(STAMP)
	$(PY) -m den_tf.main --config=experiments/m1_wrn.py --mode=summary

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
