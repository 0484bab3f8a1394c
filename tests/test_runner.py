"""`cogsynth run` (the main job): a rerun reuses results only of the same notebook code and settings (issue 22.1,
24.4), a failing tutorial is named with its cell and log and the others are still summarized (issue 24.6), bad
settings fail before any kernel starts and kernels keep quiet (issue 27.2, 27.4), timings kept across reruns
(issue 17.9), output streamed while tutorials run (issue 18.6), the report hook (issue 18.4)."""
import json, warnings
from pathlib import Path

import nbformat
import pytest

import cogsynth.runner as runner
from cogsynth.cli import build_parser, main
from cogsynth.runs import IdentityChanged
from cogsynth.runner import finished_results, run_tutorials, write_report_if_available, write_summary


def toy_tutorial(folder, name="01_toy.ipynb", body=None, validate=None):
    "A tutorial: parameters, a cell that prints and draws tqdm.auto bars (`body` replaces it), its results JSON."
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('smoke = False\ndevice = "auto"\nout_dir = None\nresults_path = None', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body or 'import json, sys, time\nfrom tqdm.auto import tqdm\nprint("stage 1: training the generator", flush=True)\n'
                                          'for i in tqdm(range(3)): time.sleep(0.1)'),
                nbformat.v4.new_code_cell('import json\njson.dump({"smoke": smoke, "summary": {"toy_top1": 0.5}, "table": [{"data": "toy", "top1": 0.5}]},'
                                          ' open(results_path, "w"))')]
    if validate: nb.cells.insert(1, nbformat.v4.new_code_cell(validate, metadata={"tags": ["validate"]}))
    nbformat.write(nb, Path(folder)/name)
    return Path(folder)/name


def test_rerun_reuses_only_results_of_the_same_notebook_and_settings(tmp_path, capfd):
    "Reused with the same code and settings (timings kept); an edited notebook or another smoke flag is refused, results kept."
    nb = toy_tutorial(tmp_path)
    first = run_tutorials(tmp_path/"out", smoke=True, folder=tmp_path)
    assert set(first["seconds"]) == {"toy"} and first["seconds"]["toy"] > 0
    out, err = capfd.readouterr()
    assert "[toy +" in err and "stage 1: training the generator" in err          # streamed while it ran
    assert "stage 1: training the generator" in (tmp_path/"out"/"toy"/"run.log").read_text()   # and logged
    for noise in ("without encryption", "IProgress not found"):                  # silenced at the kernel (issue 27.4)
        assert noise not in out + err, noise
    executed = tmp_path/"out"/"toy"/"01_toy.ipynb"
    mtime = executed.stat().st_mtime_ns
    second = run_tutorials(tmp_path/"out", smoke=True, folder=tmp_path)          # same notebook, same settings: reused
    assert executed.stat().st_mtime_ns == mtime and second["seconds"] == first["seconds"]
    assert json.loads((tmp_path/"out"/"summary.json").read_text())["seconds"] == first["seconds"]
    with pytest.raises(IdentityChanged, match=r"holds results of other settings: settings.smoke=True -> False"):
        run_tutorials(tmp_path/"out", smoke=False, folder=tmp_path)
    assert main(["run", "--out", str(tmp_path/"out"), "--tutorials", str(tmp_path)]) == 2      # the same, from the command line
    err = capfd.readouterr().err
    assert "holds results of other settings: settings.smoke=True -> False. Use another output folder, or the same settings, or pass --on-change='replace'" in err, err
    toy_tutorial(tmp_path, body='print("the edited notebook")')                   # the notebook's code changes
    with pytest.raises(IdentityChanged, match=r"notebook='.*' -> '.*'.*on_change='replace'"):
        run_tutorials(tmp_path/"out", smoke=True, folder=tmp_path)
    assert executed.stat().st_mtime_ns == mtime                                  # refused: nothing ran, nothing moved
    assert finished_results(tmp_path/"out", nb, smoke=True, on_change="replace") is None   # set aside, never deleted
    assert (tmp_path/"out"/"toy.replaced-1"/"results.json").exists()
    run_tutorials(tmp_path/"out", smoke=True, folder=tmp_path)                   # runs the edited notebook
    assert "the edited notebook" in (tmp_path/"out"/"toy"/"run.log").read_text()
    with pytest.warns(FutureWarning, match="force=True is deprecated.*on_change='recompute'"):   # the old switch: recompute
        assert finished_results(tmp_path/"out", nb, smoke=True, force=True) is None
    assert build_parser("run").parse_args(["run", "--force"]).on_change == "recompute"


def test_results_from_before_run_records_are_refused_not_reused(tmp_path):
    toy_tutorial(tmp_path)
    (tmp_path/"out"/"toy").mkdir(parents=True)
    (tmp_path/"out"/"toy"/"results.json").write_text(json.dumps({"smoke": True, "summary": {"toy_top1": 0.1}}))
    with pytest.raises(IdentityChanged, match="notebook='unrecorded' -> "):
        finished_results(tmp_path/"out", tmp_path/"01_toy.ipynb", smoke=True)
    assert (tmp_path/"out"/"toy"/"results.json").exists()


