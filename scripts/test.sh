#!/usr/bin/env bash
# The whole test suite, as CI runs it, in two pytest processes side by side, split so that each
# takes about the same time on a 2-core machine (8.5 and 7.9 minutes in a fresh-clone CI run on a
# 2-core AMD EPYC, 2026-12-06):
# - the tests marked `slow` (Ray clusters, real servers, wheels: minutes each, much of it spent
#   waiting for processes to start), except those also marked `beside_units`;
# - every other test (about 700 unit and CLI tests, about 3 minutes) and then the `beside_units`
#   ones (subprocess studies killed, interrupted and resumed: about 5 minutes together). This process
#   gets one torch thread, so the two do not fight over the cores (two multi-threaded torch
#   processes on 2 cores slow small matmuls many times over).
# Each prints its own summary; the script fails if either fails or collects nothing. Arguments go
# to both (e.g. -x).
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
log=$(mktemp "${TMPDIR:-/tmp}/glintru-tests.XXXXXX")
# no cache plugin: two processes would write one .pytest_cache
OMP_NUM_THREADS=1 "$py" -m pytest -q -m "not slow or beside_units" -p no:cacheprovider "$@" > "$log" 2>&1 &
others=$!
trap 'kill "$others" 2>/dev/null; rm -f "$log"' EXIT
"$py" -m pytest -q -m "slow and not beside_units" -p no:cacheprovider "$@"
slow=$?
wait "$others"
rest=$?
echo "== the unit tests and the slow tests marked beside_units, run alongside =="
cat "$log"
echo "slow tests: exit $slow; the unit tests and beside_units: exit $rest"
[ "$slow" -eq 0 ] && [ "$rest" -eq 0 ]
