#!/usr/bin/env bash
# MongoDB dump benchmark: cofre's dump against a bare cursor drain of the
# same collection (100,000 documents), and cofre's peak RSS backing up a
# collection of about 1 GB. Starts its own SecantusDB (the test server of
# scripts/test, from its cached venv).
#
#   bench/mongo.sh [DOCS_FOR_THE_1GB_CASE]     default 1000000 documents of 1 KB
set -euo pipefail
cd "$(dirname "$0")/.."
big=${1:-1000000}

venv=${XDG_CACHE_HOME:-$HOME/.cache}/cofre-test/secantusdb-0.7.0b3
if [ ! -x "$venv/bin/secantusd-py" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check secantusdb==0.7.0b3
fi
cargo build --release --quiet --example mongo_bench
cargo build --release --quiet
bench=target/release/examples/mongo_bench
cofre=target/release/cofre

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path "$work/db" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; do sleep 0.2; done
uri="mongodb://127.0.0.1:$port/?directConnection=true"

echo "Machine: $(nproc) cores, $(uname -r); server: SecantusDB 0.7.0b3 on loopback"
echo
"$bench" load "$uri" bench k100 100000 200 >/dev/null
echo "| 100,000 documents | wall | documents/s | MB/s | |"
echo "| --- | --- | --- | --- | --- |"
"$bench" drain "$uri" bench k100 7

echo
"$bench" load "$uri" bench big "$big" 1000 >/dev/null
mkdir -p "$work/project" "$work/home"
echo hello >"$work/project/index.js"
/usr/bin/time -f '%e %M' -o "$work/time" env HOME="$work/home" BACKUP_SOURCE="$work/project" BACKUP_DIR="$work/out" \
  MONGODB_URI="mongodb://127.0.0.1:$port/bench?directConnection=true" \
  "$cofre" backup -q --no-prune --collection big >/dev/null
read -r wall rss <"$work/time"
size=$(du -b "$work"/out/backup_* | cut -f1)
echo "| cofre backup of a $big-document collection (~1 GB of BSON) | ${wall} s | archive $((size / 1000000)) MB | peak RSS $((rss / 1024)) MiB |"
