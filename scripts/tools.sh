#!/usr/bin/env bash
# Install the tools the tests need that no Debian package offers, once, into a cache folder:
# today tansu 0.6.0 (a Kafka-compatible broker, from crates.io), into
# ${NEBULA_TOOLS:-~/.cache/nebula-tools}/bin. About 15-18 minutes on 2 cores the first time;
# a no-op once installed. Safe to run twice at once: the second waits for the first (a lock in
# the cache folder), so CI starts it in the background while it builds and lints, and the test
# script runs it again to wait for it.
set -uo pipefail

tools=${NEBULA_TOOLS:-$HOME/.cache/nebula-tools}
mkdir -p "$tools"
exec 9>"$tools/.install.lock"
flock 9

if [ -x "$tools/bin/tansu" ]; then
    exit 0
fi
echo "== installing tansu 0.6.0 into $tools (once; about 15-18 minutes on 2 cores)"
started=$(date +%s)
if cargo install tansu --version 0.6.0 --locked --features dynostore --root "$tools" --quiet; then
    echo "== tansu installed in $(($(date +%s) - started)) s"
else
    echo "!! could not install tansu"
    exit 1
fi
