# Thin wrapper around CMake; every target is what a user types (README.md).
BUILD ?= build
CMAKE_FLAGS ?=
PY := /usr/bin/python3
MAKEFLAGS += --no-print-directory

.PHONY: all build deps demo test test-unit test-integration test-deploy test-container bench-smoke test-asan test-valgrind test-tsan fuzz-smoke soak bench clean format

all: build

deps:
	@deploy/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j2

demo: build
	@deploy/demo/demo.sh

test: build
	@cd $(BUILD) && ctest --output-on-failure
	@PYROGUARD_BIN=$(CURDIR)/$(BUILD)/pyroguard VALUE_DUMP_BIN=$(CURDIR)/$(BUILD)/value_dump \
		$(PY) -m pytest -q tests/integration
	@$(MAKE) test-deploy
	@$(MAKE) fuzz-smoke FUZZ_SECONDS=5

# The deployment files (Kubernetes, compose, Dockerfile, systemd) checked against pyroguard's
# configuration; the container tests in there are skipped (with the reason) unless
# PYROGUARD_TEST_CONTAINER is set, as test-container does.
test-deploy: build
	@PYROGUARD_BIN=$(CURDIR)/$(BUILD)/pyroguard $(PY) -m pytest -q -rs tests/deploy

# Builds the image with podman from a debootstrap base (no Docker engine, no registry) and runs
# it: a real Pyro4 call through the container, compose and the Kubernetes pods (podman kube
# play). Needs root; installs podman, buildah, debootstrap. PYROGUARD_TEST_CONTAINER=require
# turns a missing podman into a failure (.ci/run).
PYROGUARD_TEST_CONTAINER ?= 1
test-container: build
	@deploy/install-deps.sh --container
	@PYROGUARD_BIN=$(CURDIR)/$(BUILD)/pyroguard PYROGUARD_TEST_CONTAINER=$(PYROGUARD_TEST_CONTAINER) \
		$(PY) -m pytest -q -rs tests/deploy/test_container.py

test-unit: build
	@cd $(BUILD) && ctest --output-on-failure

test-integration: build
	@PYROGUARD_BIN=$(CURDIR)/$(BUILD)/pyroguard VALUE_DUMP_BIN=$(CURDIR)/$(BUILD)/value_dump \
		$(PY) -m pytest -q tests/integration

# The whole suite again with AddressSanitizer, LeakSanitizer and UBSan in the proxy; the
# integration harness fails a test whose pyroguard printed a sanitizer report.
test-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DENABLE_ASAN=ON -DENABLE_UBSAN=ON >/dev/null
	@cmake --build build-asan -j2
	@cd build-asan && ctest --output-on-failure
	@# The per-decoder differential tests start thousands of value_dump processes; under ASan
	@# they would only repeat what the sanitized unit tests and the fuzzers already cover.
	@PYROGUARD_BIN=$(CURDIR)/build-asan/pyroguard VALUE_DUMP_BIN=$(CURDIR)/build-asan/value_dump \
		PYROGUARD_SANITIZED=1 $(PY) -m pytest -q tests/integration -k "not decoder_matches_python"

# The integration smoke (calls in every serializer, the refusals of raw frames, client mode's
# two TLS directions, stream ownership) with
# pyroguard under valgrind memcheck (tests/tools/valgrind-pyroguard.sh): an invalid access, a
# use of uninitialised memory or a definite leak at exit makes pyroguard exit 99 and fails the
# test that ran it. A Debug build, so that reports name lines.
test-valgrind: deps
	@cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build-valgrind -j2 --target pyroguard value_dump
	@PYROGUARD_BIN=$(CURDIR)/tests/tools/valgrind-pyroguard.sh \
		PYROGUARD_VALGRIND_TARGET=$(CURDIR)/build-valgrind/pyroguard \
		VALUE_DUMP_BIN=$(CURDIR)/build-valgrind/value_dump PYROGUARD_SANITIZED=1 \
		$(PY) -m pytest -q tests/integration/test_allowed_calls.py tests/integration/test_raw_frames.py \
		tests/integration/test_client_mode.py tests/integration/test_stream_ownership.py

