# asr-zoo: `make demo` (train + evaluate on the synthetic corpus) and `make test`.
# Both create / reuse the virtual environment in .venv; nothing needs installing by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/synth
RUNS ?= runs
# Pins the local CPU torch wheel on the project's machines; users may point this elsewhere.
CONSTRAINTS ?= constraints.txt
DEMO_RUN ?= $(RUNS)/demo-ctc-softmax
DEMO_ARGS ?=

.PHONY: help venv demo test test-fast data bench clean
help:
	@echo "make demo    - build the env, synthesise the default corpus, train + evaluate CTC, print the table"
	@echo "make test    - build the env and run the test suite"
	@echo "make bench   - attention / RNN-T loss / Imputer loss benchmarks (figures in runs/bench)"

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

data: venv
	$(BIN)/asr-zoo prepare synth --out $(DATA)

demo: data
	$(BIN)/asr-zoo train data=synth data.root=$(DATA) objective=ctc encoder=conformer attention=softmax trainer=demo run_dir=$(DEMO_RUN) $(DEMO_ARGS)
	$(BIN)/asr-zoo eval $(DEMO_RUN) --split test
	$(BIN)/asr-zoo compare $(DEMO_RUN) --out $(RUNS)/demo-table

test: venv
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

bench: venv
	$(BIN)/asr-zoo bench attention --out $(RUNS)/bench
	$(BIN)/asr-zoo bench rnnt-loss --out $(RUNS)/bench
	$(BIN)/asr-zoo bench imputer-loss --out $(RUNS)/bench

clean:
	rm -rf $(RUNS) build

# ---- recipes (staged, resumable; see recipes/*/run.sh) ----------------------------------------
# ASR_ZOO / RECIPE_DEPS let the tests drive the same targets with an existing environment.
LIBRISPEECH ?=
ASR_ZOO ?= $(BIN)/asr-zoo
RECIPE_DEPS ?= venv
OBJECTIVES ?= ctc rnnt seq2seq
ATTENTIONS ?= softmax
.PHONY: recipe-synth-imputer recipe-synth-matrix recipe-librispeech-imputer
recipe-synth-imputer: $(RECIPE_DEPS)
	ASR_ZOO="$(ASR_ZOO)" DATA=$(DATA) EXPERT=$(DEMO_RUN) bash recipes/synth/run.sh

recipe-synth-matrix: $(RECIPE_DEPS)
	ASR_ZOO="$(ASR_ZOO)" DATA=$(DATA) OBJECTIVES="$(OBJECTIVES)" ATTENTIONS="$(ATTENTIONS)" bash recipes/synth/matrix.sh

recipe-librispeech-imputer: $(RECIPE_DEPS)
	@test -n "$(LIBRISPEECH)" || { echo "usage: make recipe-librispeech-imputer LIBRISPEECH=/dir/holding/LibriSpeech"; exit 2; }
	ASR_ZOO="$(ASR_ZOO)" bash recipes/librispeech/run.sh --root $(LIBRISPEECH)
