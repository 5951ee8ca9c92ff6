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

.PHONY: install test lint summary demo sweep demo-rho ablation-levels ablation-initial m1 m2 m3 c1 table2 table3 table4 table5 demo-table data bench clean

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
# 0..4 into runs/demo_seeds and reports means with 95% intervals (den_tf/sweep.py). The demo
# with the paper's policy gradient: `make sweep CONFIG=experiments/demo_policy_gradient.py`.
demo: $(STAMP)
ifdef SEEDS
	$(PY) -m den_tf.sweep --config=experiments/demo.py --workdir=$(WORKDIR)/demo_seeds --seeds=$(SEEDS) $(ARGS)
else
	$(PY) -m den_tf.main --config=experiments/demo.py --workdir=$(WORKDIR)/demo --analyze $(ARGS)
endif

# Any config over seeds: make sweep CONFIG=experiments/m3.py SEEDS=3 [ARGS=--config.rho=0.5]
CONFIG ?= experiments/demo.py
# The config's name with its argument (experiments/m2.py:84 -> m2_84), so that each config and
# argument gets directories of its own; the demo's keep their names.
CONFIG_NAME = $(patsubst %.py,%,$(subst .py:,_,$(notdir $(CONFIG))))
CONFIG_PREFIX = $(if $(filter demo,$(CONFIG_NAME)),,$(CONFIG_NAME)_)
sweep: $(STAMP)
	$(PY) -m den_tf.sweep --config=$(CONFIG) --workdir=$(WORKDIR)/sweep_$(CONFIG_NAME) --seeds=$(or $(SEEDS),5) $(ARGS)

# The accuracy-FLOPs trade-off across rho, and the paper's Fig. 5 ablations (the number of
# levels; the first stage's initial distribution) on CONFIG (default: the demo; the paper
# used WRN-32-4 on CIFAR-100). Each trains its runs (an interrupted one resumes, a finished one
# is only evaluated again), then draws them with den_tf.analyze.
comma := ,
empty :=
space := $(empty) $(empty)
RHOS ?= 0.1 0.3 0.5
LEVELS ?= 2 3 4 5
INITIALS ?= eq8 uniform selector
RHO_DIR = $(WORKDIR)/$(if $(CONFIG_PREFIX),$(CONFIG_PREFIX)rho,demo_rho)
LEVELS_DIR = $(WORKDIR)/$(CONFIG_PREFIX)ablation_levels
INITIAL_DIR = $(WORKDIR)/$(CONFIG_PREFIX)ablation_initial
demo-rho: $(STAMP)
	for v in $(RHOS); do $(PY) -m den_tf.main --config=$(CONFIG) --workdir=$(RHO_DIR)/$$v --config.rho=$$v $(ARGS) || exit 1; done
	$(PY) -m den_tf.analyze --workdir=$(RHO_DIR) --vary=rho --runs=$(subst $(space),$(comma),$(addprefix $(RHO_DIR)/,$(RHOS)))

ablation-levels: $(STAMP)
	for v in $(LEVELS); do $(PY) -m den_tf.main --config=$(CONFIG) --workdir=$(LEVELS_DIR)/$$v --config.model.levels=$$v '--config.model.fractions=()' $(ARGS) || exit 1; done
	$(PY) -m den_tf.analyze --workdir=$(LEVELS_DIR) --vary=model.levels --runs=$(subst $(space),$(comma),$(addprefix $(LEVELS_DIR)/,$(LEVELS)))

ablation-initial: $(STAMP)
	for v in $(INITIALS); do $(PY) -m den_tf.main --config=$(CONFIG) --workdir=$(INITIAL_DIR)/$$v --config.train.estimator.initial_distribution=$$v $(ARGS) || exit 1; done
	$(PY) -m den_tf.analyze --workdir=$(INITIAL_DIR) --vary=train.estimator.initial_distribution --runs=$(subst $(space),$(comma),$(addprefix $(INITIAL_DIR)/,$(INITIALS)))

