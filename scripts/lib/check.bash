# Sourced by the e2e tests: PASS/FAIL bookkeeping and the closing "N passed, M failed" line.
# shellcheck shell=bash

passed=0
failed=0

pass() { # NAME [DETAIL]
    passed=$((passed + 1))
    echo "PASS $1${2:+ ($2)}"
}

fail() { # NAME [DETAIL]
    failed=$((failed + 1))
    echo "FAIL $1${2:+ ($2)}"
}

finish() { # prints the summary line and exits 1 if anything failed
    echo "$passed passed, $failed failed"
    if ((failed)); then exit 1; fi
    exit 0
}
