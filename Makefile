# Quick start:
#   make run    builds, fetches the default model and generates a chat answer with it
#   make test   builds and runs every test (GPU tests skip without a GPU)
# Each target installs what it needs and is safe to repeat.
BUILD ?= build
JOBS ?= $(shell nproc)
MODEL ?= $(CURDIR)/.models/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPT ?= What is the capital of France? Answer in one sentence, then name two famous landmarks there.
CMAKE_FLAGS ?=

.PHONY: all deps model build run test test-asan test-python test-training bench clean

all: build

deps:
	@bash scripts/install_deps.sh

model: deps
	@bash scripts/fetch_model.sh >/dev/null

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

run: build model
	$(BUILD)/services/dspark generate --model $(MODEL) --chat --max-tokens 128 --prompt "$(PROMPT)"

test: build model
	DSPARK_MODEL=$(MODEL) ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)
	$(MAKE) test-asan
	$(MAKE) test-python

# The parsers (and the client protocol codec) again under AddressSanitizer + UBSan, with the
# random-mutation fuzz tests.
test-asan: deps
	cmake -S . -B $(BUILD)-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSPARK_SANITIZE=ON -DDSPARK_CUDA=OFF
	cmake --build $(BUILD)-asan -j $(JOBS) --target test_formats test_tokenizer test_client
	DSPARK_MODEL=$(MODEL) ctest --test-dir $(BUILD)-asan --output-on-failure -j $(JOBS) -L "formats|tokenizer|client"

# The Python SDK (pytest): scripted-server tests, and against `dspark serve` when it is built.
test-python: deps
	DSPARK_BUILD=$(CURDIR)/$(BUILD) DSPARK_MODEL=$(MODEL) python3 -m pytest -q sdk/python/tests deploy/tests scripts/tests
	$(MAKE) test-training

# The PyTorch training toolkit's tests (training/tests), on the CPU when there is no GPU. torch
# (~3 GB with its CUDA libraries) is installed here, not by `deps`, so `make run` stays light.
test-training: deps
	@bash scripts/install_training_deps.sh
	python3 -m pytest -q training/tests

bench: build model
	$(BUILD)/bench/bench_cpu --model $(MODEL)

clean:
	rm -rf $(BUILD) $(BUILD)-asan
