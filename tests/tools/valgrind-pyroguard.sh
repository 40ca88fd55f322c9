#!/usr/bin/env bash
# pyroguard under valgrind memcheck, for `make test-valgrind`: the integration harness runs this
# in place of the binary (PYROGUARD_BIN). Any memcheck error — an invalid read or write, a use
# of uninitialised memory, a definite leak at exit — makes the process exit 99, which fails the
# test that started it (the harness expects exit 0 after SIGTERM). The log of each run is kept
# beside the harness's own stderr log: memcheck writes to stderr.
set -euo pipefail
bin="${PYROGUARD_VALGRIND_TARGET:?set PYROGUARD_VALGRIND_TARGET to the pyroguard binary}"
exec valgrind --tool=memcheck --error-exitcode=99 --exit-on-first-error=no \
  --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
  --track-origins=no --num-callers=30 -q "$bin" "$@"
