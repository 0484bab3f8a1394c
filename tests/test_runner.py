"""`cogsynth run` (the main job): a rerun that skips everything keeps the timings (issue 17.9), the tutorials'
output is streamed to the terminal while they run (issue 18.6), the report hook (issue 18.4)."""
import json
from pathlib import Path

import nbformat
import pytest

from cogsynth.runner import run_tutorials, write_report_if_available, write_summary


def toy_tutorial(folder):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('smoke = False\ndevice = "auto"\nout_dir = None\nresults_path = None', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('import json, sys, time\nprint("stage 1: training the generator", flush=True)\n'
                                          'for i in range(3): print(f"\\rstep {i}", end="", file=sys.stderr)\ntime.sleep(0.5)'),
                nbformat.v4.new_code_cell('json.dump({"smoke": smoke, "summary": {"toy_top1": 0.5}, "table": [{"data": "toy", "top1": 0.5}]},'
                                          ' open(results_path, "w"))')]
    nbformat.write(nb, Path(folder)/"01_toy.ipynb")


def test_second_run_that_skips_everything_keeps_the_timings(tmp_path, capfd):
    toy_tutorial(tmp_path)
    first = run_tutorials(tmp_path/"out", smoke=True, folder=tmp_path)
    assert set(first["seconds"]) == {"toy"} and first["seconds"]["toy"] > 0
    err = capfd.readouterr().err
    assert "[toy +" in err and "stage 1: training the generator" in err          # streamed while it ran
    executed = tmp_path/"out"/"toy"/"01_toy.ipynb"
    mtime = executed.stat().st_mtime_ns
    second = run_tutorials(tmp_path/"out", smoke=True, folder=tmp_path)          # skips: results exist
    assert executed.stat().st_mtime_ns == mtime                                  # not executed again
    assert second["seconds"] == first["seconds"]
    assert json.loads((tmp_path/"out"/"summary.json").read_text())["seconds"] == first["seconds"]


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
    fake.write_report = other_missing                                  # any other missing module is a bug: raised
    with pytest.raises(ModuleNotFoundError): write_report_if_available(tmp_path)
    monkeypatch.delitem(sys.modules, "cogsynth.report")                # the real report, on a page with a remote image
    (tmp_path/"toy").mkdir()
    md = nbformat.v4.new_markdown_cell("# Toy\n\n![logo](https://example.org/logo.png)")
    nbformat.write(nbformat.v4.new_notebook(cells=[md]), tmp_path/"toy"/"01_toy.ipynb")
    with caplog.at_level("WARNING"): assert write_report_if_available(tmp_path) is None
    assert "no HTML report" in caplog.text and "example.org/logo.png" in caplog.text