# The paper's scenarios (real data, prepared with `make data`; a GPU is advised), with any
# compared method (den_tf/methods.py): make m1 METHOD=blockdrop trains into
# runs/m1_wrn/<method>, make m1 RHO=0.1 into runs/m1_wrn/den_rho0.1.
# DEN runs are named by their rho, the config's own (the second argument) unless RHO is given,
# as the table targets name them: `make m3` trains the run `make table4` reports, not a copy.
# RHO goes only with DEN: no other method reads it (BlockDrop's reward has its own gamma).
METHOD ?= den
$(if $(and $(RHO),$(filter-out den,$(METHOD))),$(error RHO sets DEN's sparsity cost; METHOD=$(METHOD) does not read it))
scenario_rho = $(if $(filter den,$(METHOD)),$(or $(RHO),$(1)))
# $(call scenario,CONFIG,DIR,CONFIG'S RHO)
scenario = $(PY) -m den_tf.main --config=$(1) --workdir=$(WORKDIR)/$(2)/$(METHOD)$(if $(call scenario_rho,$(3)),_rho$(call scenario_rho,$(3))) --config.method=$(METHOD) $(if $(call scenario_rho,$(3)),--config.rho=$(call scenario_rho,$(3))) $(ARGS)
m1: $(STAMP)
	$(call scenario,experiments/m1_wrn.py,m1_wrn,1)

m2: $(STAMP)
	$(call scenario,experiments/m2.py:84,m2_84,1)

m3: $(STAMP)
	$(call scenario,experiments/m3.py,m3,1)

# (into the directory `make table5` reports: C1_RUNS, below)
c1: $(STAMP)
	$(call scenario,experiments/c1_resnext.py:8,c1_$(DATASET)/resnext8,0.1) --config.tasks=$(DATASET)

# The paper's tables: every method of a table in sequence (a run that finished, with its
# results.json, is skipped; an interrupted one resumes), then the table beside the published
# numbers (den_tf/report.py, written to report.md).
# $(call train_once,CONFIG,DIR,METHOD[,RHO])
train_once = test -f $(2)/results.json || $(PY) -m den_tf.main --config=$(1) --workdir=$(2) --config.method=$(3) $(if $(4),--config.rho=$(4)) $(ARGS)
# Table 2: (b) WRN-32-4, then (a) ResNet-42.
table2: $(STAMP)
	for b in m1_wrn m1_resnet; do \
	  for m in baseline nestednet packnet; do $(call train_once,experiments/$$b.py,$(WORKDIR)/$$b/$$m,$$m) || exit 1; done; \
	  for r in 1 0.1; do $(call train_once,experiments/$$b.py,$(WORKDIR)/$$b/den_rho$$r,den,$$r) || exit 1; done; \
	done
	$(PY) -m den_tf.report $(WORKDIR)/m1_wrn $(WORKDIR)/m1_resnet

table3: $(STAMP)
	$(call train_once,experiments/m2.py:84,$(WORKDIR)/m2_84/baseline,baseline)
	for s in 224 84; do for r in 1 0.1; do $(call train_once,experiments/m2.py:$$s,$(WORKDIR)/m2_$$s/den_rho$$r,den,$$r) || exit 1; done; done
	$(PY) -m den_tf.report $(WORKDIR)/m2_224 $(WORKDIR)/m2_84

table4: $(STAMP)
	for m in baseline nestednet packnet; do $(call train_once,experiments/m3.py,$(WORKDIR)/m3/$$m,$$m) || exit 1; done
	$(call train_once,experiments/m3.py,$(WORKDIR)/m3/den_rho1,den,1)
	$(PY) -m den_tf.report $(WORKDIR)/m3

# Table 5 on CIFAR-10 (DATASET=cifar100 for its other half).
DATASET ?= cifar10
C1_RUNS = $(WORKDIR)/c1_$(DATASET)
table5: $(STAMP)
	for c in vgg resnext8 resnext4 resnext2; do \
	  config=$$(case $$c in vgg) echo experiments/c1_vgg.py;; resnext8) echo experiments/c1_resnext.py:8;; resnext4) echo experiments/c1_resnext.py:4;; resnext2) echo experiments/c1_resnext.py:2;; esac); \
	  methods="baseline $$(test $$c = resnext2 || echo nestednet) $$(test $$c = vgg || test $$c = resnext2 || echo blockdrop)"; \
	  for m in $$methods; do $(call train_once,$$config,$(C1_RUNS)/$$c/$$m,$$m) --config.tasks=$(DATASET) || exit 1; done; \
	  rhos="$$(case $$c in vgg) echo 0.1;; resnext2) ;; *) echo 0.1 1;; esac)"; \
	  for r in $$rhos; do $(call train_once,$$config,$(C1_RUNS)/$$c/den_rho$$r,den,$$r) --config.tasks=$(DATASET) || exit 1; done; \
	done
	$(PY) -m den_tf.report $(C1_RUNS)

# Table 2's layout on the demo's synthetic tasks (no download): every applicable method with
# the model and schedule of CONFIG (default: the demo), DEN at rho 0.3 and 0.1 (its random
# selector is the rand sel column), into runs/demo_table.
demo-table: $(STAMP)
	for m in baseline nestednet packnet; do $(call train_once,$(CONFIG),$(WORKDIR)/demo_table/$$m,$$m) || exit 1; done
	for r in 0.3 0.1; do $(call train_once,$(CONFIG),$(WORKDIR)/demo_table/den_rho$$r,den,$$r) || exit 1; done
	$(PY) -m den_tf.report $(WORKDIR)/demo_table

data: $(STAMP)
	$(PY) -m den_tf.datasets.prepare --datasets=$(DATASETS) --data_dir=$(DATA_DIR) --manual_dir=$(MANUAL_DIR)

# Input pipeline of the M1 mix, then the M1 model's training and inference throughput.
bench: $(STAMP)
	$(PY) -m den_tf.datasets.bench --data_dir=$(DATA_DIR)
	$(PY) -m den_tf.bench --config=experiments/m1_wrn.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
