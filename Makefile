# host-local-sqlite: every target installs what it needs, so a fresh clone works.
PYTHON ?= python3
VENV   ?= .venv
# Every Python the README promises; each gets its own venv in `make test-all`. One of them:
#   make test PYTHON=$(tools/find-python 3.13) VENV=.venv-3.13
PYTHONS ?= 3.11 3.12 3.13
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Every version pip installs here (make install, dist, bench, wheel): pinned, so a build
# next month freezes what today's did. `make constraints` regenerates it, on purpose.
CONSTRAINTS := constraints.txt
PIP_C  = -m pip install -q -c $(CONSTRAINTS)

.PHONY: install compile demo test check test-all lint typecheck bench soak wheel-smoke wheel dist clean constraints

install: $(STAMP) native-if-cc

# setuptools' default (lenient) editable mode: its import finder honours setup.cfg's
# package_dir, which installs cli/ and migrations/ as host_local_sqlite_cli and
# host_local_sqlite_migrations (compat mode would put the repo root on sys.path).
$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_C) --upgrade pip
	$(PY) $(PIP_C) -e '.[test]'
	touch $(STAMP)

# Byte-code for the editable sources, as a wheel install would have it (the plugin starts
# once per container; PYTHONDONTWRITEBYTECODE may be set, so compile explicitly).
compile: install
	$(PY) -m compileall -q ipam cli migrations > /dev/null

demo: compile
	$(PY) tools/demo.py $(DEMO_ARGS)

