# Thin wrapper around CMake; every target is what a user types (README.md).
BUILD ?= build
CMAKE_FLAGS ?=
PY := /usr/bin/python3
MAKEFLAGS += --no-print-directory

.PHONY: all build deps demo test test-unit test-integration test-asan bench clean format

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

format:
	@clang-format -i proxy/*.c proxy/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf $(BUILD) build-asan
