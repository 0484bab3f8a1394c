"""Execute the committed notebooks so their outputs belong to their code, and check that they still do (issue 18).

    python tools/refresh_notebooks.py NAME [NAME ...]    execute these notebooks unless they are fresh
    python tools/refresh_notebooks.py --all              execute every stale or never-executed notebook
    python tools/refresh_notebooks.py --all --force      execute every notebook
    python tools/refresh_notebooks.py --all --check      exit 1 naming each stale notebook (what CI runs)
    python tools/refresh_notebooks.py --list             status of every notebook, nothing executed

NAME is a path (`nbs/tutorials/06_synthetic_digits.ipynb`), a stem (`06_synthetic_digits`, `tutorials/06_synthetic_digits`)
or the name after the number (`synthetic_digits`).

A notebook is executed with papermill at its default parameters (no injected cell), in the python3 kernel, with
the notebook's own folder as working directory. Cells nbdev-test leaves out (`#| eval: false` and the flags of
`tst_flags`, e.g. `slow`, `cuda`) are not executed and keep no outputs. The outputs are then normalised so a
committed notebook carries what the reader needs and nothing of the machine that ran it:
- progress bars (tqdm lines, widget outputs, tqdm's IProgress warning) are dropped, and cogsynth's INFO logs (timings)
  are not written (COGSYNTH_QUIET=1), so outputs repeat given the seed;
- kernels run with a fresh temporary COGSYNTH_HOME (WordNet copied in; `--home DIR` to choose), so no cached
  generator or earlier results change what a tutorial prints;
- the repository root, site-packages, $COGSYNTH_HOME, temporary folders, $HOME and the host name become
  placeholders (`<repo>`, `<site-packages>`, `$COGSYNTH_HOME`, `<tmp>`, `~`, `<host>`);
- execution counts and `at 0x...` ids go, through nbdev's own `clean_nb` with this project's config, so
  `nbdev-clean` afterwards changes nothing.
The notebook's metadata then records, under the key `cogsynth` (kept by nbdev-clean through
`allowed_metadata_keys` in pyproject.toml):
    {"executed": {"code_sha256": ..., "parameters": {name: default}, "kernel": "python3", "seconds": ...,
                  "output_bytes": ...}}
`code_sha256` hashes the sources of all code cells (line endings normalised): a notebook whose code cells no
longer match it is stale. Markdown edits do not make a notebook stale.

The check fails for stale notebooks and for notebooks never executed by this tool; `--allow-unexecuted` (or
COGSYNTH_ALLOW_UNEXECUTED=1) tolerates the latter, for a tree whose notebooks have not been refreshed yet.
"""
from __future__ import annotations

import argparse, contextlib, hashlib, json, os, re, shutil, socket, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "cogsynth"                     # notebook-level metadata key (pyproject: [tool.nbdev] allowed_metadata_keys)
REFRESH = "python tools/refresh_notebooks.py"
# Notebooks `--all` leaves out, with the reason (e.g. minutes of compute with nothing a reader needs to see).
SKIP: dict[str, str] = {}
# Order of `--all`: API notebooks, then tutorials, then index (it reads nothing of the others, but last is natural).
MAX_OUTPUT_MB = 8.0

# ---------------------------------------------------------------- finding notebooks

def nbs_path(root: Path = ROOT) -> Path:
    return Path(root)/"nbs"

def all_notebooks(root: Path = ROOT) -> list[Path]:
    "Every notebook nbdev sees under nbs/ (files and folders starting with `_` or `.` skipped), in refresh order."
    base = nbs_path(root)
    found = []
    for p in sorted(base.rglob("*.ipynb")):
        rel = p.relative_to(base)
        if any(part[0] in "_." for part in rel.parts): continue
        found.append(p)
    return sorted(found, key=lambda p: (p.name == "index.ipynb", len(p.relative_to(base).parts), str(p)))

def display_name(path: Path, root: Path = ROOT) -> str:
    "`nbs/tutorials/06_synthetic_digits.ipynb` -> `tutorials/06_synthetic_digits`: what NAME accepts."
    return str(Path(path).resolve().relative_to(nbs_path(root).resolve()).with_suffix(""))

