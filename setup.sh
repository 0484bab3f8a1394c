#!/usr/bin/env bash
# cogsynth's one entry point on a fresh Linux machine (Python >= 3.11, pip, apt).
#   bash setup.sh run  [--out DIR] [--smoke] [--device cuda]   install everything, run the main job
#   bash setup.sh test                                         install everything, run every test
#   bash setup.sh install                                      install only
# The virtual environment lives in $COGSYNTH_VENV (default: .venv next to this file).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
venv=${COGSYNTH_VENV:-$here/.venv}
py=${PYTHON:-python3}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

check_space() {  # torch and its CUDA libraries take about 6.5 GB: say so before pip fails halfway with "No space left"
  local need_gb=7 at avail_kb
  at=$(dirname "$venv")
  avail_kb=$(df -Pk "$at" 2>/dev/null | awk 'NR==2 {print $4}')
  if [ -n "$avail_kb" ] && [ "$avail_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    say "only $((avail_kb / 1024)) MB free under $at, and installing torch needs about $need_gb GB:"
    say "free some space there, or put the environment elsewhere: COGSYNTH_VENV=/a/roomier/place/venv bash setup.sh ${cmd:-run}"
    exit 1
  fi
}

ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    say "creating virtual environment $venv"
    if ! "$py" -m venv "$venv" 2>/dev/null; then
      say "python3-venv missing: installing it with apt"
      as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv
      "$py" -m venv "$venv"
    fi
  fi
  # Reinstall only when the package definition changed since the last install.
  stamp="$venv/.cogsynth-installed"
  want=$(cat pyproject.toml | sha256sum | cut -c1-16)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -c "import torch" 2>/dev/null || check_space
    say "installing cogsynth and its dependencies (first time: a few minutes, torch is large)"
    pip_q() {  # pip, without the machine-specific "Location ... is ignored" noise; keeps pip's exit status
      "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location .* is ignored" || true; }
      return "${PIPESTATUS[0]}"
    }
    pip_q install -q --upgrade pip
    pip_q install -q -e ".[dev]"
    echo "$want" > "$stamp"
  fi
  "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
}

ensure_wordnet() {
  if "$venv/bin/cogsynth" setup-wordnet --check >/dev/null 2>&1; then return; fi
  if [ ! -f /usr/share/wordnet/data.noun ]; then
    say "installing Debian's WordNet 3.0 dictionary (wordnet-base, wordnet-sense-index)"
    as_root apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index \
      || { say "could not apt-get install wordnet-base wordnet-sense-index (need root or sudo)"; exit 1; }
  fi
  "$venv/bin/cogsynth" setup-wordnet
}

cmd=${1:-run}; shift || true
ensure_venv
ensure_wordnet
export PATH="$venv/bin:$PATH"
case "$cmd" in
  install) say "installed: activate with 'source $venv/bin/activate'" ;;
  run) cogsynth run "$@" ;;
  test) bash "$here/tools/test.sh" "$@" ;;
  *) say "unknown command '$cmd': use run, test or install"; exit 2 ;;
esac
