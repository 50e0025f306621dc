#!/usr/bin/env bash
# The repository's test command (`pnpm test`). Safe to run again and again:
#   1. installs the Node dependencies (`pnpm install`; `--frozen-lockfile` when CI=true),
#   2. creates training/.venv if missing and installs the CPU torch wheel first, then training[test]
#      (skipped when training/pyproject.toml has not changed since the last install),
#   3. builds the packages (`pnpm -r build`),
#   4. runs vitest and pytest (training/),
#   5. prints "N passed, N failed" as its very last line: vitest's numPassedTests/numFailedTests plus
#      pytest's junit counts. A step or runner that fails without reporting a failed test (install or
#      build failure, crash, test file that does not load) counts as 1 failed, and is named above the line.
# Exits non-zero if anything failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0"
VENV="training/.venv"
# onnxruntime-node's postinstall only fetches CUDA libraries; pnpm-workspace.yaml already denies it.
export ONNXRUNTIME_NODE_INSTALL=skip

TMP="$(mktemp -d "${TMPDIR:-/tmp}/vikdf-test.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
problems=()
problem() { problems+=("$1"); failed=$((failed + 1)); echo "test.sh: $1" >&2; }
section() { printf '\n==> %s\n' "$1"; }

# --- 1. Node dependencies --------------------------------------------------------------------
section "Node dependencies"
node_ok=1
if ! command -v pnpm >/dev/null 2>&1; then
  problem "pnpm not found (npm i -g pnpm@12.4.2)"
  node_ok=0
elif [ "${CI:-}" = "true" ]; then
  pnpm install --frozen-lockfile || { problem "pnpm install --frozen-lockfile failed"; node_ok=0; }
else
  pnpm install || { problem "pnpm install failed"; node_ok=0; }
fi

# --- 2. Python environment for training/ --------------------------------------------------------
section "Python environment ($VENV)"
py_ok=1
VPY="$VENV/bin/python"
STAMP="$VENV/.vikdf-installed"
want_stamp="$TORCH_SPEC $(sha256sum training/pyproject.toml | cut -d' ' -f1)"
if [ ! -x "$VPY" ]; then
  echo "creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv "$VENV" || { problem "python3 -m venv $VENV failed"; py_ok=0; }
fi
if [ "$py_ok" = 1 ]; then
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ]; then
    echo "up to date (training/pyproject.toml unchanged since the last install)"
  else
    rm -f "$STAMP"
    # torch first, so that no dependency pulls a CUDA build of it.
    if "$VPY" -m pip install -q "$TORCH_SPEC" && "$VPY" -m pip install -q -e 'training[test]'; then
      echo "$want_stamp" >"$STAMP"
      echo "installed $TORCH_SPEC and training[test]"
    else
      problem "pip install into $VENV failed"
      py_ok=0
    fi
  fi
fi

# --- 3. Build --------------------------------------------------------------------------------------
if [ "$node_ok" = 1 ]; then
  section "Build (pnpm -r build)"
  pnpm -r build || problem "pnpm -r build failed"
fi

# --- 4a. vitest ------------------------------------------------------------------------------------
if [ "$node_ok" = 1 ]; then
  section "vitest"
  pnpm exec vitest run --reporter=default --reporter=json --outputFile.json="$TMP/vitest.json"
  vitest_rc=$?
  if counts="$(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    // test files that failed without a failed test (import error, syntax error, ...)
    const fileErrors = (r.testResults || []).filter((f) => f.status === "failed" &&
      !(f.assertionResults || []).some((a) => a.status === "failed")).length;
    console.log(`${r.numPassedTests} ${r.numFailedTests} ${fileErrors}`);
  ' "$TMP/vitest.json" 2>/dev/null)"; then
    read -r vp vf vfe <<<"$counts"
    passed=$((passed + vp))
    failed=$((failed + vf))
    [ "$vfe" -gt 0 ] && problem "vitest: $vfe test file(s) failed to run"
    if [ "$vitest_rc" -ne 0 ] && [ "$vf" -eq 0 ] && [ "$vfe" -eq 0 ]; then
      problem "vitest exited $vitest_rc without a failed test (unhandled error?)"
    fi
  else
    problem "vitest crashed (exit $vitest_rc, no JSON report)"
  fi
fi

# --- 4b. pytest ------------------------------------------------------------------------------------
if [ "$py_ok" = 1 ]; then
  section "pytest (training/)"
  (cd training && "$ROOT/$VPY" -m pytest -p no:cacheprovider -q --junitxml="$TMP/pytest.xml")
  pytest_rc=$?
  if [ -f "$TMP/pytest.xml" ] && counts="$(node -e '
    const xml = require("fs").readFileSync(process.argv[1], "utf8");
    let tests = 0, bad = 0, skipped = 0;
    for (const [, attrs] of xml.matchAll(/<testsuite\b([^>]*)>/g)) {
      const n = (k) => Number((attrs.match(new RegExp(`\\b${k}="(\\d+)"`)) || [0, 0])[1]);
      tests += n("tests"); bad += n("failures") + n("errors"); skipped += n("skipped");
    }
    console.log(`${tests - bad - skipped} ${bad}`);
  ' "$TMP/pytest.xml" 2>/dev/null)"; then
    read -r pp pf <<<"$counts"
    passed=$((passed + pp))
    failed=$((failed + pf))
    if [ "$pytest_rc" -ne 0 ] && [ "$pytest_rc" -ne 5 ] && [ "$pf" -eq 0 ]; then
      problem "pytest exited $pytest_rc without a failed test"
    fi
  elif [ "$pytest_rc" -eq 5 ]; then
    echo "pytest: no tests collected (0 tests)"
  else
    problem "pytest crashed (exit $pytest_rc, no junit report)"
  fi
fi

# --- 5. Summary (must stay the last line) -----------------------------------------------------------
echo
for p in "${problems[@]}"; do echo "problem: $p"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