test: compile
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast edit loop: lint, types, and every test that needs nothing beyond this venv (no
# PostgreSQL server, root, Go host-local, strace or package index: setup.cfg's markers)
# and is not one of the long ones (`slow`: bursts, kill storms, power-cut sweeps).
CHECK_MARKERS ?= not (postgres or root or reference or strace or network or slow)
check: lint typecheck compile
	$(PY) -m pytest -q -m "$(CHECK_MARKERS)" $(PYTEST_ARGS)

# The whole suite on each of $(PYTHONS) in turn (tools/find-python finds them: pyenv's
# versions, else python3.X on PATH); goes on after a failure, then names every failure.
test-all:
	@failed=""; for v in $(PYTHONS); do \
	  echo "== Python $$v"; \
	  if py=$$(tools/find-python $$v); then \
	    $(MAKE) --no-print-directory test PYTHON=$$py VENV=.venv-$$v || failed="$$failed $$v"; \
	  else failed="$$failed $$v"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "test-all: failed on Python$$failed" >&2; exit 1; fi

lint: install
	$(VENV)/bin/ruff check ipam cli migrations tests tools

typecheck: install
	$(VENV)/bin/mypy

bench: compile dist
	$(PY) $(PIP_C) -e '.[test,bench]'
	$(PY) tools/bench.py $(BENCH_ARGS)

# A quarter of churn in one run (tools/soak.py): 500,000 calls through the node daemon,
# with plugin processes and Go host-local beside it; exits 1 unless every figure stays
# flat. Hours long, so niced. A short one: make soak SOAK_ARGS='--calls 5000'.
soak: compile
	nice $(PY) tools/soak.py $(SOAK_ARGS)

# RunPodSandbox and a burst of 20 through a private containerd's CRI, for Go host-local and
# ours in process, through the daemon and as the self-contained build (tools/bench_cri.py;
# root, containerd, runc, busybox-static). Fewer: BENCH_CRI_ARGS="--runs 10 --leases 500".
.PHONY: bench-cri
bench-cri: compile dist
	$(PY) tools/bench_cri.py $(BENCH_CRI_ARGS)

# Every step's cost of a forwarded ADD and DEL (tools/bench_steps.py): a node daemon that
# traces each call's steps (ipamctl serve --trace-steps), the native and Python clients
# and Go host-local interleaved, the daemon's syncs counted by strace, bursts of 100
# against Go's. Containerd's calls per pod too: BENCH_STEPS_ARGS=--cri (root).
.PHONY: bench-steps
bench-steps: compile native
	$(PY) tools/bench_steps.py $(BENCH_STEPS_ARGS)

# The plugin's thin client in C (native/client.c): a forwarded call without an
# interpreter's start. Linked statically, against musl where musl-gcc is there (Debian 12's
# glibc would need 2.34 at run time; the self-contained build promises 2.17), else with
# the C compiler's own libc. `make install` builds it where a C compiler exists. Each
# program is linked under a name of its own make's (pid) and moved into place: test
# suites run side by side (.ci/run) build these at the same moment, and a program another
# suite runs must never be half written.
NATIVE_DIR ?= build/native
NATIVE_CC  ?= $(shell command -v musl-gcc 2>/dev/null || command -v cc 2>/dev/null)
# The test build: glibc, AddressSanitizer and UndefinedBehaviorSanitizer, any error fatal.
ASAN_CC    ?= $(shell command -v gcc 2>/dev/null || command -v clang 2>/dev/null || command -v cc 2>/dev/null)
NATIVE_CFLAGS := -std=c11 -Wall -Wextra -Werror
SANITIZE   := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
NATIVE_SRC := native/client.c native/client.h
comma := ,
.PHONY: native native-if-cc native-asan fuzz
native: $(NATIVE_DIR)/host-local-sqlite
$(NATIVE_DIR)/host-local-sqlite: $(NATIVE_SRC)
	@test -n "$(NATIVE_CC)" || { echo "native: no C compiler (musl-gcc or cc)" >&2; exit 1; }
	mkdir -p $(NATIVE_DIR)
	$(NATIVE_CC) -O2 -static $(NATIVE_CFLAGS) -o $@.$$$$.tmp native/client.c \
	  && mv $@.$$$$.tmp $@
native-if-cc:
	@if [ -n "$(NATIVE_CC)" ]; then $(MAKE) --no-print-directory native; \
	else echo "no C compiler: the plugin keeps the Python thin client"; fi
native-asan: $(NATIVE_DIR)/host-local-sqlite-asan $(NATIVE_DIR)/probe-asan
$(NATIVE_DIR)/host-local-sqlite-asan: $(NATIVE_SRC)
	mkdir -p $(NATIVE_DIR)
	$(ASAN_CC) $(SANITIZE) $(NATIVE_CFLAGS) -o $@.$$$$.tmp native/client.c \
	  && mv $@.$$$$.tmp $@
$(NATIVE_DIR)/probe-asan: $(NATIVE_SRC) native/probe.c
	mkdir -p $(NATIVE_DIR)
	$(ASAN_CC) $(SANITIZE) $(NATIVE_CFLAGS) -o $@.$$$$.tmp native/probe.c \
	  && mv $@.$$$$.tmp $@
# The parsers fuzzed: libFuzzer (clang's -fsanitize=fuzzer, with ASan and UBSan, on
# native/fuzz.c; its corpus kept in $(NATIVE_DIR)/corpus) and the Python-driven runs that
# hold them to ipam.client's, each for FUZZ_SECONDS (tests/test_native_client.py, where
# NATIVE_FUZZ_SECONDS says how long; the tests' own run is about a minute in all).
FUZZ_SECONDS ?= 600
FUZZ_CC    ?= clang
.PHONY: native-fuzz
native-fuzz: $(NATIVE_DIR)/fuzz
$(NATIVE_DIR)/fuzz: $(NATIVE_SRC) native/fuzz.c
	mkdir -p $(NATIVE_DIR)
	$(FUZZ_CC) $(subst -fsanitize=,-fsanitize=fuzzer$(comma),$(SANITIZE)) $(NATIVE_CFLAGS) -o $@.$$$$.tmp native/fuzz.c \
	  && mv $@.$$$$.tmp $@
fuzz: install
	NATIVE_FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -p no:cacheprovider tests/test_native_client.py -k fuzz

# The self-contained build: dist/host-local-sqlite-<version>-linux-<arch>.tgz, both
# executables frozen with cx_Freeze from $(PYTHON), for nodes with no Python. Its own venv
# holds a regular install of this tree (an editable one maps cli/ by an import hook that
# a freezer cannot follow). It carries the native thin client where a C compiler built
# it (`make native`: static, against musl where musl-gcc is there).
DIST_VENV ?= build/dist-venv
DIST_CLIENT = $(if $(NATIVE_CC),--client $(NATIVE_DIR)/host-local-sqlite --client-cc $(notdir $(NATIVE_CC)))
dist: native-if-cc
	test -x $(DIST_VENV)/bin/python || $(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python $(PIP_C) --upgrade pip
	rm -rf build/lib  # setuptools' copy would keep modules this tree moved or removed
	$(DIST_VENV)/bin/python $(PIP_C) --force-reinstall --no-deps .
	$(DIST_VENV)/bin/python $(PIP_C) '.[postgresql,cri,dist]'
	$(DIST_VENV)/bin/python tools/build_dist.py $(DIST_CLIENT) $(DIST_ARGS)

# The installer image of deploy/kubernetes/ (FROM scratch: glibc and the build of
# `make dist`), built with podman, nothing pulled: localhost/host-local-sqlite:<version>.
# IMAGE_ARGS=--save also writes it as an OCI archive into dist/ (for ctr images import).
.PHONY: image
image: dist
	$(PYTHON) tools/build_image.py $(IMAGE_ARGS)

# tests/cri_api/*_pb2*.py(i), committed: the CRI messages (typed) and stub of
# tests/cri_api/api.proto (a part of k8s.io/cri-api's runtime.v1, real names and field
# numbers), with which the tests drive containerd and check ipam/cri/wire.py.
.PHONY: cri-proto
cri-proto: install
	cd tests && ../$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. cri_api/api.proto

# constraints.txt anew: the newest versions the package index has that setup.cfg allows,
# for every extra, resolved together in a fresh venv of $(PYTHON). Review the diff, run
# `make test` (and `make test-all`: one pin serves every Python), then commit it.
CONSTRAINTS_VENV ?= build/constraints-venv
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(CONSTRAINTS_VENV)/bin/python -m pip install -q '.[postgresql,cri,test,bench,dist]'
	{ echo "# Every version make install, dist, bench and wheel install (pip install -c)."; \
	  echo "# Generated by 'make constraints' with Python $$($(CONSTRAINTS_VENV)/bin/python -c 'import platform; print(platform.python_version())'): do not edit by hand."; \
	  $(CONSTRAINTS_VENV)/bin/python -m pip freeze --all --exclude host-local-sqlite; \
	} > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	rm -rf $(CONSTRAINTS_VENV)

# The wheel, dist/host_local_sqlite-<version>-py3-none-any.whl (pip's name for it), and
# the sdist it is built from: built from the sdist, so nothing stale under build/ goes in.
WHEEL_DIR ?= dist
# It is pure Python, one file for every machine: it ships no native thin client, and its
# install-plugin writes the Python client (the launcher); the self-contained build has one.
wheel: install
	rm -rf build/lib  # see dist
	$(PY) -m build --no-isolation --outdir $(WHEEL_DIR) . > /dev/null
	@ls $(WHEEL_DIR)/host_local_sqlite-*.whl
	@echo "(pure Python: no native thin client in the wheel; make dist's build has one)"

wheel-smoke: install
	$(PY) -m pytest tests/test_wheel.py

clean:
	rm -rf $(VENV) .venv-* build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
