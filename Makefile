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
DEMO_RUN ?= $(RUNS)/demo-ctc
DEMO_ARGS ?=

.PHONY: help venv demo test test-fast data bench clean
help:
	@echo "make demo    - build the env, synthesise the default corpus, train + compare CTC, Imputer-DP, seq2seq (table + plot)"
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

# The comparison demo: CTC, Imputer-DP (from CTC's Viterbi alignments, initialised from its weights)
# and seq2seq (hybrid CTC/attention, beam 4) on one shared budget, as two 1-thread pipelines side
# by side: [CTC -> align -> Imputer-DP] and [seq2seq]. Each stage is resumable (rerun = skip).
# The model and training settings are conf/preset/demo.yaml.
DEMO_STEPS ?= 1500
DEMO_DP_STEPS ?= 750
DEMO_TRAIN = $(BIN)/asr-zoo train preset=demo data=synth data.root=$(DATA) trainer.num_threads=1 $(DEMO_ARGS)
DEMO_EVAL = OMP_NUM_THREADS=1 $(BIN)/asr-zoo eval
demo: data
	set -e; export OMP_NUM_THREADS=1; \
	( $(DEMO_TRAIN) objective=ctc trainer.max_steps=$(DEMO_STEPS) run_dir=$(RUNS)/demo-ctc \
	  && $(BIN)/asr-zoo align $(RUNS)/demo-ctc --split train \
	  && $(DEMO_TRAIN) objective=imputer_dp objective.expert=$(RUNS)/demo-ctc trainer.max_steps=$(DEMO_DP_STEPS) \
	       objective.observed_loss_weight=0 run_dir=$(RUNS)/demo-imputer_dp \
	  && $(DEMO_EVAL) $(RUNS)/demo-ctc --split test && $(DEMO_EVAL) $(RUNS)/demo-imputer_dp --split test ) & a=$$!; \
	( $(DEMO_TRAIN) objective=seq2seq trainer.max_steps=$(DEMO_STEPS) run_dir=$(RUNS)/demo-seq2seq \
	  && $(DEMO_EVAL) $(RUNS)/demo-seq2seq --split test ) & b=$$!; \
	ra=0; rb=0; wait $$a || ra=$$?; wait $$b || rb=$$?; test $$ra = 0 && test $$rb = 0
	$(BIN)/asr-zoo compare $(RUNS)/demo-ctc $(RUNS)/demo-imputer_dp $(RUNS)/demo-seq2seq --split test \
	  --baseline demo-ctc --out $(RUNS)/demo-report/

test: venv
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

bench: venv
	$(BIN)/asr-zoo bench attention --out $(RUNS)/bench
	$(BIN)/asr-zoo bench rnnt-loss --out $(RUNS)/bench
	$(BIN)/asr-zoo bench imputer-loss --out $(RUNS)/bench
	OMP_WAIT_POLICY=PASSIVE $(BIN)/asr-zoo bench train-step --out $(RUNS)/bench --threads 2

clean:
	rm -rf $(RUNS) build

# ---- recipes (staged, resumable; see recipes/*/run.sh) ----------------------------------------
# ASR_ZOO / RECIPE_DEPS let the tests drive the same targets with an existing environment.
LIBRISPEECH ?=
DOWNLOAD ?=   # DOWNLOAD=1: fetch the missing LibriSpeech parts (resumable, md5-checked) into $(LIBRISPEECH)
ASR_ZOO ?= $(BIN)/asr-zoo
RECIPE_DEPS ?= venv
OBJECTIVES ?= ctc rnnt seq2seq
ATTENTIONS ?= softmax
.PHONY: recipe-synth-imputer recipe-synth-matrix recipe-synth-attention-long recipe-synth-equal-compute recipe-fsdd recipe-librispeech-imputer
recipe-synth-imputer: $(RECIPE_DEPS)
	ASR_ZOO="$(ASR_ZOO)" DATA=$(DATA) EXPERT=$(DEMO_RUN) bash recipes/synth/run.sh

recipe-synth-matrix: $(RECIPE_DEPS)
	ASR_ZOO="$(ASR_ZOO)" DATA=$(DATA) OBJECTIVES="$(OBJECTIVES)" ATTENTIONS="$(ATTENTIONS)" bash recipes/synth/matrix.sh

# The five attention types x 3 seeds with CTC on 13-35 s utterances, plus the evaluation-time swap
# (the sweep took 70 min on 2 cores; docs/results.md, "Attention types on long utterances").
recipe-synth-attention-long: $(RECIPE_DEPS)
	ASR_ZOO="$(ASR_ZOO)" bash recipes/synth/attention_long.sh

# "Imputer-DP beats CTC" at equal compute: CTC 3000 steps + DP 3000 steps (Eq. 11 and masked-only)
# vs CTC 6000 steps, 3 seeds; at the same size DP's masking policies and Imputer-IM against block-masked
# DP (docs/results.md, "The equal-compute CTC control").
recipe-synth-equal-compute: $(RECIPE_DEPS)
	ASR_ZOO="$(ASR_ZOO)" DATA=$(DATA) bash recipes/synth/equal_compute.sh

# Real recordings: CTC with preset=small_corpus on the Free Spoken Digit Dataset as connected digits, split
# by speaker, global vs per-utterance normalisation x 3 seeds (docs/small_corpora.md). FSDD=<a clone of
# github.com/Jakobovski/free-spoken-digit-dataset>.
FSDD ?=
recipe-fsdd: $(RECIPE_DEPS)
	@test -n "$(FSDD)" || { echo "usage: make recipe-fsdd FSDD=/path/to/free-spoken-digit-dataset (a git clone)"; exit 2; }
	ASR_ZOO="$(ASR_ZOO)" FSDD=$(FSDD) bash recipes/fsdd/run.sh

# TRAINER (gpu | ddp | ddp_cpu), TRAIN_ARGS, EXPERT_ARGS, IMPUTER_ARGS, EVAL_SPLITS, RUNS given to make reach
# recipes/librispeech/run.sh (command-line variables are exported); its header has a CPU example.
recipe-librispeech-imputer: $(RECIPE_DEPS)
	@test -n "$(LIBRISPEECH)" || { echo "usage: make recipe-librispeech-imputer LIBRISPEECH=/dir/holding/LibriSpeech"; exit 2; }
	ASR_ZOO="$(ASR_ZOO)" bash recipes/librispeech/run.sh --root $(LIBRISPEECH) $(if $(DOWNLOAD),--download)
