#!/usr/bin/env bash
# The whole test suite, as CI runs it, in two pytest processes side by side. The tests marked
# `slow` (Ray clusters, real servers, subprocess studies: 14 tests, nearly all of the suite's time,
# much of it spent waiting for processes to start) run beside the others (about 600 unit and CLI
# tests, about 70 s), which get one torch thread so the two do not fight over a 2-core machine's
# cores (two multi-threaded torch processes on 2 cores slow small matmuls many times over). Each
# prints its own summary; the script fails if either fails or collects nothing. Arguments go to
# both (e.g. -x).
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
log=$(mktemp "${TMPDIR:-/tmp}/glintru-tests.XXXXXX")
# no cache plugin: two processes would write one .pytest_cache
OMP_NUM_THREADS=1 "$py" -m pytest -q -m "not slow" -p no:cacheprovider "$@" > "$log" 2>&1 &
others=$!
trap 'kill "$others" 2>/dev/null; rm -f "$log"' EXIT
"$py" -m pytest -q -m slow -p no:cacheprovider "$@"
slow=$?
wait "$others"
rest=$?
echo "== the tests not marked slow, run alongside =="
cat "$log"
echo "slow tests: exit $slow; the others: exit $rest"
[ "$slow" -eq 0 ] && [ "$rest" -eq 0 ]