def resolve(name: str, root: Path = ROOT) -> Path:
    "A notebook from a path, a stem or the name after its number; errors list the close names."
    p = Path(name)
    if p.suffix == ".ipynb" and p.exists(): return p.resolve()
    nbs = all_notebooks(root)
    keys = {}
    for nb in nbs:
        d = display_name(nb, root)
        for k in {d, Path(d).name, Path(d).name.split("_", 1)[-1]}: keys.setdefault(k, []).append(nb)
    key = str(Path(name).with_suffix("")) if name.endswith(".ipynb") else name
    key = key[len("nbs/"):] if key.startswith("nbs/") else key
    hits = keys.get(key, [])
    if len(hits) == 1: return hits[0]
    import difflib
    if hits:
        raise SystemExit(f"notebook name {name!r} is ambiguous: {', '.join(display_name(h, root) for h in hits)}; pass one of these")
    close = difflib.get_close_matches(key, list(keys), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise SystemExit(f"no notebook named {name!r} under {nbs_path(root)}{hint}; `{REFRESH} --list` lists them")

# ---------------------------------------------------------------- hashes and status

def _src(cell) -> str:
    s = cell.get("source", "")
    s = "".join(s) if isinstance(s, list) else s
    return s.replace("\r\n", "\n").rstrip()

def code_hash(nb: dict) -> str:
    "sha256 of the sources of every code cell, in order (line endings and trailing blank lines normalised)."
    srcs = [_src(c) for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    return hashlib.sha256(json.dumps(srcs, ensure_ascii=False).encode()).hexdigest()

def read_nb(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))

def output_bytes(nb: dict) -> int:
    "Size of the outputs as they are stored (JSON), images included."
    return sum(len(json.dumps(c.get("outputs", []), ensure_ascii=False)) for c in nb.get("cells", []) if c.get("cell_type") == "code")

def status(path) -> tuple[str, dict]:
    "('fresh' | 'stale' | 'unexecuted', the recorded metadata)."
    nb = read_nb(path)
    rec = (nb.get("metadata", {}).get(KEY) or {}).get("executed")
    if not rec: return "unexecuted", {}
    return ("fresh" if rec.get("code_sha256") == code_hash(nb) else "stale"), rec

# ---------------------------------------------------------------- which cells run

def skipped_cell_ids(path) -> set[str]:
    "Ids of the code cells nbdev-test leaves out (`#| eval: false`, the tst_flags of pyproject), not executed here either."
    from nbdev.config import get_config
    from nbdev.test import nb_test_cells
    nb = read_nb(path)
    try: flags = get_config(path=Path(path).parent).get("tst_flags", "notest").split()
    except Exception: flags = ["notest"]
    run = {c.get("id") for c in nb_test_cells(Path(path), skip_flags=flags)}
    return {c["id"] for c in nb["cells"] if c.get("cell_type") == "code" and c.get("id") not in run}

# ---------------------------------------------------------------- output normalisation

_PROGRESS = re.compile(r"(\d+%\|)|(\|\s*\d+/\d+\s*\[)|(\d+(\.\d+)?(it/s|s/it)\])"
                       r"|TqdmWarning: IProgress not found|from \.autonotebook import tqdm as notebook_tqdm")

def placeholders(root: Path = ROOT) -> list[tuple[str, str]]:
    "(machine string, placeholder), longest first, for the paths and names of the machine that executes."
    import site, sysconfig
    pairs = []
    for sp in {sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"), *site.getsitepackages()}:
        if sp: pairs.append((str(Path(sp)), "<site-packages>"))
    home_c = os.environ.get("COGSYNTH_HOME") or str(Path.home()/".cache"/"cogsynth")
    pairs.append((str(Path(home_c).expanduser()), "$COGSYNTH_HOME"))
    pairs.append((str(Path(sys.prefix)), "<venv>"))
    pairs.append((str(Path(root).resolve()), "<repo>"))
    pairs.append((str(Path(tempfile.gettempdir()).resolve()), "<tmp>"))
    if tempfile.gettempdir() != "/tmp": pairs.append(("/tmp", "<tmp>"))
    home = str(Path.home())
    if home not in ("/", ""): pairs.append((home, "~"))
    host = socket.gethostname()
    if len(host) >= 4: pairs.append((host, "<host>"))
    seen, out = set(), []
    for a, b in sorted(pairs, key=lambda ab: -len(ab[0])):
        if a and a not in seen: seen.add(a); out.append((a, b))
    return out

def _tmp_names(text: str) -> str:
    "`<tmp>/tmpab12cd/x` and `<tmp>/cogsynth-xyz_123/x` -> `<tmp>/x`: temporary folder names differ on every run."
    return re.sub(r"<tmp>/[^/\s'\"]*(tmp|cogsynth|pytest)[^/\s'\"]*", "<tmp>", text)

def normalise_text(text: str, pairs) -> str:
    "Replace each machine string where it is a whole path prefix (not `/tmp` inside `/tmp6x` or `/var/tmp`)."
    for a, b in pairs:
        if a in text: text = re.sub(r"(?<![\w.-])" + re.escape(a) + r"(?![\w.-])", lambda m: b, text)
    return _tmp_names(text)

def strip_progress(text: str) -> str:
    "Drop progress-bar lines: tqdm redraws (`\\r`) keep nothing, lines that look like a bar are removed."
    out = []
    for line in text.split("\n"):
        if "\r" in line:
            line = line.split("\r")[-1]
            if not line.strip(): continue
        if _PROGRESS.search(line): continue
        out.append(line)
    return "\n".join(out)

def _joined(v) -> str: return "".join(v) if isinstance(v, list) else v

def normalise_outputs(outputs: list, pairs) -> list:
    "Outputs without progress bars, widgets and machine paths."
    keep = []
    for o in outputs:
        t = o.get("output_type")
        if t == "stream":
            text = normalise_text(strip_progress(_joined(o.get("text", ""))), pairs)
            if not text.strip(): continue
            o["text"] = text
        elif t in ("display_data", "execute_result"):
            data = o.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data: continue
            imgs = [k for k in ("image/png", "image/jpeg", "image/gif", "image/webp") if k in data]
            for k in imgs[1:]: data.pop(k)                # one raster copy of a figure (PIL shows png and jpeg)
            for k in list(data):
                if k.startswith("text/") or k in ("application/json",):
                    if isinstance(data[k], (str, list)): data[k] = normalise_text(_joined(data[k]), pairs)
        elif t == "error":
            o["traceback"] = [normalise_text(x, pairs) for x in o.get("traceback", [])]
            o["evalue"] = normalise_text(o.get("evalue", ""), pairs)
        keep.append(o)
    return keep

def env_dump_warnings(nb: dict) -> list[str]:
    "Cells whose text outputs look like an environment dump (package versions, platform): worth a second look."
    warns = []
    for i, c in enumerate(nb.get("cells", [])):
        for o in c.get("outputs", []):
            text = _joined(o.get("text", "")) + "".join(_joined(v) for k, v in o.get("data", {}).items() if k.startswith("text/plain"))
            if sum(w in text for w in ("'packages'", '"packages"', "platform", "python_version", "CUDA_VISIBLE", "PATH=")) >= 2:
                warns.append(f"cell {i}: output looks like an environment dump")
    return warns

# ---------------------------------------------------------------- executing one notebook

def parameters_of(path) -> dict:
    "Defaults of the cell tagged `parameters` (papermill's inspect_notebook), as source text."
    import papermill as pm
    try: return {k: v.get("default") for k, v in pm.inspect_notebook(str(path)).items()}
    except Exception: return {}

def kernel_env() -> dict:
    "Kernel environment: inline figures (no MPLBACKEND=Agg), no progress bars or timing logs (COGSYNTH_QUIET), offline, fixed hash seed."
    env = dict(os.environ)
    env.pop("MPLBACKEND", None); env.pop("IN_TEST", None)
    env.update(TQDM_DISABLE="1", COGSYNTH_QUIET="1", PYTHONHASHSEED="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYDEVD_DISABLE_FILE_VALIDATION="1")
    return env

def fresh_home(home=None) -> str:
    "`home`, or a new temporary COGSYNTH_HOME holding a copy of the current home's WordNet (nltk 3.10 refuses symlinks)."
    if home: return str(Path(home).expanduser().resolve())
    current = Path(os.environ.get("COGSYNTH_HOME") or Path.home()/".cache"/"cogsynth").expanduser()
    new = Path(tempfile.mkdtemp(prefix="cogsynth-refresh-home-"))
    if (current/"nltk_data").exists(): shutil.copytree(current/"nltk_data", new/"nltk_data")
    return str(new)

class _env:
    "Set os.environ for the duration (the kernel papermill starts inherits it)."
    def __init__(self, env): self.env = env
    def __enter__(self):
        self.old = dict(os.environ); os.environ.clear(); os.environ.update(self.env)
    def __exit__(self, *a):
        os.environ.clear(); os.environ.update(self.old)

def clean_like_nbdev(nb: dict, path) -> None:
    "nbdev-clean's own cleaning with this project's config, so nbdev-clean afterwards changes nothing."
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    cfg = get_config(path=Path(path).parent)
    clean_nb(nb, cfg.clear_all, cfg.get("allowed_metadata_keys") or [], cfg.get("allowed_cell_metadata_keys") or [],
             cfg.clean_ids, cfg.get("allowed_out_metadata_keys") or [])

def _write_atomic(path: Path, nb: dict) -> None:
    from fastcore.nbio import nb2str
    from cogsynth.core import atomic_write                  # fsynced, and no temp file left when writing fails
    with atomic_write(path, encoding="utf-8") as f: f.write(nb2str(nb))

def execute(path, *, timeout: int | None = None, log_output: bool = False, root: Path = ROOT) -> dict:
    "Execute `path` at its default parameters and write it back with normalised outputs and its freshness record."
    import papermill as pm
    from cogsynth.runner import KERNEL_ARGUMENTS   # quiet kernel start-up, text progress bars without a warning
    path = Path(path).resolve()
    original = read_nb(path)
    skip = skipped_cell_ids(path)
    run_nb = json.loads(json.dumps(original))
    for c in run_nb["cells"]:
        if c.get("cell_type") == "code":
            c["outputs"], c["execution_count"] = [], None
            if c.get("id") in skip: c["source"] = ""            # empty cells are not executed
    env = kernel_env()
    with tempfile.TemporaryDirectory(prefix="cogsynth-refresh-") as tmp:
        src, dst = Path(tmp)/path.name, Path(tmp)/("out-" + path.name)
        src.write_text(json.dumps(run_nb), encoding="utf-8")
        t0 = time.time()
        with _env(env) if dict(os.environ) != env else contextlib.nullcontext():
            pm.execute_notebook(str(src), str(dst), parameters=None, kernel_name="python3", cwd=str(path.parent),
                                progress_bar=False, log_output=log_output, request_save_on_cell_execute=False,
                                execution_timeout=timeout, start_timeout=120, extra_arguments=list(KERNEL_ARGUMENTS))
        seconds = time.time() - t0
        done = read_nb(dst)
    if len(done["cells"]) != len(original["cells"]):
        raise SystemExit(f"{path}: papermill returned {len(done['cells'])} cells for {len(original['cells'])}")
    pairs = placeholders(root)
    nb = original
    for c, d in zip(nb["cells"], done["cells"]):
        if c.get("cell_type") != "code": continue
        c["outputs"] = [] if c.get("id") in skip else normalise_outputs(d.get("outputs", []), pairs)
    clean_like_nbdev(nb, path)
    rec = {"code_sha256": code_hash(nb), "parameters": parameters_of(path), "kernel": "python3",
           "executed_with": "papermill, default parameters, cwd = the notebook's folder",
           "seconds": round(seconds, 1), "output_bytes": output_bytes(nb)}
    nb.setdefault("metadata", {}).setdefault(KEY, {})["executed"] = rec
    _write_atomic(path, nb)
    return {"notebook": str(path), **rec, "warnings": env_dump_warnings(nb)}

# ---------------------------------------------------------------- command line

def check(paths, *, allow_unexecuted=False, max_mb=MAX_OUTPUT_MB, root=ROOT) -> int:
    "Print each notebook's status; 1 if any is stale (or unexecuted, unless allowed) or outputs exceed `max_mb`."
    bad, total, never = [], 0, 0
    for p in paths:
        st, rec = status(p)
        never += st == "unexecuted"
        total += output_bytes(read_nb(p))
        name = display_name(p, root)
        if st == "stale": bad.append(f"{name}: code cells changed since it was executed: run `{REFRESH} {name}`")
        elif st == "unexecuted" and not allow_unexecuted:
            bad.append(f"{name}: never executed by the refresh tool: run `{REFRESH} {name}`")
    print(f"{len(paths)} notebooks: {len(paths) - len(bad)} fine" + (f" ({never} never executed, allowed)" if allow_unexecuted and never else "")
          + f", outputs {total / 2**20:.2f} MB")
    if total > max_mb * 2**20:
        bad.append(f"outputs total {total / 2**20:.2f} MB, over the {max_mb} MB budget: lower figure dpi or output sizes, then `{REFRESH} NAME`")
    for b in bad: print("  " + b, file=sys.stderr)
    if len(bad) > 1: print(f"refresh all stale ones at once: `{REFRESH} --all`", file=sys.stderr)
    return 1 if bad else 0

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 epilog=__doc__[__doc__.index("NAME is"):])
    ap.add_argument("names", nargs="*", metavar="NAME", help="notebooks (path, stem or name after the number)")
    ap.add_argument("--all", action="store_true", help="every notebook under nbs/ (less the tool's SKIP list)")
    ap.add_argument("--check", action="store_true", help="execute nothing; exit 1 naming each stale notebook")
    ap.add_argument("--list", action="store_true", help="print the status of every selected notebook (all if none named)")
    ap.add_argument("--force", action="store_true", help="execute fresh notebooks too")
    ap.add_argument("--allow-unexecuted", action="store_true", default=os.environ.get("COGSYNTH_ALLOW_UNEXECUTED") == "1",
                    help="--check: tolerate notebooks never executed by this tool (default from COGSYNTH_ALLOW_UNEXECUTED=1)")
    ap.add_argument("--max-output-mb", type=float, default=MAX_OUTPUT_MB, help="--check: budget of all outputs together")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (each in its own kernel)")
    ap.add_argument("--verbose", action="store_true", help="stream each cell's output to the terminal (papermill log_output)")
    ap.add_argument("--root", default=str(ROOT), help="repository root (the folder holding nbs/)")
    ap.add_argument("--no-readme", action="store_true", help="do not re-render README.md after executing index or a tutorial")
    ap.add_argument("--home", default=None, help="COGSYNTH_HOME of the kernels (default: a fresh temporary one with a copy of "
                    "WordNet, removed afterwards, so tutorials start from nothing and their outputs repeat)")
    a = ap.parse_args(argv)
    root = Path(a.root).resolve()
    if not (a.check or a.list):
        env = kernel_env(); os.environ.clear(); os.environ.update(env)   # once, for every kernel (--jobs); read before clearing
        os.environ["COGSYNTH_HOME"] = fresh_home(a.home)
        if not a.home:
            import atexit; atexit.register(shutil.rmtree, os.environ["COGSYNTH_HOME"], True)
    if a.all or (a.list and not a.names):
        paths = [p for p in all_notebooks(root) if display_name(p, root) not in SKIP]
    elif a.names:
        paths = [resolve(n, root) for n in a.names]
    else:
        ap.error("name a notebook or pass --all")
    if a.list:
        secs = size = 0
        for p in paths:
            st, rec = status(p)
            b = output_bytes(read_nb(p)); size += b; secs += rec.get("seconds") or 0
            print(f"{st:10s} {display_name(p, root):40s} {rec.get('seconds', ''):>8} s  {b / 1024:8.0f} KiB")
        print(f"{len(paths)} notebooks: outputs {size / 2**20:.2f} MB, executions took {secs:.0f} s in all (as recorded)")
        return 0
    if a.check: return check(paths, allow_unexecuted=a.allow_unexecuted, max_mb=a.max_output_mb, root=root)
    todo = [p for p in paths if a.force or status(p)[0] != "fresh"]
    for p in paths:
        if p not in todo: print(f"fresh, skipped: {display_name(p, root)}")
    t0, failed = time.time(), []
    def one(p):
        print(f"executing {display_name(p, root)} ...", flush=True)
        try:
            r = execute(p, timeout=a.timeout, log_output=a.verbose, root=root)
        except Exception as e:                           # keep going: report every failure at the end
            failed.append(f"{display_name(p, root)}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            print(f"FAILED {display_name(p, root)}", flush=True); return
        print(f"  {display_name(p, root)}: {r['seconds']} s, outputs {r['output_bytes'] / 1024:.0f} KiB", flush=True)
        for w in r["warnings"]: print(f"  warning: {display_name(p, root)} {w}", flush=True)
    with ThreadPoolExecutor(max(1, a.jobs)) as ex: list(ex.map(one, todo))
    print(f"executed {len(todo) - len(failed)} of {len(todo)} notebooks in {time.time() - t0:.0f} s")
    readme_inputs = [p for p in todo if p.name == "index.ipynb" or p.parent.name == "tutorials"]
    if readme_inputs and not a.no_readme and (root/"tools"/"readme.py").exists():
        import subprocess                                # README.md shows index's outputs and the tutorials' key figures
        subprocess.run([sys.executable, str(root/"tools"/"readme.py")], cwd=root, check=False)
    for f in failed: print("  " + f, file=sys.stderr)
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
