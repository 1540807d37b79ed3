#!/usr/bin/env bash
# Head-of-line probe: Check latency at a fixed 200/s, alone and beside one client that
# streams 40-item CheckBatch calls back to back (in flight 1). Same pinning as load.py:
# server on CPU 0, h2load on CPU 1; 127.0.0.1 only; about 40 s.
#
#   bench/mixed.sh            (run from the repository root; needs h2load, taskset)
#   PYTHONPATH=/tmp/cedar-pdp-ab/base-REV/service bench/mixed.sh   (an exported revision's
#                             server, as bench/transport_ab.py exports them)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null || {
  echo "mixed.sh: h2load missing: apt-get update && apt-get install -y nghttp2-client" >&2
  exit 2
}
PY=.venv/bin/python
W="${WORK:-/tmp/cedar-pdp-mixed}"
mkdir -p "$W"
"$PY" bench/scenario.py write "$W/bodies" >/dev/null
# The -ent shapes need the bench bundle (default policies + scenario.BENCH_TRUST), as load.py serves.
"$PY" -c '
import sys; sys.path.insert(0, "bench")
from pathlib import Path
import scenario
from pdp.bundle_files import build_archive, read_bundle_files
from pdp.config import default_bundle
files = scenario.bench_bundle_files(read_bundle_files(default_bundle()))
Path(sys.argv[1]).write_bytes(build_archive(files))
' "$W/bench-bundle.tar.gz"
H=(-H 'content-type: application/grpc' -H 'te: trailers')

taskset -c 0 "$PY" -m pdp serve --listen 127.0.0.1:0 --no-watch --bundle "$W/bench-bundle.tar.gz" --no-decision-cache \
  --metrics-listen 127.0.0.1:0 \
  >"$W/pdp.log" 2>&1 &
SRV=$!
trap 'kill -TERM $SRV; wait $SRV 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$W/pdp.log" && break; sleep 0.1; done
PORT=$(grep -oP 'listening on 127\.0\.0\.1:\K\d+' "$W/pdp.log")
U="http://127.0.0.1:$PORT/pdp.v1.AuthorizationService"

pct() { # latency percentiles of an h2load --log-file (status 200 rows only)
  "$PY" -c '
import sys
v = sorted(int(c[2]) for c in (l.split("\t") for l in open(sys.argv[1])) if c[1] == "200")
q = lambda p: v[int((len(v) - 1) * p)] / 1000
print(f"n={len(v)} p50={q(.5):.2f} p90={q(.9):.2f} p99={q(.99):.2f} max={v[-1] / 1000:.2f} ms")
' "$1"
}
probe() { # probe <log>: Check at 200/s for 10 s
  rm -f "$1" # h2load appends to an existing --log-file
  taskset -c 1 h2load -t 1 -D 10 -c 1 -m 1 --rps=200 -d "$W/bodies/check.bin" "${H[@]}" \
    --log-file="$1" "$U/Check" | grep -E '^requests:'
}

taskset -c 1 h2load -t 1 -D 3 -c 4 -m 4 -d "$W/bodies/check.bin" "${H[@]}" "$U/Check" >/dev/null
probe "$W/alone.tsv"
echo "Check @200/s alone:                 $(pct "$W/alone.tsv")"
for shape in batch batch-ent; do
  taskset -c 1 h2load -t 1 -D 12 -c 1 -m 1 -d "$W/bodies/$shape.bin" "${H[@]}" \
    "$U/CheckBatch" >"$W/bg-$shape.txt" &
  BG=$!
  sleep 1
  probe "$W/mixed-$shape.tsv"
  wait $BG
  echo "  background $shape: $(grep -oE 'finished in .*' "$W/bg-$shape.txt")"
  echo "Check @200/s beside $shape (c1): $(pct "$W/mixed-$shape.tsv")"
done
