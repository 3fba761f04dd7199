#!/usr/bin/env bash
# Run every test of the workspace: unit, integration and doc tests of every crate, then print
# one closing line summing them all.
#
# The core's tests need no server. The resource crates' tests need PostgreSQL, MariaDB, Redis,
# RabbitMQ, NATS (with JetStream) and a Kafka broker on loopback: this script checks each port and
# starts what is not listening (installing the Debian package first when the server is not
# installed at all). The Kafka broker is tansu, built from crates.io once into
# ~/.cache/nebula-tools by scripts/tools.sh (about 15-18 minutes on 2 cores the first time;
# $NEBULA_TOOLS moves the folder) and started with in-memory storage from an empty folder. A
# test that needs a server then fails, never skips, if the server is unreachable.
set -uo pipefail
cd "$(dirname "$0")/.."

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ensure NAME PORT PACKAGE BINARY START-COMMAND...
ensure() {
    local name=$1 port=$2 package=$3 binary=$4
    shift 4
    if listening "$port"; then
        return 0
    fi
    if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "$binary" ]; then
        echo "== installing $name ($package)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package") ||
            echo "!! could not install $package"
    fi
    echo "== starting $name on 127.0.0.1:$port"
    "$@" || echo "!! could not start $name"
    for _ in $(seq 1 60); do
        listening "$port" && return 0
        sleep 0.5
    done
    echo "!! $name is not listening on 127.0.0.1:$port; its tests will fail"
}


ensure PostgreSQL 5432 postgresql pg_ctlcluster \
    sh -c 'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start'
ensure MariaDB 3306 mariadb-server /usr/sbin/mariadbd \
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
ensure Redis 6379 redis-server redis-server \
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
ensure RabbitMQ 5672 rabbitmq-server rabbitmq-server \
    rabbitmq-server -detached
ensure NATS 4222 nats-server /usr/sbin/nats-server \
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log

export NEBULA_TANSU=${NEBULA_TOOLS:-$HOME/.cache/nebula-tools}/bin/tansu
# Installs tansu once (or waits for the install CI started in the background).
./scripts/tools.sh
# The start command of nebula_resource_testing::Service::tansu(), which the Kafka tests also use
# to restart it.
ensure tansu 9092 tansu "$NEBULA_TANSU" \
    sh -c 'dir=$(mktemp -d) && cd "$dir" && nohup "$NEBULA_TANSU" broker \
        --storage-engine memory://tansu/ --listener-url tcp://127.0.0.1:9092 \
        --advertised-listener-url tcp://127.0.0.1:9092 >/tmp/nebula-tansu.log 2>&1 &'

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
