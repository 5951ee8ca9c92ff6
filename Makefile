# Every target that runs code depends on the install stamp, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs

DATASETS ?= cifar10,cifar100,stl10,tiny_imagenet
# The project's data home (data/README.md); every config reads data/tfds by default.
DATA_DIR ?= data/tfds
MANUAL_DIR ?= data/manual

.PHONY: install test lint summary demo sweep demo-rho ablation-levels ablation-initial m1 m2 m3 c1 data bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Grouped convolutions run with TensorFlow's oneDNN kernels on and off (CPUs differ in the
# default), then the whole suite under this machine's default.
test: $(STAMP)
	$(VENV)/bin/ruff check den_tf experiments tests
	TF_ENABLE_ONEDNN_OPTS=0 $(PY) -m pytest -q -p no:cacheprovider tests/test_blocks.py -k "bottleneck or grouped or onednn"
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_blocks.py -k "bottleneck or grouped or onednn"
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check den_tf experiments tests

summary: $(STAMP)
	$(PY) -m den_tf.main --config=experiments/m1_wrn.py --mode=summary

# The offline demo: embedded synthetic data, no download. `make demo SEEDS=5` runs seeds
# 0..4 into runs/demo_seeds and reports means with 95% intervals (den_tf/sweep.py).
demo: $(STAMP)
ifdef SEEDS
	$(PY) -m den_tf.sweep --config=experiments/demo.py --workdir=$(WORKDIR)/demo_seeds --seeds=$(SEEDS) $(ARGS)
else
	$(PY) -m den_tf.main --config=experiments/demo.py --workdir=$(WORKDIR)/demo $(ARGS)
	$(PY) -m den_tf.analyze --config=experiments/demo.py --workdir=$(WORKDIR)/demo $(ARGS)
endif

# Any config over seeds: make sweep CONFIG=experiments/m3.py SEEDS=3 [ARGS=--config.rho=0.5]
CONFIG ?= experiments/demo.py
sweep: $(STAMP)
	$(PY) -m den_tf.sweep --config=$(CONFIG) --workdir=$(WORKDIR)/sweep_$(basename $(notdir $(CONFIG))) --seeds=$(or $(SEEDS),5) $(ARGS)

# The demo's accuracy-FLOPs trade-off across rho, and the paper's Fig. 5 ablations (the number
# of levels; the first stage's initial distribution) on CONFIG (default: the demo; the paper
# used WRN-32-4 on CIFAR-100). Each trains its runs (an interrupted one resumes, a finished one
# is only evaluated again), then draws them with den_tf.analyze.
comma := ,
empty :=
space := $(empty) $(empty)
RHOS ?= 0.1 0.3 0.5
LEVELS ?= 2 3 4 5
INITIALS ?= eq8 uniform selector
demo-rho: $(STAMP)
	for v in $(RHOS); do $(PY) -m den_tf.main --config=experiments/demo.py --workdir=$(WORKDIR)/demo_rho/$$v --config.rho=$$v $(ARGS) || exit 1; done
	$(PY) -m den_tf.analyze --workdir=$(WORKDIR)/demo_rho --vary=rho --runs=$(subst $(space),$(comma),$(addprefix $(WORKDIR)/demo_rho/,$(RHOS)))

ablation-levels: $(STAMP)
	for v in $(LEVELS); do $(PY) -m den_tf.main --config=$(CONFIG) --workdir=$(WORKDIR)/ablation_levels/$$v --config.model.levels=$$v '--config.model.fractions=()' $(ARGS) || exit 1; done
	$(PY) -m den_tf.analyze --workdir=$(WORKDIR)/ablation_levels --vary=model.levels --runs=$(subst $(space),$(comma),$(addprefix $(WORKDIR)/ablation_levels/,$(LEVELS)))

ablation-initial: $(STAMP)
	for v in $(INITIALS); do $(PY) -m den_tf.main --config=$(CONFIG) --workdir=$(WORKDIR)/ablation_initial/$$v --config.train.estimator.initial_distribution=$$v $(ARGS) || exit 1; done
	$(PY) -m den_tf.analyze --workdir=$(WORKDIR)/ablation_initial --vary=train.estimator.initial_distribution --runs=$(subst $(space),$(comma),$(addprefix $(WORKDIR)/ablation_initial/,$(INITIALS)))

# The paper's scenarios (real data, prepared with `make data`; a GPU is advised), with any
# compared method (den_tf/methods.py): make m1 METHOD=nestednet [RHO=0.1] trains into
# runs/m1_wrn/<method>[_rho<r>].
METHOD ?= den
RUN = $(METHOD)$(if $(RHO),_rho$(RHO))
METHOD_ARGS = --config.method=$(METHOD) $(if $(RHO),--config.rho=$(RHO))
m1: $(STAMP)
	$(PY) -m den_tf.main --config=experiments/m1_wrn.py --workdir=$(WORKDIR)/m1_wrn/$(RUN) $(METHOD_ARGS) $(ARGS)

m2: $(STAMP)
	$(PY) -m den_tf.main --config=experiments/m2.py:84 --workdir=$(WORKDIR)/m2_84/$(RUN) $(METHOD_ARGS) $(ARGS)

m3: $(STAMP)
	$(PY) -m den_tf.main --config=experiments/m3.py --workdir=$(WORKDIR)/m3/$(RUN) $(METHOD_ARGS) $(ARGS)

c1: $(STAMP)
	$(PY) -m den_tf.main --config=experiments/c1_resnext.py:8 --workdir=$(WORKDIR)/c1_resnext8/$(RUN) $(METHOD_ARGS) $(ARGS)

data: $(STAMP)
	$(PY) -m den_tf.datasets.prepare --datasets=$(DATASETS) --data_dir=$(DATA_DIR) --manual_dir=$(MANUAL_DIR)

# Input pipeline of the M1 mix, then the M1 model's training and inference throughput.
bench: $(STAMP)
	$(PY) -m den_tf.datasets.bench --data_dir=$(DATA_DIR)
	$(PY) -m den_tf.bench --config=experiments/m1_wrn.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
