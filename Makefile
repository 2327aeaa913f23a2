# edgebench: `make demo` runs the main job on the built-in `local` target; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BENCH  := $(VENV)/bin/bench
STAMP  := $(VENV)/.edgebench-installed
# litert-torch (LiteRT conversion) pins its own torch and jax: a venv of its own, found by `bench convert --to litert`
LITERT_VENV  := .venv-litert
LITERT_STAMP := $(LITERT_VENV)/.edgebench-installed
DEMO_MODELS := examples/cnn.onnx examples/setnet.onnx
DIGITS      := examples/digits.onnx examples/digits_test.npz
# Debian packages of the integration tests (sshd, network namespaces, a headless browser for the HTML report,
# qemu-user for the emulated aarch64 board).
SYSTEM_PACKAGES := openssh-server iproute2 chromium qemu-user-static

.PHONY: setup demo test test-durations system-deps benchmarks clean litert-env

# The venv is (re)built only when pyproject.toml changes: a second `make` is instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,examples,notebook,index,runtimes,farm]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import edgebench, edgebench_agent, torch, onnx, onnxruntime, openvino, ncnn, ai_edge_litert, labgrid"
	@touch $@

# torch stays pinned to the wheel on disk (a plain `torch` would pull a CUDA build).
$(LITERT_STAMP): pyproject.toml
	@test -x $(LITERT_VENV)/bin/python || $(PYTHON) -m venv $(LITERT_VENV)
	$(LITERT_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 litert-torch==0.10.0 onnx 2>&1 | grep -v "^WARNING: Location" || true
	$(LITERT_VENV)/bin/python -c "import litert_torch, onnx, torch"
	@touch $@

litert-env: $(LITERT_STAMP)

setup: $(STAMP)

# Debian packages the integration tests use (installed only when missing; needs root).
system-deps:
	@bash scripts/install-system-deps.sh $(SYSTEM_PACKAGES)

$(DEMO_MODELS): examples/make_examples.py | $(STAMP)
	$(PY) examples/make_examples.py

$(DIGITS): examples/train_digits.py | $(STAMP)
	$(PY) examples/train_digits.py

demo: $(STAMP) $(DEMO_MODELS) $(DIGITS)
	$(BENCH) deploy --target local $(DEMO_MODELS) --accuracy
	$(BENCH) deploy --target local examples/digits.onnx --dim batch=1 --dataset examples/digits_test.npz
	$(BENCH) compare results/

# The suite runs on every core (pytest-xdist): each worker starts the boards its tests need (sshd, the network
# namespace, the emulated Pi, a labgrid coordinator); a file's tests stay on one worker, so a file's module-scoped
# boards start once. `make test JOBS=0` runs it in one process.
JOBS ?= auto
PYTEST := $(PY) -m pytest $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadfile)

test: $(STAMP) $(LITERT_STAMP) system-deps
	$(VENV)/bin/ruff check host agent tests benchmarks scripts examples
	$(VENV)/bin/mypy
	$(PY) scripts/build_arm64_board.py
	$(PYTEST)

# The slowest 20 tests (and fixtures) of a full run: where the suite's time goes.
test-durations: $(STAMP) $(LITERT_STAMP) system-deps
	$(PY) scripts/build_arm64_board.py
	$(PYTEST) --durations=20 --durations-min=1

benchmarks: $(STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/cli_start.py
	$(PY) benchmarks/compare_scale.py
	$(PY) benchmarks/upload.py
	$(PY) benchmarks/plan_overhead.py
	$(PY) benchmarks/scenarios.py
	$(PY) benchmarks/pipeline_timer.py
	$(PY) benchmarks/energy.py
	$(PY) benchmarks/history_scale.py
	$(PY) benchmarks/diverge.py
	$(PY) benchmarks/tune.py

clean:
	rm -rf $(VENV) $(LITERT_VENV) .pytest_cache build *.egg-info host/*.egg-info
