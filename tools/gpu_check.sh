#!/usr/bin/env bash
# One prepared run of every cuda path and the three throughput benchmarks on a GPU machine (issue 15).
#
# On the GPU machine (a bare image with torch, torchvision, timm, transformers, accelerate; no network):
#   bash tools/gpu_check.sh                 install the carried wheels, run the 6 steps, write $OUT/gpu_check.json
#   bash tools/gpu_check.sh --dry-run       print the plan (and write the JSON with every step "planned"); runs nothing
#   bash tools/gpu_check.sh --only 4,5,6    rerun some steps (numbers as in the plan)
# GEN_COMPILE=default (step 6's torch.compile mode, default max-autotune) if autotuning outlasts the step's timeout.
# GPU_CHECK_ALLOW_CPU=1 skips the GPU check (the tests use it to run the step machinery on CPU, where steps fail).
# Options: --out DIR (default $OUT, else ./gpu_check_out), --wheels DIR (default .whl), --budget SECONDS (default 500, setup included:
# the steps' timeouts are cut to what is left of it), a failed step does not stop the next.
#
# Here, before the GPU run (needs the registry; builds the carried folder, ~30 MB):
#   bash tools/gpu_check.sh --prepare       pip-download the missing wheels (this venv's versions, cp312 manylinux)
#                                           into .whl/ and pack WordNet 3.0 into .whl/nltk_data.tar.gz
# which does, for each package the GPU image lacks (the requirement tree of diffusers, nltk, papermill, optuna,
# ipykernel, nbdev, execnb less the image's own packages, /work/.library/device/KINDS.md):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_5_x86_64 --platform any -d .whl NAME==VERSION
# Then, with the device tool: carry [".whl"], command `bash tools/gpu_check.sh`, timeout_s 600.
#
# Steps, in the order the issue asks: 1 nbdev-test --flags "slow cuda" (the notebooks holding such cells),
# 2 cogsynth run --device cuda --smoke, 3 the synthetic-digits tutorial at default parameters on cuda,
# 4 the CoG probe benchmark at full scale, 5 the train benchmark, 6 the generation benchmark.
# Each step has its own timeout; logs go to one tarball, results (the benchmarks' JSON included) to one JSON:
# $OUT/gpu_check.json and $OUT/gpu_check_logs.tar.gz (the device tool returns at most 8 files).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

dry=0; prepare=0; only=""; out="${OUT:-$here/gpu_check_out}"; wheels="$here/.whl"; budget=500
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --prepare) prepare=1 ;;
    --only) only="$2"; shift ;;
    --out) out="$2"; shift ;;
    --wheels) wheels="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (use --dry-run, --prepare, --only N,M, --out DIR, --wheels DIR, --budget S)" >&2; exit 2 ;;
  esac
  shift
done
py=${PYTHON:-python3}

# ------------------------------------------------------------------ --prepare (here, with the registry)
if [ "$prepare" = 1 ]; then
  mkdir -p "$wheels"
  "$py" - "$wheels" <<'EOF' || exit 1
