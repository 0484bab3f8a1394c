"""`cogsynth sweep` (issue 14): typed grids, parallel workers pinned to devices, a failing run, kill and Ctrl-C
with resume, tables, aggregate and plot; tutorials shipped in the wheel. Issue 24.4: a run's identity includes the
notebook's code and every grid value, finished runs are never deleted, quoted commas, a size limit. Issue 27.2/27.4:
devices, grid values (the notebook's `validate` cells) and the metric are checked before any kernel; quiet kernels."""
import csv, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import nbformat
import pytest

import cogsynth.runner as runner
from cogsynth.cli import main
from cogsynth.runs import IdentityChanged
from cogsynth.runner import plan_sweep, sweep, run_folder_name

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from cogsynth.cli import main; sys.exit(main())"]


def tiny_notebook(path, sleep=0.0, factor=10, validate=None, metrics=None):
    """A notebook with a parameters cell: `x` (float), `seed` (int), `tag` (str), `out_dir`, `results_path`. It appends
    "start"/"end" lines to `<sweep folder>/events.txt`, fails for x < 0, sleeps `sleep` s (a number, or an
    expression in the parameters), reports `score = factor * x + seed` (and draws a tqdm.auto bar, which must not warn)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if metrics: nb.metadata["cogsynth"] = {"metrics": metrics}
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1.0    # the swept value\nseed = 0\ntag = 't'\nout_dir = None\nresults_path = None",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import json, os, time\nfrom pathlib import Path\nfrom tqdm.auto import tqdm\nevents = Path(out_dir).parent/'events.txt'\n"
                                  "t_start = time.time()\nwith open(events, 'a') as f: f.write(f'{x},{seed} start\\n')"),
        nbformat.v4.new_code_cell("if x < 0: raise ValueError(f'x={x} must be >= 0')"),
        nbformat.v4.new_code_cell(f"time.sleep({sleep})\nfor _ in tqdm(range(2)): pass"),
        nbformat.v4.new_code_cell(f"json.dump({{'summary': {{'score': {factor} * x + seed, 'tag': tag, 'start': t_start, 'end': time.time(),\n"
                                  "  'cuda_visible': os.environ.get('CUDA_VISIBLE_DEVICES')}}, open(results_path, 'w'))\n"
                                  "with open(events, 'a') as f: f.write(f'{x},{seed} end\\n')"),
    ]
    if validate: nb.cells.insert(1, nbformat.v4.new_code_cell(validate, metadata={"tags": ["validate"]}))
    nbformat.write(nb, path)
    return path


def events(out):
    "The notebook's start/end lines (it writes them beside its run folder: one file per parent folder)."
    return [l for p in sorted(Path(out).rglob("events.txt")) for l in p.read_text().split("\n") if l]


def records(out):
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in Path(out).rglob("run.json")}


def test_grid_2x2_on_two_workers_pinned_to_devices(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "visible_gpus", lambda: 2)                       # the devices are checked before anything runs
    nb = tiny_notebook(tmp_path/"tiny.ipynb", sleep=2.0)
    r = sweep(nb, ["x=1,2", "seed=0,1"], tmp_path/"sw", workers=2, devices="cuda:0,cuda:1", metric="score")
    rows = r["runs"]
    assert [(row["x"], row["seed"], row["status"]) for row in rows] == [(1.0, 0, "done"), (1.0, 1, "done"), (2.0, 0, "done"), (2.0, 1, "done")]
    assert [row["score"] for row in rows] == [10.0, 11.0, 20.0, 21.0]            # values typed: x a float, seed an int
    # two workers: runs overlapped in time; each worker pinned to its GPU
    spans = sorted((row["start"], row["end"]) for row in rows)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans
    assert {row["cuda_visible"] for row in rows} == {"0", "1"}
    # tables: one csv row per run, the mean over seeds in sweep.md, the plot
    with open(tmp_path/"sw"/"sweep.csv") as f: table = list(csv.DictReader(f))
    assert len(table) == 4 and {"x", "seed", "status", "seconds", "score"} <= set(table[0])
    assert r["aggregate"] == [{"x": 1.0, "score_mean": 10.5, "score_std": pytest.approx(0.7071, abs=1e-4), "n": 2},
                              {"x": 2.0, "score_mean": 20.5, "score_std": pytest.approx(0.7071, abs=1e-4), "n": 2}]
    md = (tmp_path/"sw"/"sweep.md").read_text()
    assert "Mean ± std over seeds" in md and "| 20.5" in md
    assert (tmp_path/"sw"/"sweep.png").stat().st_size > 5000
    for row in rows:                        # each run folder: executed notebook, results, log, record
        folder = tmp_path/"sw"/run_folder_name({"x": row["x"], "seed": row["seed"]})
        assert {"tiny.ipynb", "results.json", "run.log", "run.json"} <= {p.name for p in folder.iterdir()}
        log = (folder/"run.log").read_text()
        assert "without encryption" not in log and "IProgress not found" not in log, log   # kernels keep quiet (issue 27.4)


def test_failing_run_records_its_error_and_the_others_go_on(tmp_path, capsys):
    nb = tiny_notebook(tmp_path/"tiny.ipynb")
    rc = main(["sweep", str(nb), "--grid", "x=1,-1,2", "--out", str(tmp_path/"sw"), "--workers", "2"])
    assert rc == 1                                                  # the sweep finished, and says a run failed
    recs = records(tmp_path/"sw")
    assert {k: v["status"] for k, v in recs.items()} == {"x=1.0": "done", "x=-1.0": "failed", "x=2.0": "done"}
    bad = recs["x=-1.0"]
    assert bad["error"] == "ValueError: x=-1.0 must be >= 0"
    assert "raise ValueError" in bad["failing_cell"]["source"] and bad["failing_cell"]["index"] == 3
    assert "1 run(s) failed" in capsys.readouterr().out
    # rerunning the command retries only the failed run
    done_mtime = (tmp_path/"sw"/"x=1.0"/"run.json").stat().st_mtime_ns
    main(["sweep", str(nb), "--grid", "x=1,-1,2", "--out", str(tmp_path/"sw")])
    assert (tmp_path/"sw"/"x=1.0"/"run.json").stat().st_mtime_ns == done_mtime
    assert [e for e in events(tmp_path/"sw") if e.endswith("start")].count("-1.0,0 start") == 2
    # --tables-only runs nothing: a planned run that never ran is "pending"
    n_events = len(events(tmp_path/"sw"))
    r = sweep(nb, ["x=1,-1,2,3"], tmp_path/"sw", tables_only=True)
    assert [row["status"] for row in r["runs"]] == ["done", "failed", "done", "pending"] and r["pending"] == 1
    assert len(events(tmp_path/"sw")) == n_events


def test_every_run_failed_with_a_metric_still_writes_the_tables(tmp_path, capsys):
    "--metric waits for a finished run: the tables list the failures and the sweep says they failed (exit 1, not 2)."
    nb = tiny_notebook(tmp_path/"tiny.ipynb")
    rc = main(["sweep", str(nb), "--grid", "x=-1,-2", "--out", str(tmp_path/"sw"), "--workers", "2", "--metric", "score"])
    out = capsys.readouterr().out
    assert rc == 1 and "2 run(s) failed" in out
    with open(tmp_path/"sw"/"sweep.csv") as f: table = list(csv.DictReader(f))
    assert [(r["x"], r["status"]) for r in table] == [("-1.0", "failed"), ("-2.0", "failed")]
    md = (tmp_path/"sw"/"sweep.md").read_text()
    assert "x=-1.0 must be >= 0" in md and "x=-2.0 must be >= 0" in md
    assert not (tmp_path/"sw"/"sweep.png").exists()


@pytest.mark.parametrize("grid, message", [
    ("xx=1,2", "--grid='xx' is not one of: x, seed, tag (did you mean 'x'?)"),
    ("seed=0,one", "--grid seed='one': the notebook's seed is a int (default 0)"),
    ("x=1,abc", "--grid x='abc': the notebook's x is a float"),
])
def test_bad_name_or_value_fails_before_anything_runs(tmp_path, capsys, grid, message):
    nb = tiny_notebook(tmp_path/"tiny.ipynb")
    rc = main(["sweep", str(nb), "--grid", grid, "--out", str(tmp_path/"sw")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path/"sw").exists()                              # nothing ran, not even a folder


def _start_cli(nb, out, *grid, workers=1):
    args = [*CLI, "sweep", str(nb), *[a for g in grid for a in ("--grid", g)], "--out", str(out), "--workers", str(workers)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COGSYNTH_QUIET": "1"})


def _wait_for(cond, timeout=120):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout: raise AssertionError("timed out")
        time.sleep(0.2)


def test_killed_sweep_resumes_finished_runs_are_not_rerun(tmp_path):
    nb = tiny_notebook(tmp_path/"tiny.ipynb", sleep=3.0)
    out = tmp_path/"sw"
    p = _start_cli(nb, out, "x=1,2,3")
    _wait_for(lambda: len(records(out)) >= 1 and any(e == "2.0,0 start" for e in events(out)))
    p.kill(); p.wait()                                             # kill -9 while run x=2 is midway
    time.sleep(4)                                                  # its child notices the dead parent and stops
    assert set(records(out)) == {"x=1.0"}                          # the killed run left no record
    r = sweep(nb, ["x=1,2,3"], out)
    assert [row["status"] for row in r["runs"]] == ["done"] * 3
    ev = events(out)
    assert ev.count("1.0,0 start") == 1                            # finished before the kill: never rerun
    assert ev.count("2.0,0 start") == 2 and ev.count("2.0,0 end") == 1   # killed midway: rerun
    assert ev.count("3.0,0 start") == 1


def test_ctrl_c_then_restart_runs_every_run_exactly_once(tmp_path):
    # seed 0 runs take 1 s, seed 1 runs 9 s: the Ctrl-C lands while x=1/seed=1 is mid-sleep, never in the
    # instant between a run's last cell and its record (a run caught there reruns, which is correct but not this test)
    nb = tiny_notebook(tmp_path/"tiny.ipynb", sleep="1 + 8 * seed")
    out = tmp_path/"sw"
    grid = ("x=1,2", "seed=0,1")
    p = _start_cli(nb, out, *grid, workers=2)
    _wait_for(lambda: len(records(out)) >= 1)
    p.send_signal(signal.SIGINT)                                   # Ctrl-C
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "rerun the same command" in err
    recs = records(out)
    assert "x=1.0/seed=0" in recs and "x=1.0/seed=1" not in recs and len(recs) < 4, sorted(recs)
    assert events(out).count("1.0,1 start") == 1 and "1.0,1 end" not in events(out)   # interrupted midway
    p = _start_cli(nb, out, *grid, workers=2)
    stdout, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    assert {k: v["status"] for k, v in records(out).items()} == {f"x={x}/seed={s}": "done" for x in ("1.0", "2.0") for s in (0, 1)}
    ends = [e for e in events(out) if e.endswith(" end")]
    assert sorted(ends) == sorted(f"{x},{s} end" for x in ("1.0", "2.0") for s in (0, 1))   # every run exactly once


def test_sweep_help_explains_the_grid(capsys):
    with pytest.raises(SystemExit): main(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "--grid NAME=V1,V2,..." in out and "cartesian product" in out
    assert "cogsynth sweep synthetic_digits --grid guidance=1,2,3,5,7.5,random --grid seed=0,1,2" in out


def test_wheel_ships_the_tutorials(tmp_path):
    "Build the wheel offline from a copy of the sources, install it into a folder, list the tutorials from there."
    src = tmp_path/"src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"): shutil.copy(ROOT/f, src/f)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    shutil.copytree(ROOT/"cogsynth", src/"cogsynth", ignore=ignore)
    shutil.copytree(ROOT/"data_manifests", src/"data_manifests", ignore=ignore)
    shutil.copytree(ROOT/"nbs"/"tutorials", src/"nbs"/"tutorials", ignore=ignore)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path/"dist"), str(src)],
                   check=True, env=env, cwd=tmp_path, capture_output=True)
    wheel = next((tmp_path/"dist").glob("cogsynth-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(tmp_path/"site"), str(wheel)],
                   check=True, env=env, cwd=tmp_path, capture_output=True)
    code = ("import cogsynth, json; from cogsynth.runner import list_tutorials, tutorial_name, resolve_notebook\n"
            "print(json.dumps([cogsynth.__file__, [tutorial_name(p) for p in list_tutorials()], str(resolve_notebook('synthetic_digits'))]))")
    res = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(tmp_path/"site")}, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    where, names, digits = json.loads(res.stdout.strip().splitlines()[-1])
    site = str((tmp_path/"site").resolve())
    assert where.startswith(site), where                           # the installed copy, not this checkout
    from cogsynth.runner import list_tutorials, tutorial_name
    assert names == [tutorial_name(p) for p in list_tutorials(ROOT/"nbs"/"tutorials")]
    assert digits.startswith(site) and digits.endswith("06_synthetic_digits.ipynb")


def test_one_sweep_at_a_time_in_a_folder(tmp_path):
    "A second sweep into a folder that a running sweep holds is refused (it would start the same runs)."
    from cogsynth.core import CogsynthError
    from cogsynth.runs import folder_lock
    nb = tiny_notebook(tmp_path/"tiny.ipynb")
    (tmp_path/"sw").mkdir()
    with folder_lock(tmp_path/"sw"):
        with pytest.raises(CogsynthError, match="still locked"): sweep(nb, ["x=1"], tmp_path/"sw")
    with pytest.raises(CogsynthError, match="--smoke: tiny.ipynb has no smoke parameter"): sweep(nb, ["x=1"], tmp_path/"sw", smoke=True)
    assert not list((tmp_path/"sw").rglob("run.json"))


def test_edited_notebook_or_changed_fixed_axis_never_reuses_nor_deletes(tmp_path, capsys):
    "Issue 24.4: a changed fixed axis is refused (naming it) or extends the sweep; an edited notebook's old results are not reused."
    nb, out = tiny_notebook(tmp_path/"tiny.ipynb"), tmp_path/"sw"
    r = sweep(nb, ["x=1", "seed=0", 'tag="a,b"'], out)
    assert [(row["score"], row["tag"]) for row in r["runs"]] == [(10.0, "a,b")]      # the quoted comma reached the notebook, unquoted
    done = out/"x=1.0"/"results.json"
    before = done.read_text()
    rc = main(["sweep", str(nb), "--grid", "x=1", "--grid", "seed=5", "--grid", 'tag="a,b"', "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "x=1.0 holds a finished run of other settings: grid.seed=0 -> 5." in err and "--on-change='extend'" in err, err
    assert done.read_text() == before                                           # refused: nothing deleted, nothing ran
    r = sweep(nb, ["x=1", "seed=5", 'tag="a,b"'], out, on_change="extend")       # kept, and the new run beside it
    assert [row["score"] for row in r["runs"]] == [15.0] and (out/"seed=5"/"x=1.0"/"results.json").exists()
    assert done.read_text() == before
    tiny_notebook(nb, factor=1000)                                              # the notebook's code changes
    with pytest.raises(IdentityChanged, match=r"notebook='.*' -> '.*'\. These cannot change in one folder"):
        sweep(nb, ["x=1", "seed=0", 'tag="a,b"'], out)
    r = sweep(nb, ["x=1", "seed=0", 'tag="a,b"'], out, on_change="replace")
    assert [row["score"] for row in r["runs"]] == [1000.0]                      # the new notebook's number, not 10
    assert json.loads((out/"x=1.0.replaced-1"/"results.json").read_text())["summary"]["score"] == 10.0   # set aside, never deleted


def test_huge_grid_is_refused_before_any_folder(tmp_path, capsys):
    nb = tiny_notebook(tmp_path/"tiny.ipynb")
    grid = ["x=" + ",".join(map(str, range(10))), "seed=" + ",".join(map(str, range(10))), "tag=" + ",".join("abcdefghij")]
    assert main(["sweep", str(nb), *[a for g in grid for a in ("--grid", g)], "--out", str(tmp_path/"sw")]) == 2
    assert "the grid makes 1000 runs (10 x 10 x 10), more than --max-runs=100: pass --max-runs=1000 to confirm" in capsys.readouterr().err
    assert not (tmp_path/"sw").exists()
    assert len(plan_sweep(nb, grid, tmp_path/"sw", max_runs=1000)["jobs"]) == 1000 and not (tmp_path/"sw").exists()   # confirmed


def test_bad_values_and_devices_fail_before_any_kernel(tmp_path, capsys, monkeypatch):
    "Issue 27.2: a value the notebook's validate cell refuses, and --devices cuda:0 without a GPU: no folder, no kernel."
    monkeypatch.setattr(runner, "visible_gpus", lambda: 0)
    nb = tiny_notebook(tmp_path/"tiny.ipynb", validate="if x > 100: raise ValueError(f'x={x}: give at most 100')")
    for args, message in [(["--grid", "x=1,1000"], "run x=1000.0, seed=0: ValueError: x=1000.0: give at most 100 (checked by the cell tagged "
                                                   "'validate' in tiny.ipynb; nothing ran)"),
                          (["--grid", "x=1", "--devices", "cuda:0"], "--devices='cuda:0', but no CUDA GPU is visible on this machine: use --devices='cpu'")]:
        assert main(["sweep", str(nb), *args, "--grid", "seed=0", "--out", str(tmp_path/"sw")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path/"sw").exists()


def test_metric_is_checked_before_the_runs_or_at_the_first(tmp_path, capsys):
    "Issue 27.2: declared metrics and finished runs check --metric before any kernel; otherwise the first finished run stops the sweep."
    declared = tiny_notebook(tmp_path/"declared.ipynb", metrics=["score", "start", "end"])
    assert main(["sweep", str(declared), "--grid", "x=1,2", "--out", str(tmp_path/"a"), "--metric", "best_synth_acc"]) == 2
    assert "--metric='best_synth_acc' is not one of: score, start, end" in capsys.readouterr().err and not (tmp_path/"a").exists()
    nb = tiny_notebook(tmp_path/"tiny.ipynb")                                   # declares nothing, and nothing finished yet
    assert main(["sweep", str(nb), "--grid", "x=1,2,3", "--out", str(tmp_path/"b"), "--metric", "best_synth_acc"]) == 2
    err = capsys.readouterr().err
    assert "--metric='best_synth_acc' is not one of: score" in err and "the sweep stopped after its first finished run" in err, err
    assert [e for e in events(tmp_path/"b") if e.endswith(" start")] == ["1.0,0 start"]   # not after every run: after the first
    assert main(["sweep", str(nb), "--grid", "x=1,2,3", "--out", str(tmp_path/"b"), "--metric", "best_synth_acc"]) == 2
    assert "--metric='best_synth_acc' is not one of: score" in capsys.readouterr().err
    assert len(events(tmp_path/"b")) == 2                                       # known from the finished run: no kernel started
