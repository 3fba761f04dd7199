#!/usr/bin/env bash
# Run every test of the workspace: unit, integration and doc tests of every crate.
#
# The core's tests need no server. When a crate's tests need one (PostgreSQL, Redis, ...), this
# script is where it is checked for and started, before the tests run; a test that needs a server
# then fails, never skips, if the server is unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --all-features --no-fail-fast "$@"
