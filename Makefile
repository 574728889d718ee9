# The two README commands: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := False
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# Bytecode is written the first time a process imports a module (about 15 s, once, for what the stages
# import), where compiling all of site-packages at install took 47 s on 2 cores. Where
# PYTHONDONTWRITEBYTECODE is set (as on CI machines), every process would compile transformers and torch
# again, which doubled the test suite's time: make's commands run with it unset. (A process started outside
# make where it is set, such as a Prefect worker, compiles what it imports each time: unset it there too.)
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install install-gpu lock run run-flow stack test lint clean browser

install: $(STAMP)

# constraints.txt pins every package (not only ours) to the versions the documented numbers came
# from: the tiny model's accuracy moved by 0.07 between two installs that floated (docs/learning-notes.md).
# uv installs them (under a minute where pip took 2-3) from the indexes pip is configured with.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt uv
	$(BIN)/python infra/uv_install.py $(BIN)/uv --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The GPU environment (README, GPU environment): DeepSpeed and flash-attention on top of what make install put in,
# whose torch is PyPI's CUDA 13.0 build. Versions: the `gpu` extra and constraints-gpu.txt. flash-attn is an sdist
# whose setup.py imports torch and compiles against it with nvcc, asking for C++17 where torch 2.14's headers need
# C++20: infra/flash_attn_wheel.py builds its wheel in .venv (no build isolation) with that flag raised, into
# GPU_WHEELS, and the install takes it from there and never builds flash-attn itself. infra/gpu_env.py checks for a
# CUDA 13 toolkit first and reports the versions after. FLASH_ATTN_CUDA_ARCHS are the GPU generations compiled
# (80: A100, 90: H100/H200; add 100 and 120 for Blackwell, each adds build time); MAX_JOBS caps parallel compiles
# (flash-attn picks it from cores and memory, about 9 GB a job, when unset).
FLASH_ATTN_CUDA_ARCHS ?= 80;90
GPU_WHEELS := $(VENV)/wheels
GPU_STAMP := $(VENV)/.installed-gpu
install-gpu: $(GPU_STAMP)

$(GPU_STAMP): $(STAMP) constraints-gpu.txt
	$(BIN)/python infra/gpu_env.py toolkit $(GPU_WHEELS)
	$(BIN)/python infra/uv_install.py $(BIN)/uv --quiet -c constraints.txt -c constraints-gpu.txt setuptools wheel ninja
	FLASH_ATTN_CUDA_ARCHS='$(FLASH_ATTN_CUDA_ARCHS)' $(BIN)/python infra/flash_attn_wheel.py $(GPU_WHEELS)
	$(BIN)/python infra/uv_install.py $(BIN)/uv -c constraints.txt -c constraints-gpu.txt --find-links $(GPU_WHEELS) \
	  --only-binary flash-attn -e '.[dev,gpu]'
	$(BIN)/python infra/gpu_env.py report
	touch $(GPU_STAMP)

# After a deliberate upgrade (pip install -U ... in .venv): record the new versions.
lock: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# dvc needs a git repository; a fresh clone has one, a copied folder may not.
run: $(STAMP)
	test -d .git || git init --quiet
	test -d .dvc || $(BIN)/dvc init --quiet
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

# The same pipeline through Prefect: a task per stage, data checks first, artifacts. No server needed
# (Prefect's ephemeral local API); overrides as `dvc exp run -S` takes them: make run-flow SET="train.trl.max_steps=100"
# (several: SET="a.b=1 c.d=2"; quote one with spaces: SET="'train.launcher=torchrun --standalone'"). SET reaches
# the flow as an environment variable, never as text of this recipe's shell command, and unexpanded by make:
# a value cannot run anything.
MEDR1_SET := $(value SET)
export MEDR1_SET
run-flow: $(STAMP)
	test -d .git || git init --quiet
	test -d .dvc || $(BIN)/dvc init --quiet
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m flows.pipeline --set-params-from MEDR1_SET

# Prefect server on PostgreSQL, a worker with the deployments, MinIO with its bucket (Docker Compose).
# The first time, infra/.env gets random passwords (git ignores it).
stack:
	test -f infra/.env || (umask 077 && $(PYTHON) -c "import secrets; print(f'POSTGRES_PASSWORD={secrets.token_hex(16)}\nMINIO_ROOT_USER=medr1\nMINIO_ROOT_PASSWORD={secrets.token_hex(16)}\nMINIO_BUCKET=medr1')" > infra/.env)
	docker compose -f infra/docker-compose.yml --env-file infra/.env up -d --build

# The report's test renders reports/index.html in headless Chromium (Debian's package, about 20 s to install).
# Where CI is set (.ci/run sets it), a Chromium that cannot be installed stops `make test` here, and the
# test fails rather than skips; elsewhere (no root, no apt-get) the test is skipped, saying why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null && \
	  command -v chromium >/dev/null; } || \
	  if [ -n "$$CI" ]; then echo "chromium is not installed and could not be installed (root and apt-get needed):" \
	    "CI runs the report's browser test" >&2; exit 1; \
	  else echo "chromium is not installed and cannot be here: the report's browser test will be skipped"; fi

# Two xdist workers, and the shared pipeline run (tests/shared_pipeline.py) beside them from the start.
TEST_WORKERS ?= 2
test: $(STAMP) browser
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check medr1 stages tests flows benchmarks infra

clean:
	rm -rf data/raw data/processed models metrics reports .dvc/cache
