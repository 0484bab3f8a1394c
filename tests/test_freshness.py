"""tools/refresh_notebooks.py: executed notebooks record a hash of their code; clean and freshness agree (issue 18.2)."""
import json, os, subprocess, sys, tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/"tools"))
import refresh_notebooks as rn  # noqa: E402


def _project(tmp_path, cells):
    "A tiny nbdev project with this repository's [tool.nbdev] settings and one notebook nbs/01_demo.ipynb."
    cfg = tomllib.loads((ROOT/"pyproject.toml").read_text())["tool"]["nbdev"]
    cfg["allowed_metadata_keys"] = sorted({*(cfg.get("allowed_metadata_keys") or []), rn.KEY})  # see the test below
    lines = ["[project]", 'name = "demo"', 'version = "0.0.1"', "", "[tool.nbdev]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
    (tmp_path/"pyproject.toml").write_text("\n".join(lines) + "\n")
    (tmp_path/"nbs").mkdir()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "python3", "language": "python", "name": "python3"}
    path = tmp_path/"nbs"/"01_demo.ipynb"
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).parent/"nbdev-clean"), "--fname", str(path)], cwd=tmp_path, check=True)
    return path


def _cells():
    code, md = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell
    return [md("# Demo"),
            code('n = 3  # how many', metadata={"tags": ["parameters"]}),
            code('import sys, os, tempfile\n'
                 'print(os.getcwd())\n'
                 'print(os.path.join(tempfile.mkdtemp(prefix="cogsynth-x"), "a.json"))\n'
                 'sys.stderr.write("  0%|          | 0/3 [00:00<?, ?it/s]\\r100%|##########| 3/3 [00:00<00:00, 9.1it/s]\\n")\n'
                 'sys.stderr.write("a real warning\\n")'),
            code("n * 2"),
            code("#| eval: false\nraise RuntimeError('never run')"),
            code("#| slow\nraise RuntimeError('slow cells are not run either')")]


def test_code_hash_follows_code_only():
    nb = {"cells": [{"cell_type": "code", "source": "a = 1\n", "outputs": []}, {"cell_type": "markdown", "source": "x"}]}
    h = rn.code_hash(nb)
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1"}]
    nb["cells"][1]["source"] = "prose edited"
    nb["cells"][0]["source"] = ["a = 1\r\n"]                     # list form and CRLF: the same code
    assert rn.code_hash(nb) == h
    nb["cells"][0]["source"] = "a = 2"
    assert rn.code_hash(nb) != h


def test_normalise_outputs():
    pairs = [("/work/repo", "<repo>"), ("/tmp", "<tmp>"), ("/home/u", "~")]
    outs = [{"output_type": "stream", "name": "stderr", "text": " 10%|#  | 1/10 [00:00<00:01, 9.0it/s]\r100%|###| 10/10 [00:01<00:00, 9.1it/s]\n"},
            {"output_type": "stream", "name": "stdout", "text": ["/work/repo/nbs/x.png\n", "/tmp/tmpab12/y /var/tmp/z /tmp9\n"]},
            {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {}, "text/plain": "HBox"}, "metadata": {}},
            {"output_type": "execute_result", "data": {"text/plain": "'/home/u/.cache'"}, "metadata": {}, "execution_count": 3}]
    got = rn.normalise_outputs(outs, pairs)
    assert [o["output_type"] for o in got] == ["stream", "execute_result"]    # progress bar and widget gone
    assert got[0]["text"] == "<repo>/nbs/x.png\n<tmp>/y /var/tmp/z /tmp9\n"
    assert got[1]["data"]["text/plain"] == "'~/.cache'"


def test_project_config_keeps_the_record():
    "nbdev-clean strips notebook metadata keys it is not told to keep: pyproject must list the record's key."
    cfg = tomllib.loads((ROOT/"pyproject.toml").read_text())["tool"]["nbdev"]
    assert rn.KEY in (cfg.get("allowed_metadata_keys") or []), \
        f'add allowed_metadata_keys = ["{rn.KEY}"] to [tool.nbdev] in pyproject.toml, or nbdev-clean drops the freshness record'
    assert "tags" in (cfg.get("allowed_cell_metadata_keys") or []), "papermill's `parameters` tag must survive nbdev-clean"


