#!/usr/bin/env bash
# The race, side by side, on the same scenario: Cerbos 0.55 and cedar-pdp serve the Cerbos
# anchor's scenario (document management, RBAC + ABAC + tenancy) and its two request shapes,
# on this machine, one after the other, under the same load generator and pinning.
#
#   bench/compare_cerbos.sh                      # full run: 2 x (3 runs x 8 cells), ~15 min
#   RUNS=1 DURATION=3 bench/compare_cerbos.sh    # smoke run
#
# Cerbos: the anchor's own harness, called as is (CERBOS_DIR/bench.sh: get-cerbos.sh,
#   verify.py, bench_util.py and its h2load invocation) on its policies and bodies.
# cedar-pdp: bench/load.py --scenario cerbos: the bundle bench/cerbos-scenario and the same
#   logical requests as pdp.v1 Check / CheckBatch bodies (bench/cerbos_requests.py).
# Both: server on SERVER_CPU, h2load -t 1 (and the harness) on LOADGEN_CPU; in flight
#   1 = -c 1 -m 1, 16 = -c 4 -m 4, 64 = -c 4 -m 16, and a fixed rate (-c 1 -m 1 --rps N);
#   a discarded WARMUP run before each measured one; p50/p99 exact from h2load's log.
#   Every body is sent once through grpcio and once through nghttp before the load and
#   its status and every decision checked; a run counts only if every response was a full
#   OK answer (see each harness).
#
# Knobs (environment), as bench.sh's:
#   DURATION=10 WARMUP=3 RUNS=3 SHAPES="a b" CONCURRENCY="1 16 64" CONNS=4
#   LOW_RPS_a=200 LOW_RPS_b=200   the fixed-rate probe per shape (0 = skip)
#   SERVER_CPU=0 LOADGEN_CPU=1    taskset pinning (empty = unpinned)
#   QUIET_MAX=                    e.g. 10: before each run wait (max 120 s) for < 10 % other load
#   ORDER="cerbos pdp"            which server goes first
#   DECISION_CACHE=off            on: cedar-pdp serves with its decision cache (warm figures)
#   WORKERS=1                     cedar-pdp `pdp serve --workers N` (e.g. 2, unpinned, with
#                                 SERVER_CPU= LOADGEN_CPU=: both servers on every core)
#   CERBOS_DIR=/work/shared/bench/cerbos   COMPARE_WORK=/tmp/cerbos-compare
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
export DURATION="${DURATION:-10}" WARMUP="${WARMUP:-3}" RUNS="${RUNS:-3}"
export SHAPES="${SHAPES:-a b}" CONCURRENCY="${CONCURRENCY:-1 16 64}" CONNS="${CONNS:-4}"
export LOW_RPS_a="${LOW_RPS_a:-200}" LOW_RPS_b="${LOW_RPS_b:-200}"
export SERVER_CPU="${SERVER_CPU-0}" LOADGEN_CPU="${LOADGEN_CPU-1}" QUIET_MAX="${QUIET_MAX:-}"
ORDER="${ORDER:-cerbos pdp}"
CACHE_ARGS=()
[[ "${DECISION_CACHE:-off}" == on ]] && CACHE_ARGS=(--decision-cache)
CERBOS_DIR="${CERBOS_DIR:-/work/shared/bench/cerbos}"
WORK="${COMPARE_WORK:-/tmp/cerbos-compare}"
PY="$REPO/.venv/bin/python"

log() { echo "[compare $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
install() { # install <Debian package>: only as root, and only when something is missing
  [[ "$(id -u)" == 0 ]] || die "missing Debian package $1 (apt-get install -y $1)"
  log "installing $1"
  apt-get install -y "$1" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$1" >/dev/null; }
}
need() { command -v "$1" >/dev/null || install "$2"; } # need <command> <Debian package>
need h2load nghttp2-client
need nghttp nghttp2-client
need taskset util-linux
need /usr/bin/time time
need ss iproute2
python3 -c 'import ensurepip' 2>/dev/null || install python3-venv # bench.sh makes a venv
[[ -x "$CERBOS_DIR/bench.sh" ]] || die "no Cerbos anchor at $CERBOS_DIR (set CERBOS_DIR)"
[[ -x "$PY" ]] || make -C "$REPO" .venv/.installed >&2
# get-cerbos.sh caches the binary outside the repo; it needs npm only the first time.
"$CERBOS_DIR/get-cerbos.sh" >/dev/null 2>&1 || { need npm npm; "$CERBOS_DIR/get-cerbos.sh" >/dev/null; }

mkdir -p "$WORK"
STAMP="$(date +%Y%m%d-%H%M%S)"
RATES=()
for s in $SHAPES; do
  var="LOW_RPS_$s"
  ((${!var:-0} > 0)) && RATES+=("$s=${!var}")
done
RATE_ARGS=()
((${#RATES[@]})) && RATE_ARGS=(--rps-probe "$(IFS=,; echo "${RATES[*]}")")

results_of() { sed -n 's/^raw results: //p' "$1" | tail -n 1; }

run_cerbos() {
  log "Cerbos: $CERBOS_DIR/bench.sh"
  PEERS_WORK="$WORK/cerbos" "$CERBOS_DIR/bench.sh" | tee "$WORK/cerbos-$STAMP.txt"
  CERBOS_RESULTS="$(results_of "$WORK/cerbos-$STAMP.txt")"
}

run_pdp() {
  log "cedar-pdp: bench/load.py --scenario cerbos"
  # shellcheck disable=SC2086  # SHAPES and CONCURRENCY are word lists
  "$PY" "$HERE/load.py" --scenario cerbos --duration "$DURATION" --warmup "$WARMUP" \
    --runs "$RUNS" --shapes $SHAPES --concurrency $CONCURRENCY --conns "$CONNS" \
    "${RATE_ARGS[@]}" "${CACHE_ARGS[@]}" --workers "${WORKERS:-1}" --server-cpu "$SERVER_CPU" --loadgen-cpu "$LOADGEN_CPU" \
    --quiet-max "${QUIET_MAX:-0}" --workdir "$WORK/pdp" | tee "$WORK/pdp-$STAMP.txt" || true
  PDP_RESULTS="$(results_of "$WORK/pdp-$STAMP.txt")"
}

CERBOS_RESULTS="" PDP_RESULTS=""
for side in $ORDER; do
  case "$side" in
    cerbos) run_cerbos ;;
    pdp) run_pdp ;;
    *) die "ORDER: unknown side $side (cerbos, pdp)" ;;
  esac
done
[[ -s "$CERBOS_RESULTS" ]] || die "no Cerbos results (see $WORK/cerbos-$STAMP.txt)"
[[ -s "$PDP_RESULTS" ]] || die "no cedar-pdp results (see $WORK/pdp-$STAMP.txt)"

echo
echo "Side by side ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)):"
echo "server on CPU ${SERVER_CPU:-none}, h2load on CPU ${LOADGEN_CPU:-none}, ${DURATION} s per run,"
echo "${RUNS} run(s), medians of valid runs; ratio = cedar-pdp / Cerbos:"
echo
status=0
"$PY" "$HERE/compare_cerbos_table.py" "$CERBOS_RESULTS" "$PDP_RESULTS" | tee "$WORK/compare-$STAMP.md" || status=$?
echo
echo "raw results: $CERBOS_RESULTS $PDP_RESULTS; table: $WORK/compare-$STAMP.md"
exit "$status"