# The tests that exercise the worker threads and the control thread (reload, drain, admin,
# metrics, limits) with ThreadSanitizer in the proxy; a data race report fails the test.
# Not the descriptor-exhaustion tests: there libuv (Debian's, not instrumented) closes its
# reserve descriptor with a raw close syscall ThreadSanitizer never sees, so when another
# worker's dup() gets the same number (on_retry in proxy/server.c) it is reported as a race
# on that descriptor. They run in `make test` and `make test-asan`.
test-tsan: deps
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENABLE_TSAN=ON >/dev/null
	@cmake --build build-tsan -j2 --target pyroguard value_dump
	@PYROGUARD_BIN=$(CURDIR)/build-tsan/pyroguard VALUE_DUMP_BIN=$(CURDIR)/build-tsan/value_dump \
		PYROGUARD_SANITIZED=1 $(PY) -m pytest -q tests/integration/test_reload_and_drain.py \
		tests/integration/test_allowed_calls.py tests/integration/test_limits.py \
		tests/integration/test_admin_and_metrics.py tests/integration/test_limits_ops.py \
		tests/integration/test_process.py tests/integration/test_client_mode.py \
		-k "not descriptor"

# Every fuzz target over its committed corpus, then FUZZ_SECONDS of new inputs each, with
# ASan and UBSan (clang and libclang-rt-14-dev). make test runs it for 5 s per target.
FUZZ_SECONDS ?= 30
fuzz-smoke:
	@deploy/install-deps.sh
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DENABLE_FUZZ=ON -DENABLE_ASAN=ON \
		-DENABLE_UBSAN=ON -DBUILD_TESTING=OFF >/dev/null
	@cmake --build build-fuzz -j2
	@for t in frame config inspect serpent json marshal msgpack policy admin forward; do \
		mkdir -p build-fuzz/work-$$t; \
		build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			$$( [ $$t = config ] && echo -dict=tests/fuzz/config.dict ) \
			build-fuzz/work-$$t tests/fuzz/corpus/$$t > build-fuzz/fuzz-$$t.log 2>&1; \
		rc=$$?; \
		echo "fuzz_$$t: $$(grep -E '^stat::number_of_executed_units' build-fuzz/fuzz-$$t.log)"; \
		if [ $$rc -ne 0 ]; then tail -60 build-fuzz/fuzz-$$t.log; exit 1; fi; \
	done

# The soak with faults (tests/soak/soak.py): SOAK_SECONDS of mixed Pyro4 traffic, refused calls,
# TLS garbage, mid-frame resets, slow readers, daemon kills and reloads against the real binary,
# then crash, hang, RSS, descriptor and metrics checks. SOAK_SEED=N replays a run;
# PYROGUARD_BIN=build-asan/pyroguard runs it against the ASan build.
SOAK_SECONDS ?= 60
soak: build
	@PYROGUARD_BIN=$(or $(PYROGUARD_BIN),$(CURDIR)/$(BUILD)/pyroguard) $(PY) tests/soak/soak.py \
		--duration $(SOAK_SECONDS) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

# pyroguard beside HAProxy, stunnel, nginx and hitch (bench/RESULTS.md, about 25 minutes), then
# inspection speed per serializer (bench/INSPECT.md) and policy decisions (bench/POLICY.md).
bench: build
	@deploy/install-deps.sh --bench
	@BUILD_DIR=$(CURDIR)/$(BUILD) $(PY) bench/run.py --write
	@$(PY) bench/gen_inspect_payloads.py $(BUILD)/bench-frames
	@{ echo "# Inspection speed"; echo; \
	   echo "\`make bench\` on $$(nproc) cores, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $$(date -u +%Y-%m-%d)."; \
	   echo "Framing + decoding + name rules, in process, median of 5 runs (bench/inspect_bench.c)."; echo; \
	   $(BUILD)/inspect_bench $(BUILD)/bench-frames/*-small.bin $(BUILD)/bench-frames/*-large.bin; } \
	   | tee bench/INSPECT.md
	@# Policy decisions with 100 client rules (bench/policy_bench.c), pinned to one CPU when
	@# taskset is there; the goal is printed next to the figure, never asserted.
	@{ echo "# Policy decision speed"; echo; \
	   echo "\`make bench\` on $$(nproc) cores, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $$(date -u +%Y-%m-%d)$$(command -v taskset >/dev/null && echo ', pinned to CPU 0')."; \
	   echo "In process, 100 client rules loaded from YAML (patterns compiled once), the client matching the last rule; 1e6 operations per run, median of 5 runs."; echo; \
	   $$(command -v taskset >/dev/null && echo taskset -c 0) $(BUILD)/policy_bench; } \
	   | tee bench/POLICY.md

# CI's smoke of the comparison harness: every peer and scenario once, 1 s each, no thresholds.
bench-smoke: build
	@deploy/install-deps.sh --bench
	@BUILD_DIR=$(CURDIR)/$(BUILD) $(PY) bench/run.py --quick

format:
	@clang-format -i proxy/*.c proxy/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf $(BUILD) build-asan build-fuzz
