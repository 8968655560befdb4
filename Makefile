# Two commands for a new user:
#   make demo   set everything up, then run the main job on embedded data (no network data)
#   make test   set everything up, then run the tests
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Python >= 3.12 is required (DOLFINx wheels are cp312+ abi3); 3.12 is the tested one
# (pytorch3d's wheels), so it is preferred, then newer ones.
PYTHON ?= $(shell for c in python3.12 \
	$$(command -v pyenv >/dev/null && ls -d $$(pyenv root)/versions/3.12*/bin/python 2>/dev/null | sort -V | tail -1) \
	python3.13 python3.14 python3; do \
	command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { command -v $$c; break; }; done)

.PHONY: demo test test-all lint setup system-deps benchmarks clean

demo: $(STAMP)
	$(PY) examples/demo.py --out out/demo

test: $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

test-all: $(STAMP)
	$(PY) -m pytest -m ""

setup: $(STAMP)

system-deps:
	@# open3d needs Debian's libusb-1.0-0.
	@if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing libusb-1.0-0 (needed by open3d)"; \
		(apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libusb-1.0-0 >/dev/null; }) \
		|| { echo "error: could not install libusb-1.0-0 with apt-get"; exit 1; }; \
	else echo "error: open3d needs the system library libusb-1.0-0; install it (e.g. 'sudo apt-get install libusb-1.0-0') and re-run"; exit 1; fi

$(STAMP): pyproject.toml | system-deps
	@if [ -z "$(PYTHON)" ]; then echo "error: Python >= 3.12 not found; install it or run 'make PYTHON=/path/to/python3.12'"; exit 1; fi
	@echo "using $(PYTHON)"
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@# One retry: a download cut short leaves pip's cache torn ('No such file'), a second run mends it.
	$(PY) -m pip install -q -e '.[test]' || $(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

benchmarks: $(STAMP)
	@# geoprior_gpu.py runs in steps across a GPU machine (see its --help).
	for b in $(filter-out benchmarks/geoprior_gpu.py,$(wildcard benchmarks/*.py)); do $(PY) $$b || exit 1; done

clean:
	rm -rf out .pytest_cache

# EDIP: a small checkpoint pretrained on synthetic ellipse phantoms, made on this machine (never downloaded).
checkpoints/edip_ct128.pt: $(STAMP)
	$(PY) -m shared.image.edip pretrain --out $@

# Learned generators for CSGM / IAGAN: VAE decoders trained here on the ellipse and block
# phantom families (64x64), one thread each, about 11 minutes side by side with make -j2 (never downloaded).
GENERATORS := checkpoints/generator_ellipses64.pt checkpoints/generator_blocks64.pt
.PHONY: generators
generators: $(GENERATORS)

checkpoints/generator_%64.pt: $(STAMP)
	$(PY) -m shared.image.generator train --family $* --threads 1 --out $@
