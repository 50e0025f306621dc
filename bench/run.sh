#!/usr/bin/env bash
# The whole benchmark in one command (see docs/benchmarks.md):
#
#   bash bench/run.sh
#
# Builds the packages, installs bench/'s own dependencies, makes the models if missing, runs every benchmark
# one after the other (never two at once), writes bench/results/<date>-<machine>.json and prints a table.
# Progress goes to stderr; each benchmark's own log to bench/results/scratch/<run>.log.
#
# Environment: NEW_TOKENS (64), REPEATS (3; TINY_REPEATS 7 for the tiny fixture), THREADS (2, for ONNX Runtime and torch alike),
# MACHINE (a name for the results file; default from the CPU model and core count), SKIP_BUILD=1 (use the
# packages' current dist/), ONLY=tiny|llama-100m (one model), QUIET_WAIT_S (default 600: how long, in all, to
# wait for other processes to leave the CPU before the benchmarks; 0 to not wait).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/training/.venv/bin/python}
NEW_TOKENS=${NEW_TOKENS:-64}
REPEATS=${REPEATS:-3}
THREADS=${THREADS:-2}
QUIET_WAIT_S=${QUIET_WAIT_S:-600}
ONLY=${ONLY:-}
SCRATCH=bench/results/scratch
mkdir -p "$SCRATCH/diag"
rm -f "$SCRATCH"/*.json "$SCRATCH"/*.log "$SCRATCH"/*.time "$SCRATCH"/diag/*

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Busy and total jiffies of all CPUs, from /proc/stat.
cpu_jiffies() { awk '/^cpu /{busy=$2+$3+$4+$7+$8+$9; total=busy+$5+$6; print busy, total}' /proc/stat; }

# Waits until the CPUs are at least 90% idle over 3 s, so that no other job skews a run; QUIET_WAIT_S is the
# budget for all waits of this run together. A run that starts on a busy machine says so (otherCpuPct).
WAITED=0
wait_quiet() {
  local b0 t0 b1 t1 idle first=1
  while :; do
    read -r b0 t0 < <(cpu_jiffies); sleep 3; read -r b1 t1 < <(cpu_jiffies)
    idle=$(( 100 - 100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1) ))
    if (( idle >= 90 )); then return 0; fi
    if (( WAITED >= QUIET_WAIT_S )); then log "CPU only ${idle}% idle, wait budget spent (${WAITED}s): running anyway (see otherCpuPct in the results)"; return 0; fi
    (( first )) && log "CPU ${idle}% idle: waiting for other processes (budget left $((QUIET_WAIT_S - WAITED))s)"
    first=0
    WAITED=$((WAITED + 3))
  done
}

# run NAME CMD...: one benchmark, timed; records its CPU time and the CPU time other processes used meanwhile.
run() {
  local name=$1; shift
  wait_quiet
  log "run $name: $*"
  local b0 t0 b1 t1
  read -r b0 t0 < <(cpu_jiffies)
  if ! /usr/bin/time -f '%e %U %S' -o "$SCRATCH/$name.time" "$@" 2> "$SCRATCH/$name.log"; then
    log "run $name FAILED; last lines of $SCRATCH/$name.log:"; tail -20 "$SCRATCH/$name.log" >&2; return 1
  fi
  read -r b1 t1 < <(cpu_jiffies)
  echo "$b0 $t0 $b1 $t1 $(getconf CLK_TCK) $(nproc)" >> "$SCRATCH/$name.time"
  log "run $name done in $(head -1 "$SCRATCH/$name.time" | awk '{print $1}') s"
}

if [[ -z "${SKIP_BUILD:-}" ]]; then
  # Only what the benchmark loads: @vikdf/core and the workspace packages it depends on (a package that is
  # work in progress elsewhere in the workspace cannot break the benchmark).
  log "building @vikdf/core (pnpm -r --filter @vikdf/core... build)"
  pnpm -r --filter '@vikdf/core...' build > "$SCRATCH/build.log" 2>&1 || { tail -20 "$SCRATCH/build.log" >&2; exit 1; }
fi

log "installing bench/ dependencies (its own pnpm project, not a workspace package)"
# bench/pnpm-workspace.yaml makes bench/ its own pnpm root, so the repository's workspace never lists it and
# pnpm reads bench's allowBuilds (with --ignore-workspace pnpm 12 ignores that file and fails the install on
# onnxruntime-node's and protobufjs's scripts). @vikdf/core is a file: dependency, hard-linked at install
# time: drop the copy so that a fresh build is linked again.
rm -rf bench/node_modules/.pnpm/@vikdf+core@file+..+packages+core
ONNXRUNTIME_NODE_INSTALL=skip pnpm install --dir bench > "$SCRATCH/install.log" 2>&1 || { tail -20 "$SCRATCH/install.log" >&2; exit 1; }
cmp -s packages/core/dist/index.js bench/node_modules/@vikdf/core/dist/index.js || { log "bench/node_modules/@vikdf/core is not the fresh build"; exit 1; }

log "making the models if missing (bench/make_models.py)"
"$PY" bench/make_models.py >&2

common=(--new-tokens "$NEW_TOKENS" --repeats "$REPEATS" --threads "$THREADS")
# The tiny model's runs take milliseconds: more repeats for a stable median.
tiny=(--new-tokens "$NEW_TOKENS" --repeats "${TINY_REPEATS:-7}" --threads "$THREADS")
if [[ -z "$ONLY" || "$ONLY" == tiny ]]; then
  run tiny.engine node bench/engine.mjs --bundle test/fixtures/tiny-random --label tiny-random "${tiny[@]}" --out "$SCRATCH/tiny.engine.json"
  run tiny.pytorch "$PY" bench/pytorch.py --fixture "${tiny[@]}" --out "$SCRATCH/tiny.pytorch.json"
  run tiny.transformersjs node bench/transformersjs.mjs --model tiny-random-hf "${tiny[@]}" --out "$SCRATCH/tiny.transformersjs.json"
  run diag/tiny.decoder node bench/profile_decoder.mjs --bundle test/fixtures/tiny-random --batches 1,16 --past 110 --threads "$THREADS" --out "$SCRATCH/diag/tiny.decoder.json"
  run diag/tiny.spin node bench/spin_experiment.mjs --bundle test/fixtures/tiny-random --repeats 5 --cycles 2 --threads "$THREADS" --out "$SCRATCH/diag/tiny.spin.json"
fi
if [[ -z "$ONLY" || "$ONLY" == llama-100m ]]; then
  run llama-100m.engine node bench/engine.mjs --bundle bench/.models/llama-100m "${common[@]}" --out "$SCRATCH/llama-100m.engine.json"
  run llama-100m.pytorch "$PY" bench/pytorch.py --checkpoint bench/.models/llama-100m-checkpoint "${common[@]}" --out "$SCRATCH/llama-100m.pytorch.json"
  run llama-100m.transformersjs node bench/transformersjs.mjs --model llama-100m-hf "${common[@]}" --out "$SCRATCH/llama-100m.transformersjs.json"
  # Diagnostics for the notes: one decoder call inside ORT (kernels by operator, binding), and thread spinning.
  run diag/llama-100m.decoder node bench/profile_decoder.mjs --bundle bench/.models/llama-100m --batches 1,16 --past 110 --threads "$THREADS" --out "$SCRATCH/diag/llama-100m.decoder.json"
  run diag/llama-100m.spin node bench/spin_experiment.mjs --bundle bench/.models/llama-100m --repeats 3 --threads "$THREADS" --out "$SCRATCH/diag/llama-100m.spin.json"
fi

log "writing the results"
node bench/report.mjs --scratch "$SCRATCH" --machine "${MACHINE:-}" --command "bash bench/run.sh${ONLY:+ (ONLY=$ONLY)}"
