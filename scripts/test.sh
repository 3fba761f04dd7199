#!/usr/bin/env bash
# Run every test of the workspace: unit, integration and doc tests of every crate, then print
# one closing line summing them all.
#
# The core's tests need no server. When a crate's tests need one (PostgreSQL, Redis, ...), this
# script is where it is checked for and started, before the tests run; a test that needs a server
# then fails, never skips, if the server is unreachable.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

cargo test --workspace --all-features --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) passed += $i
            if ($(i + 1) ~ /^failed/) failed += $i
        }
     }
     END { printf "\nSummary: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