def test_failing_tutorial_is_named_and_the_others_are_summarized(tmp_path, capsys, monkeypatch):
    "Issue 24.6: no raw traceback; the tutorial, its failing cell and its log are named; summary and report still written; exit 1."
    import sys, types
    reports = []
    fake = types.ModuleType("cogsynth.report")
    fake.write_report = lambda out: reports.append(out) or Path(out)/"index.html"
    monkeypatch.setitem(sys.modules, "cogsynth.report", fake)
    toy_tutorial(tmp_path, "01_bad.ipynb", body='x = 1\nraise ValueError("boom")')
    toy_tutorial(tmp_path, "02_last.ipynb")
    rc = main(["run", "--out", str(tmp_path/"out"), "--tutorials", str(tmp_path), "--smoke", "--quiet-notebooks"])
    out, err = capsys.readouterr()
    assert rc == 1
    log = tmp_path/"out"/"bad"/"run.log"
    assert f"cogsynth run: error: tutorial 'bad' failed in cell 2 (`x = 1`): ValueError: boom; its log: {log}" in err, err
    assert "Traceback" not in err
    summary = json.loads((tmp_path/"out"/"summary.json").read_text())
    assert summary["tutorials"] == ["last"] and summary["failed"]["bad"]["error"] == "ValueError: boom"   # the next one still ran
    md = (tmp_path/"out"/"summary.md").read_text()
    assert "## last" in md and "**Failed**: ValueError: boom" in md and "## last" in out
    assert reports == [(tmp_path/"out").resolve()]                               # the report, for the tutorials that ran
    assert json.loads((tmp_path/"out"/"bad"/"run.json").read_text())["status"] == "failed"


def test_bad_settings_fail_before_any_kernel_starts(tmp_path, capsys, monkeypatch):
    "Issue 27.2: --device cuda without a GPU, --device gpu, and a tutorial's own validate cell: refused at once, nothing ran."
    monkeypatch.setattr(runner, "visible_gpus", lambda: 0)
    toy_tutorial(tmp_path, "01_toy.ipynb")
    toy_tutorial(tmp_path, "02_picky.ipynb", validate='if device == "cpu": raise ValueError("picky needs a GPU: use device=\'cuda\'")')
    args = ["run", "--out", str(tmp_path/"out"), "--tutorials", str(tmp_path), "--smoke"]
    for device, message in [("cuda", "--device='cuda', but no CUDA GPU is visible on this machine: use --device='cpu' or 'auto'"),
                            ("gpu", "--device='gpu' is not a device: use auto, cpu, mps, cuda or cuda:N"),
                            ("cpu", "tutorial 'picky': ValueError: picky needs a GPU: use --device='cuda' (checked by the cell tagged 'validate' in 02_picky.ipynb; nothing ran)")]:
        assert main([*args, "--device", device]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path/"out").exists()                                    # nothing created, no tutorial started


def test_summary_keeps_timings_of_the_same_smoke_setting_only(tmp_path):
    "A timing from a run with another smoke setting is not reused for results that a run with this setting reused."
    (tmp_path/"summary.json").write_text(json.dumps({"smoke": True, "seconds": {"toy": -1.0}}))
    results = {"toy": {"smoke": False, "summary": {"toy_top1": 0.9}}}
    assert "toy" not in write_summary(tmp_path, results, {}, smoke=False, device="cpu")["seconds"]
    (tmp_path/"summary.json").write_text(json.dumps({"smoke": True, "seconds": {"toy": -1.0}}))
    assert write_summary(tmp_path, results, {}, smoke=True, device="cpu")["seconds"] == {"toy": -1.0}


def test_report_hook(tmp_path, monkeypatch, caplog):
    "The HTML report is written; without nbconvert, or with a page that would load from the network, the main job still ends."
    import sys, types
    calls = []
    fake = types.ModuleType("cogsynth.report")
    fake.write_report = lambda out: calls.append(out) or Path(out)/"index.html"
    monkeypatch.setitem(sys.modules, "cogsynth.report", fake)
    assert write_report_if_available(tmp_path) == tmp_path/"index.html" and calls == [tmp_path]
    def no_renderer(out): raise ModuleNotFoundError("No module named 'nbconvert'", name="nbconvert")
    fake.write_report = no_renderer
    monkeypatch.setitem(sys.modules, "cogsynth.report", fake)          # nbconvert missing, which the report renders with
    assert write_report_if_available(tmp_path) is None
    def other_missing(out): raise ModuleNotFoundError("No module named 'jinja3'", name="jinja3")
    fake.write_report = other_missing                                  # any other missing module is a bug: raised ...
    with pytest.raises(ModuleNotFoundError): write_report_if_available(tmp_path)
    with caplog.at_level("WARNING"): assert write_report_if_available(tmp_path, best_effort=True) is None   # ... unless best effort
    assert "No module named 'jinja3'" in caplog.text
    monkeypatch.delitem(sys.modules, "cogsynth.report")                # the real report, on a page with a remote image
    (tmp_path/"toy").mkdir()
    md = nbformat.v4.new_markdown_cell("# Toy\n\n![logo](https://example.org/logo.png)")
    nbformat.write(nbformat.v4.new_notebook(cells=[md]), tmp_path/"toy"/"01_toy.ipynb")
    with caplog.at_level("WARNING"): assert write_report_if_available(tmp_path) is None
    assert "no HTML report" in caplog.text and "example.org/logo.png" in caplog.text
