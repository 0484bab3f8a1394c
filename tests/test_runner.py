"""`cogsynth run` (the main job): a rerun that skips everything keeps the timings (issue 17.9), the tutorials'
output is streamed to the terminal while they run (issue 18.6), the report hook (issue 18.4)."""
import json
from pathlib import Path

import nbformat

from cogsynth.runner import run_tutorials, write_report_if_available


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
    # a run with another smoke setting reruns the tutorial and does not reuse the old timing
    (tmp_path/"out"/"summary.json").write_text(json.dumps({**json.loads((tmp_path/"out"/"summary.json").read_text()), "seconds": {"toy": -1.0}}))
    third = run_tutorials(tmp_path/"out", smoke=False, folder=tmp_path)
    assert third["seconds"]["toy"] > 0


def test_report_hook(tmp_path, monkeypatch):
    "The HTML report is written when cogsynth.report exists; without it, the main job still ends."
    import sys, types
    calls = []
    fake = types.ModuleType("cogsynth.report")
    fake.write_report = lambda out: calls.append(out) or Path(out)/"index.html"
    monkeypatch.setitem(sys.modules, "cogsynth.report", fake)
    assert write_report_if_available(tmp_path) == tmp_path/"index.html" and calls == [tmp_path]
    monkeypatch.setitem(sys.modules, "cogsynth.report", None)          # as if the module were not installed
    assert write_report_if_available(tmp_path) is None
    def no_renderer(out): raise ModuleNotFoundError("No module named 'nbconvert'", name="nbconvert")
    fake.write_report = no_renderer
    monkeypatch.setitem(sys.modules, "cogsynth.report", fake)          # nbconvert missing, which the report renders with
    assert write_report_if_available(tmp_path) is None
