# Thin wrapper around CMake; every target is what a user types (README.md).
BUILD ?= build
CMAKE_FLAGS ?=
PY := /usr/bin/python3
MAKEFLAGS += --no-print-directory

.PHONY: all build deps demo test test-unit test-integration test-asan fuzz-smoke bench clean format

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
	@PYROGUARD_BIN=$(CURDIR)/$(BUILD)/pyroguard $(PY) -m pytest -q tests/integration

test-unit: build
	@cd $(BUILD) && ctest --output-on-failure

test-integration: build
	@PYROGUARD_BIN=$(CURDIR)/$(BUILD)/pyroguard $(PY) -m pytest -q tests/integration

# The whole suite again with AddressSanitizer, LeakSanitizer and UBSan in the proxy; the
# integration harness fails a test whose pyroguard printed a sanitizer report.
test-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DENABLE_ASAN=ON -DENABLE_UBSAN=ON >/dev/null
	@cmake --build build-asan -j2
	@cd build-asan && ctest --output-on-failure
	@PYROGUARD_BIN=$(CURDIR)/build-asan/pyroguard PYROGUARD_SANITIZED=1 $(PY) -m pytest -q tests/integration

# Every fuzz target over its committed corpus, then FUZZ_SECONDS of new inputs each, with
# ASan and UBSan. Needs clang and libclang-rt-14-dev (installed by deps when FUZZ=1).
FUZZ_SECONDS ?= 30
fuzz-smoke:
	@FUZZ=1 deploy/install-deps.sh
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DENABLE_FUZZ=ON -DENABLE_ASAN=ON \
		-DENABLE_UBSAN=ON -DBUILD_TESTING=OFF >/dev/null
	@cmake --build build-fuzz -j2
	@for t in frame config; do \
		mkdir -p build-fuzz/work-$$t; \
		build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			$$( [ $$t = config ] && echo -dict=tests/fuzz/config.dict ) \
			build-fuzz/work-$$t tests/fuzz/corpus/$$t > build-fuzz/fuzz-$$t.log 2>&1; \
		rc=$$?; \
		echo "fuzz_$$t: $$(grep -E '^stat::number_of_executed_units' build-fuzz/fuzz-$$t.log)"; \
		if [ $$rc -ne 0 ]; then tail -60 build-fuzz/fuzz-$$t.log; exit 1; fi; \
	done

format:
	@clang-format -i proxy/*.c proxy/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf $(BUILD) build-asan build-fuzz