def test_execute_clean_and_check_agree(tmp_path, capsys):
    path = _project(tmp_path, _cells())
    assert rn.status(path)[0] == "unexecuted"
    assert rn.check([path], root=tmp_path) == 1
    assert f"run `{rn.REFRESH} 01_demo`" in capsys.readouterr().err
    assert rn.check([path], allow_unexecuted=True, root=tmp_path) == 0

    rec = rn.execute(path, timeout=120, root=tmp_path)
    assert rec["parameters"] == {"n": "3"}
    nb = json.loads(path.read_text())
    outs = [c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"]
    text = "".join("".join(o.get("text", "")) for o in outs[1])
    assert "<repo>/nbs\n" in text and "<tmp>/a.json" in text and "a real warning" in text
    assert "it/s" not in text and str(tmp_path) not in json.dumps(nb)
    assert outs[2][0]["data"]["text/plain"] in ("6", ["6"])
    assert outs[3] == [] and outs[4] == []                       # eval: false and the slow flag: not executed
    assert all(c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code")
    before = path.read_text()
    subprocess.run([str(Path(sys.executable).parent/"nbdev-clean"), "--fname", str(path)], cwd=tmp_path, check=True)
    assert path.read_text() == before, "nbdev-clean changed a notebook the refresh tool wrote"
    assert rn.status(path)[0] == "fresh"
    assert rn.check([path], root=tmp_path) == 0
    assert rn.check([path], max_mb=0.0, root=tmp_path) == 1                  # a fresh notebook over the size budget
    assert "over the 0.0 MB budget" in capsys.readouterr().err

    assert subprocess.run([sys.executable, str(ROOT/"tools"/"refresh_notebooks.py"), "--root", str(tmp_path), "demo"],
                          capture_output=True, text=True).stdout.startswith("fresh, skipped: 01_demo")

    nb["cells"][3]["source"] = "n * 3"                           # edited, not re-executed
    path.write_text(json.dumps(nb))
    assert rn.status(path)[0] == "stale"
    assert rn.check([path], root=tmp_path) == 1
    assert f"code cells changed since it was executed: run `{rn.REFRESH} 01_demo`" in capsys.readouterr().err


def test_resolve_names(tmp_path):
    path = _project(tmp_path, _cells()[:2])
    for name in ("01_demo", "demo", "01_demo.ipynb", "nbs/01_demo.ipynb", str(path)):
        assert rn.resolve(name, tmp_path) == path.resolve()
    with pytest.raises(SystemExit, match=r"no notebook named 'dmeo'.*did you mean 'demo'"):
        rn.resolve("dmeo", tmp_path)


def test_readme_renders_outputs_and_key_figures(tmp_path, monkeypatch):
    "tools/readme.py: the tour's outputs under their code, hidden cells left out, the tutorials' key figures as files."
    import base64, readme
    v4 = nbformat.v4
    png = lambda b: base64.b64encode(b"\x89PNG\r\n\x1a\n" + b).decode()
    (tmp_path/"nbs"/"tutorials").mkdir(parents=True)
    nbformat.write(v4.new_notebook(cells=[
        v4.new_markdown_cell("# cogsynth\n> tagline"),
        v4.new_code_cell("#| hide\nsecret = 1", outputs=[v4.new_output("stream", name="stdout", text="hidden output\n")]),
        v4.new_code_cell("1 + 1", outputs=[v4.new_output("execute_result", {"text/plain": "2"}, execution_count=None)]),
        v4.new_code_cell("#| echo: false\nshow()", outputs=[v4.new_output("display_data", {"text/markdown": "| a |\n|---|\n| 1 |"})]),
        v4.new_markdown_cell(readme.MARKER)]), tmp_path/"nbs"/"index.ipynb")
    nbformat.write(v4.new_notebook(cells=[
        v4.new_markdown_cell("# Synthetic digits"),
        v4.new_code_cell("a()", outputs=[v4.new_output("display_data", {"image/png": png(b"first")})]),
        v4.new_code_cell("b()", outputs=[v4.new_output("display_data", {"image/png": png(b"key")})], metadata={"tags": ["key-figure"]}),
        v4.new_code_cell("c()", outputs=[v4.new_output("display_data", {"image/png": png(b"last")})])]),
        tmp_path/"nbs"/"tutorials"/"06_synthetic_digits.ipynb")
    monkeypatch.setattr(readme, "root", tmp_path)
    text, files = readme.render()
    assert "```python\n1 + 1\n```" in text and "\n    2\n" in text and "| a |" in text
    assert "secret" not in text and "hidden output" not in text and "show()" not in text
    assert "## Results" in text and "![Synthetic digits](README_files/06_synthetic_digits.png)" in text
    assert files["06_synthetic_digits.png"].endswith(b"key")                    # the tagged figure, not the last one
    assert readme.differences(text, files) == ["README.md", "README_files/06_synthetic_digits.png"]
