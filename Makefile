# Thin wrapper around CMake; every target is what a user types (README.md).
BUILD ?= build
CMAKE_FLAGS ?=
PY := /usr/bin/python3

.PHONY: all build deps demo test test-unit test-integration bench clean format

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

format:
	@clang-format -i proxy/*.c proxy/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf $(BUILD)
