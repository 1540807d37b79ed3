#!/usr/bin/env bash
# The real server, a base checkout against this one, interleaved (base, this, base, this):
# the Cerbos race's shapes (bench/cerbos-requests/{a,b}.bin) at 16 in flight, cache off,
# the SQLite store on. Server pinned to CPU 0, h2load -t 1 -c 4 -m 4 on CPU 1, a fresh
# server and data dir each run, WARMUP s discarded then DURATION s measured (issue 7).
#
#   git worktree add /tmp/wt-base 640bf3c && make -C /tmp/wt-base lint   # its own .venv
#   bench/batch_ab.sh /tmp/wt-base            # ROUNDS=2 SHAPES="b a" WARMUP=2 DURATION=8
set -euo pipefail
BASE="$(cd "$1" && pwd)"
THIS="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-2}" SHAPES="${SHAPES:-b a}" WARMUP="${WARMUP:-2}" DURATION="${DURATION:-8}"
PORT="${PORT:-50391}"
H=(-H 'content-type: application/grpc' -H 'te: trailers')
for shape in $SHAPES; do
  rpc=Check
  [[ $shape == b ]] && rpc=CheckBatch
  body="$THIS/bench/cerbos-requests/$shape.bin"
  url="http://127.0.0.1:$PORT/pdp.v1.AuthorizationService/$rpc"
  for round in $(seq "$ROUNDS"); do
    for tree in "$BASE" "$THIS"; do
      data="$(mktemp -d)"
      taskset -c 0 "$tree/.venv/bin/pdp" serve --listen "127.0.0.1:$PORT" --no-watch \
        --metrics-listen 127.0.0.1:0 --admin-listen off --no-decision-cache \
        --bundle "default=$THIS/bench/cerbos-scenario" --data-dir "$data" >"$data/log" 2>&1 &
      pid=$!
      for _ in $(seq 300); do grep -q listening "$data/log" && break; sleep 0.1; done
      grep -q listening "$data/log" || { echo "no server: $(tail -3 "$data/log")" >&2; exit 1; }
      taskset -c 1 h2load -t 1 -c 4 -m 4 -D "$WARMUP" -d "$body" "${H[@]}" "$url" >/dev/null
      out="$(taskset -c 1 h2load -t 1 -c 4 -m 4 -D "$DURATION" -d "$body" "${H[@]}" "$url")"
      kill "$pid"
      wait "$pid" 2>/dev/null || true
      rm -rf "$data"
      rps="$(grep -oP 'finished in [^,]*, \K[0-9.]+' <<<"$out")"
      echo "shape $shape round $round $(basename "$tree"): $rps calls/s" \
        "(load $(cut -d' ' -f1 /proc/loadavg); $(grep -oP '\d+ succeeded, \d+ failed' <<<"$out"))"
    done
  done
done
