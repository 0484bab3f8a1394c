#!/usr/bin/env bash
# Every check CI runs, in order. Called by `bash setup.sh test` (which installs first) and by .ci/run.
#   bash tools/test.sh            all checks
#   bash tools/test.sh -k probe   extra arguments go to pytest (tests marked slow run only with --runslow)
# COGSYNTH_SLOW_TESTS=1 adds a last step: the tests that execute a tutorial in smoke mode (pytest marker `tutorial`,
# about 5 minutes on 2 cores); COGSYNTH_SLOW_TESTS=only runs that step alone (for a CI job of its own). Without it they
# are skipped, and the pytest step says how many. Tests marked `slow` (minutes of compute) run only with --runslow.
# COGSYNTH_ALLOW_UNEXECUTED=1 lets notebooks never executed by tools/refresh_notebooks.py pass the freshness check
# (stale ones still fail); the committed tree has every notebook executed, so CI leaves it unset.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MPLBACKEND=Agg PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
slow=${COGSYNTH_SLOW_TESTS:-0}
case "$slow" in 0|1|only) ;; *) echo "COGSYNTH_SLOW_TESTS=$slow: use 0, 1 or only"; exit 2 ;; esac
pytest_args=(-v --durations=15 -rs)   # a line per test as it ends, the 15 slowest at the end, why each skip
fresh_rc=0
if [ "$slow" != only ]; then

step "notebooks are clean and the modules are exported (nbdev-clean, nbdev-export change nothing)"
if git rev-parse --git-dir >/dev/null 2>&1; then
  tree_state() { { git status --porcelain -- nbs cogsynth; git diff -- nbs cogsynth
                   git ls-files -oz --exclude-standard -- nbs cogsynth | xargs -0 -r sha256sum; } | sha256sum; }
  before=$(tree_state)
  nbdev-clean && nbdev-export
  after=$(tree_state)
  if [ "$before" != "$after" ]; then
    echo "nbdev-clean or nbdev-export changed files: run them and commit the result"; git status --short -- nbs cogsynth; exit 1
  fi
else
  echo "not a git checkout: skipped"
fi

step "README.md matches nbs/index.ipynb"
python tools/readme.py --check

step "committed notebook outputs belong to their code (tools/refresh_notebooks.py --all --check)"
fresh_msg=$(python tools/refresh_notebooks.py --all --check 2>&1) || fresh_rc=$?   # repeated at the end, so the tests still run
echo "$fresh_msg"

step "a headless browser for the HTML report test (Debian's chromium)"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }
browser() { command -v chromium || command -v chromium-browser || command -v google-chrome; }
if ! browser >/dev/null; then   # Debian's package; GitHub's Ubuntu runners already have google-chrome
  { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
    || echo "could not apt-get install chromium (needs root or sudo): tests/test_report.py's browser test will fail"
fi
if browser >/dev/null; then "$(browser)" --version 2>/dev/null | head -1 || true; fi
export COGSYNTH_REQUIRE_BROWSER=1

step "nbdev-test (the notebooks' own tests; flags notest/slow/cuda skipped)"
nbdev-test --n-workers "${NBDEV_WORKERS:-2}" --timing

step "pytest tests/ (behaviour checks; the tests that execute a tutorial come in their own step with COGSYNTH_SLOW_TESTS=1)"
pytest tests "${pytest_args[@]}" "$@"
fi

if [ "$slow" != 0 ]; then
  step "pytest: the tests that execute a tutorial through papermill with smoke parameters (COGSYNTH_SLOW_TESTS=$slow)"
  pytest tests "${pytest_args[@]}" --tutorials -m tutorial "$@"
fi

if [ "$fresh_rc" != 0 ]; then
  echo; echo "FAILED: committed notebooks whose outputs no longer belong to their code (see the freshness step above):"
  echo "$fresh_msg"
  exit "$fresh_rc"
fi
