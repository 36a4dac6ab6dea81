#!/usr/bin/env bash
# cleave's test suite. Each test prints what it checked; the last line is
# "N passed, N failed" and the exit status is non-zero on any failure. A test
# whose output starts with "skipped:" (no GPU, no network, ...) counts as
# neither, and is listed with its reason.
#   BUILD=build bash tests/run.sh [FILTER]
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CLEAVE=$BUILD/cleave
REF=$BUILD/ref64
FILTER=${1:-}
TMP=$(mktemp -d /tmp/cleave-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0 skipped=0 failed_names=()

run() { # run NAME CMD...: one test; its output is shown only when it fails
    local name=$1; shift
    [[ -n $FILTER && $name != *$FILTER* ]] && return 0
    local log=$TMP/log.$passed.$failed.$skipped
    if "$@" >"$log" 2>&1; then
        if [[ $(head -c 8 "$log") == skipped: ]]; then
            skipped=$((skipped + 1)); printf 'skip  %s: %s\n' "$name" "$(head -n 1 "$log" | cut -c 10-)"
            return 0
        fi
        passed=$((passed + 1)); printf 'ok    %s\n' "$name"
        if [[ -n ${VERBOSE:-} ]]; then sed 's/^/      /' "$log"
        else grep -E 'max \|err\||^skipped:' "$log" | sed 's/^/      /'; fi
    else
        failed=$((failed + 1)); failed_names+=("$name"); printf 'FAIL  %s\n' "$name"; sed 's/^/      /' "$log"
    fi
}

json_get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }

# Under the sanitizers: Open MPI's own allocations are not ours to report, and
# resident-memory budgets do not apply to ASan's shadow memory.
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
SANITIZED=$([[ $BUILD == *asan* ]] && echo 1 || echo "")

source tests/cases.sh

echo
((skipped == 0)) || echo "$skipped skipped (see the skip lines above for why)"
echo "$passed passed, $failed failed"
((failed == 0)) || { printf 'failed: %s\n' "${failed_names[@]}"; exit 1; }
