#!/usr/bin/env bash
# Instructions per call of the real `pdp serve`, counted by callgrind: what each operations
# hook (metrics, decision log, tracing at 1 %) adds to a Check, as a figure that does not move
# with the machine's load (throughput on a shared host varies by up to 8 % run to run, as much
# as the effects sought; instruction counts vary by ~0.5 %).
#
#   bash bench/ops_callgrind.sh [MODE ...]     # default: off metrics log trace all
#   CALLS=2000 SHAPE=batch bash bench/ops_callgrind.sh off all
#
# Modes are those of the served cost runs in RESULTS.md (off: metrics, log and tracing off;
# all: the three on; warm: metrics on and the decision cache on, every call a hit). Each
# server runs under valgrind, answers 200 warm-up calls (h2load, 4 connections x 4 streams),
# has its counters zeroed (callgrind_control -z), answers CALLS more, and is dumped: the
# dump holds the server's user-space instructions for those calls, every thread included
# (the decision-log writer, the span processor), kernel time not. Needs valgrind and h2load
# (apt-get install -y valgrind nghttp2-client netcat-openbsd); about a minute per mode.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
PY="$REPO/.venv/bin/python"
CALLS="${CALLS:-1000}"
SHAPE="${SHAPE:-check}"
PORT="${PORT:-50980}"
WORK="${WORK:-/tmp/cedar-pdp-callgrind}"
for tool in valgrind callgrind_control h2load nc; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y valgrind nghttp2-client netcat-openbsd)" >&2; exit 2; }
done
cd "$REPO"
mkdir -p "$WORK"
"$PY" "$HERE/scenario.py" write "$WORK/bodies" >/dev/null
# The bench bundle, as bench/load.py builds it (the `-ent` shapes need its trust settings).
"$PY" - "$WORK/bench-bundle.tar.gz" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
import scenario
from pdp.bundle_files import build_archive, read_bundle_files
from pdp.config import default_bundle
files = scenario.bench_bundle_files(read_bundle_files(default_bundle()))
Path(sys.argv[1]).write_bytes(build_archive(files))
EOF
METHOD="$("$PY" -c "import sys; sys.path.insert(0, '$HERE'); import scenario; print(scenario.SHAPES['$SHAPE'].method)")"
OTEL=(OTEL_TRACES_EXPORTER=console OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01)

count() { # count MODE: prints the instructions per call
  local mode=$1 dir="$WORK/$1" args=() envs=()
  local log=(--decision-log=file "--decision-log-file=$WORK/$1/decisions.jsonl")
  case $mode in
    off) args=(--metrics-listen=off --decision-log=off --no-decision-cache) ;;
    metrics) args=(--metrics-listen=127.0.0.1:0 --decision-log=off --no-decision-cache) ;;
    log) args=(--metrics-listen=off "${log[@]}" --no-decision-cache) ;;
    trace) args=(--metrics-listen=off --decision-log=off --no-decision-cache); envs=("${OTEL[@]}") ;;
    all) args=(--metrics-listen=127.0.0.1:0 "${log[@]}" --no-decision-cache); envs=("${OTEL[@]}") ;;
    warm) args=(--metrics-listen=127.0.0.1:0 --decision-log=off --decision-cache) ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  rm -rf "$dir"; mkdir -p "$dir/data"
  # The console exporter's spans go to the server's stdout, the log file beside it.
  env "${envs[@]}" valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
    "$PY" -m pdp serve --listen "127.0.0.1:$PORT" --no-watch --admin-listen=off \
    --bundle "$WORK/bench-bundle.tar.gz" --data-dir "$dir/data" "${args[@]}" >"$dir/serve.log" 2>&1 &
  local vp=$!
  for _ in $(seq 300); do nc -z 127.0.0.1 "$PORT" 2>/dev/null && break; sleep 1; done
  load() {
    h2load -t1 -c4 -m4 -n "$1" -d "$WORK/bodies/$SHAPE.bin" -H 'content-type: application/grpc' \
      -H 'te: trailers' "http://127.0.0.1:$PORT/pdp.v1.AuthorizationService/$METHOD" |
      grep -q "$1 succeeded, 0 failed" || { echo "$mode: not every call succeeded" >&2; kill "$vp"; exit 1; }
  }
  load 200
  sleep 1
  callgrind_control -z "$vp" >/dev/null 2>&1
  load "$CALLS"
  sleep 2 # the decision-log writer drains every 0.1 s: its records are counted
  callgrind_control -d "$vp" >/dev/null 2>&1
  sleep 1
  kill -INT "$vp"; wait "$vp" 2>/dev/null || true
  awk '/^totals:/ {print int($2 / '"$CALLS"')}' "$dir"/cg.*.1
}

echo "| mode | instructions per $SHAPE call | against off |"
echo "|---|---|---|"
base=""
for mode in "${@:-off metrics log trace all}"; do
  for m in $mode; do
    n="$(count "$m")"
    [[ "$m" == off ]] && base="$n"
    if [[ -n "$base" && "$m" != off ]]; then
      rel="$(awk -v a="$n" -v b="$base" 'BEGIN {printf "%+d (%.1f %% of the call)", a - b, 100 * (a - b) / a}')"
    else
      rel=""
    fi
    echo "| $m | $n | $rel |"
  done
done