import re, subprocess, sys
from importlib import metadata
dest = sys.argv[1]
roots = ["diffusers", "nltk", "papermill", "optuna", "ipykernel", "nbdev", "execnb"]
# in the GPU image already (KINDS.md, 2026-11-17); carried only when missing there
image = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython filelock flatbuffers fonttools
frozenlist fsspec grpcio h11 h5py hf-xet httpcore httpx huggingface-hub idna imageio iniconfig jinja2 joblib kiwisolver
lazy-loader lxml markdown markdown-it-py markupsafe matplotlib mdurl ml-dtypes mpmath msgpack multidict networkx ninja numba
numpy packaging pandas pathspec pillow pip pluggy portalocker propcache protobuf psutil pyarrow pybind11 pygments pyparsing
pyproject-hooks pytest python-dateutil pyyaml regex requests rich safetensors scikit-image scikit-learn scipy seaborn
sentence-transformers sentencepiece setuptools shellingham simplejson six sortedcontainers sympy tabulate threadpoolctl
tifffile timm tokenizers toolz torch torchvision tqdm transformers triton typer typing-extensions typing-inspect urllib3
wheel wrapt xxhash yarl zipp""".split())
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
need, todo = {}, list(roots)
while todo:
    n = norm(todo.pop())
    if n in need or n in image: continue
    try: d = metadata.distribution(n)
    except metadata.PackageNotFoundError: print(f"  not installed here, skipped: {n}"); continue
    need[n] = d.version
    for r in d.requires or []:
        if "extra ==" in r: continue
        todo.append(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0])
plat = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
        "--platform", "manylinux_2_5_x86_64", "--platform", "manylinux1_x86_64", "--platform", "any"]
for n, v in sorted(need.items()):
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *plat, "-d", dest, f"{n}=={v}"]
    if subprocess.run(cmd).returncode: sys.exit(f"pip download {n}=={v} failed: fix the version or add a --platform tag")
print(f"{len(need)} wheels in {dest}: " + " ".join(f"{n}=={v}" for n, v in sorted(need.items())))
EOF
  wn="${COGSYNTH_HOME:-$HOME/.cache/cogsynth}/nltk_data"
  [ -d "$wn/corpora/wordnet" ] || { echo "no WordNet under $wn: run 'cogsynth setup-wordnet' first" >&2; exit 1; }
  tar czf "$wheels/nltk_data.tar.gz" -C "$(dirname "$wn")" nltk_data
  du -sh "$wheels"; exit 0
fi

# ------------------------------------------------------------------ the plan
mkdir -p "$out"
work=${GPU_CHECK_WORK:-/tmp/cogsynth-gpu-check}
export COGSYNTH_HOME="${COGSYNTH_HOME:-$work/home}" MPLBACKEND=Agg PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
flagged=$("$py" - <<'EOF'
import json, re
from pathlib import Path
hits = []
for p in sorted(Path("nbs").glob("*.ipynb")):
    cells = json.loads(p.read_text())["cells"]
    src = lambda c: "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
    if any(c["cell_type"] == "code" and re.search(r"^#\|\s*(slow|cuda)\b", src(c), re.M) for c in cells): hits.append(re.escape(p.name))
print("^(" + "|".join(hits) + ")$" if hits else "")
EOF
)
names=(); cmds=(); limits=()
add() { names+=("$1"); limits+=("$2"); cmds+=("$3"); }
add nbdev_test_slow_cuda 60  "nbdev-test --flags 'slow cuda' --n-workers 4 --timing${flagged:+ --file-re '$flagged'}"
add cogsynth_run_smoke   45  "cogsynth run --device cuda --smoke --out '$work/smoke' --on-change recompute"
add synthetic_digits     80  "cogsynth run --device cuda --only synthetic_digits --out '$work/full' --on-change recompute"
add probe_speed          100 "$py benchmarks/probe_speed.py --device cuda --json-out '$work/probe_speed.json'"
add train_speed          60  "$py benchmarks/train_speed.py --device cuda --epochs 3 --images 8192 --no-baseline --data-path all --json-out '$work/train_speed.json'"
add generate_speed       135 "$py benchmarks/generate_speed.py --device cuda --precision bf16 --compile ${GEN_COMPILE:-max-autotune} --batch-size 16 --images 32 --skip-runner --json-out '$work/generate_speed.json'"
total=0; for t in "${limits[@]}"; do total=$((total + t)); done

selected() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
echo "gpu_check plan (budget ${budget} s; step timeouts sum to ${total} s; setup: install wheels from $wheels):"
for i in "${!names[@]}"; do
  n=$((i + 1)); mark=" "; selected "$n" || mark="-"
  printf '  %s %d. %-22s %4d s  %s\n' "$mark" "$n" "${names[$i]}" "${limits[$i]}" "${cmds[$i]}"
done

summary() {  # summary.tsv -> gpu_check.json (benchmark JSON files parsed in)
  "$py" - "$out/gpu_check.json" "$work/summary.tsv" "$dry" <<'EOF'
import json, os, sys, time
dest, tsv, dry = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
steps = []
for line in open(tsv):
    n, name, limit, rc, secs, status, cmd, log = line.rstrip("\n").split("\t")
    s = {"step": int(n), "name": name, "command": cmd, "timeout_s": int(limit), "status": status,
         "rc": None if rc == "" else int(rc), "seconds": None if secs == "" else float(secs)}
    if log and os.path.exists(log):
        s["log_tail"] = open(log, errors="replace").read()[-1500:]
    res = os.path.join(os.path.dirname(tsv), f"{name}.json")
    if os.path.exists(res):
        try: s["result"] = json.load(open(res))
        except ValueError as e: s["result_error"] = str(e)
    steps.append(s)
env = {}
try:
    import torch
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
except Exception as e: env = {"torch": f"not importable: {e}"}
ok = all(s["status"] in ("ok", "planned", "skipped") for s in steps)
json.dump({"schema": "cogsynth.gpu_check/1", "dry_run": dry, "all_ok": ok, "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "environment": env, "steps": steps}, open(dest, "w"), indent=1)
print(f"wrote {dest} (all_ok={ok})")
EOF
}

mkdir -p "$work/logs"; : > "$work/summary.tsv"
if [ "$dry" = 1 ]; then
  for i in "${!names[@]}"; do
    n=$((i + 1)); st=planned; selected "$n" || st=skipped
    printf '%s\t%s\t%s\t\t\t%s\t%s\t\n' "$n" "${names[$i]}" "${limits[$i]}" "$st" "${cmds[$i]}" >> "$work/summary.tsv"
  done
  summary; exit 0
fi

# ------------------------------------------------------------------ setup: wheels, WordNet, PATH
start=$(date +%s)
have_pkgs=0; "$py" -c "import diffusers, nltk, papermill, optuna, nbdev, execnb, ipykernel" >/dev/null 2>&1 && have_pkgs=1   # slow: once
if [ "$have_pkgs" = 0 ] && { [ ! -d "$wheels" ] || ! ls "$wheels"/*.whl >/dev/null 2>&1; }; then
  echo "no wheels in $wheels: build them here with 'bash tools/gpu_check.sh --prepare' and carry .whl" >&2; exit 1
fi
[ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ] || "$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'" || { echo "gpu_check.sh needs a CUDA GPU (use --dry-run here)" >&2; exit 1; }
mkdir -p "$work/bin" "$COGSYNTH_HOME"
if [ "$have_pkgs" = 1 ]; then
  echo "diffusers, nltk, papermill, optuna, nbdev present: no wheels installed"   # e.g. the users' venv (gpu.yaml)
else
  echo "installing $(ls "$wheels"/*.whl | wc -l) wheels into $work/site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" "$wheels"/*.whl \
    > "$work/logs/00_install.log" 2>&1 || { tail -20 "$work/logs/00_install.log"; exit 1; }
  export PYTHONPATH="$here:$work/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$work/site/bin:$PATH"
  "$py" -m ipykernel install --prefix "$work/site" --name python3 >/dev/null 2>&1 && export JUPYTER_PATH="$work/site/share/jupyter"
fi
if ! command -v cogsynth >/dev/null; then   # the package is not installed there: a shim over this checkout
  printf '#!/bin/sh\nexec %s -c "import sys; from cogsynth.cli import main; sys.exit(main())" "$@"\n' "$py" > "$work/bin/cogsynth"
  chmod +x "$work/bin/cogsynth"; export PATH="$work/bin:$PATH" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -f "$wheels/nltk_data.tar.gz" ]; then tar xzf "$wheels/nltk_data.tar.gz" -C "$COGSYNTH_HOME"
elif [ -d "$HOME/.cache/cogsynth/nltk_data" ]; then ln -sfn "$HOME/.cache/cogsynth/nltk_data" "$COGSYNTH_HOME/nltk_data"; fi
echo "setup took $(( $(date +%s) - start )) s"

# ------------------------------------------------------------------ the steps
for i in "${!names[@]}"; do
  n=$((i + 1)); name=${names[$i]}; log="$work/logs/$(printf '%02d' "$n")_$name.log"
  if ! selected "$n"; then printf '%s\t%s\t%s\t\t\tskipped\t%s\t\n' "$n" "$name" "${limits[$i]}" "${cmds[$i]}" >> "$work/summary.tsv"; continue; fi
  left=$(( budget - ($(date +%s) - start) )); limit=${limits[$i]}
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    printf '%s\t%s\t%s\t\t\tout_of_budget\t%s\t\n' "$n" "$name" "${limits[$i]}" "${cmds[$i]}" >> "$work/summary.tsv"; continue
  fi
  echo "== $n. $name (timeout ${limit} s)"
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" bash -c "${cmds[$i]}" > "$log" 2>&1; rc=$?
  secs=$("$py" -c "import time; print(round(time.time() - $t0, 1))")
  st=ok; [ "$rc" = 0 ] || st=failed; { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && st=timeout
  echo "   $st (rc $rc, ${secs} s)"; [ "$st" = ok ] || tail -5 "$log"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$name" "$limit" "$rc" "$secs" "$st" "${cmds[$i]}" "$log" >> "$work/summary.tsv"
done
summary
tar czf "$out/gpu_check_logs.tar.gz" -C "$work" logs summary.tsv $(cd "$work" && ls *.json 2>/dev/null) 2>/dev/null
echo "total $(( $(date +%s) - start )) s"
"$py" -c "import json,sys; sys.exit(0 if json.load(open('$out/gpu_check.json'))['all_ok'] else 1)"
