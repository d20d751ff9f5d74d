# plantseek: `make demo` runs the main job on its defaults, `make test` runs the test suite.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# PyTorch: on a machine without an NVIDIA GPU we install the CPU build (here torch==2.13.0+cpu lies on disk).
# Elsewhere choose your own, e.g. `make TORCH="torch==2.5.1" TORCH_PIP_ARGS="--index-url <your index>"`.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH ?= $(if $(HAS_GPU),torch,torch==2.13.0)
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.plantseek-installed

.PHONY: all install dev demo test test-slow bench clean asan-test gpu-check

all: install

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml CMakeLists.txt $(shell find csrc python -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.h' -o -name '*.cu' \) 2>/dev/null)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PIP) install -q "scikit-build-core>=0.8" "pybind11>=2.11" "cmake>=3.18" ninja
	$(PIP) install -q --no-build-isolation ".[test,distributed,parquet]"
	touch $(STAMP)

install: $(STAMP)

# editable install for development (rebuilds the extension on import after C++ changes)
dev: $(PY)
	$(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PIP) install -q "scikit-build-core>=0.8" "pybind11>=2.11" "cmake>=3.18" ninja
	$(PIP) install -q --no-build-isolation -Ceditable.rebuild=true -e ".[test,distributed,parquet]"

# the paper's benchmark at small scale: plants the tickets, runs every pruner over densities and seeds,
# writes report/index.html (rerunning resumes from report/paper_small.db)
demo: install
	$(VENV)/bin/plantseek tasks --depth 4
	$(VENV)/bin/plantseek reproduce paper --scale small --out report

test: install
	$(PY) -m pytest tests -p no:cacheprovider $(PYTEST_ARGS)

test-slow: install
	PLANTSEEK_SLOW=1 $(PY) -m pytest tests -p no:cacheprovider $(PYTEST_ARGS)

# every benchmark script in turn; each rewrites its own section of bench/RESULTS.md (tens of minutes here)
bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# on a machine with an NVIDIA GPU: builds the CUDA module (pip install --no-build-isolation . into GPU_PYTHON when
# plantseek._C_cuda does not load there), runs every CUDA test and the short GPU benchmarks, writes
# bench/RESULTS-cuda.md, all within 500 s (docs/gpu.md, "make gpu-check"). Without a GPU it says so and exits 0.
# Uses .venv's Python when it exists, else the system python3 (a bare GPU machine's, which holds PyTorch).
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py

# C++ tests under AddressSanitizer (see README, "Native core")
asan-test:
	cmake -S . -B build/asan -G Ninja -DPLANTSEEK_ASAN=ON -DPLANTSEEK_BUILD_TESTS=ON -DPLANTSEEK_CUDA=OFF \
	    -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir) -DPython_EXECUTABLE=$(abspath $(PY))
	cmake --build build/asan --target plantseek_cpp_tests
	./build/asan/plantseek_cpp_tests

clean:
	rm -rf build $(VENV) report .pytest_cache
