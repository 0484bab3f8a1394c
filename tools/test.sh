#!/usr/bin/env bash
# Every check CI runs, in order. Called by `bash setup.sh test` (which installs first) and by .ci/run.
#   bash tools/test.sh            all checks
#   bash tools/test.sh --quick    skip the slow tutorial runs in pytest (-m "not tutorial")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export MPLBACKEND=Agg PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "notebooks are clean and the modules are exported (nbdev-clean, nbdev-export change nothing)"
if git rev-parse --git-dir >/dev/null 2>&1; then
  before=$(git status --porcelain -- nbs cogsynth; git diff -- nbs cogsynth | sha256sum)
  nbdev-clean && nbdev-export
  after=$(git status --porcelain -- nbs cogsynth; git diff -- nbs cogsynth | sha256sum)
  if [ "$before" != "$after" ]; then
    echo "nbdev-clean or nbdev-export changed files: run them and commit the result"; git status --short -- nbs cogsynth; exit 1
  fi
else
  echo "not a git checkout: skipped"
fi

step "README.md matches nbs/index.ipynb"
python tools/readme.py --check

step "nbdev-test (the notebooks' own tests; flags notest/slow/cuda skipped)"
nbdev-test --n-workers "${NBDEV_WORKERS:-2}" --timing

step "pytest tests/ (tutorials through papermill with smoke parameters, behaviour checks)"
pytest tests -q -rs "$@"
