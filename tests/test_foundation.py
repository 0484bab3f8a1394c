"""The package installs, imports light, and its stack imports together."""
import json, os, subprocess, sys

from pathlib import Path

import pytest

COGSYNTH = str(Path(sys.executable).parent/"cogsynth")

ROOT = Path(__file__).resolve().parent.parent

def _py(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)

def test_import_is_light():
    r = _py("import time,sys; t=time.perf_counter(); import cogsynth; dt=time.perf_counter()-t;"
            "import json; print(json.dumps([dt, cogsynth.__version__, [m for m in ('torch','diffusers','timm','nltk') if m in sys.modules]]))")
    dt, version, heavy = json.loads(r.stdout)
    assert heavy == [] and dt < 1.0 and version

def test_stack_imports_together():
    r = _py("import torch, torchvision, timm, diffusers; from transformers import CLIPTextModel, CLIPTokenizer;"
            "from diffusers import StableDiffusionPipeline; print(torch.__version__, torchvision.__version__)")
    assert r.returncode == 0, r.stderr[-2000:]
    torch_v = r.stdout.split()[0]
    assert tuple(int(x) for x in torch_v.split('.')[:2]) >= (2, 14)

def test_cli_help_and_version():
    r = subprocess.run([COGSYNTH, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "setup-wordnet" in r.stdout and "levels" in r.stdout
    r = subprocess.run([COGSYNTH, "--version"], capture_output=True, text=True)
    assert r.stdout.startswith("cogsynth ")

def test_setup_wordnet_offline(tmp_path):
    "A machine without NLTK data: the check fails clearly, setup-wordnet installs from Debian's files, the check passes."
    if not Path("/usr/share/wordnet/data.noun").exists(): pytest.skip("Debian's wordnet-base is not installed")
    env = {**os.environ, "COGSYNTH_HOME": str(tmp_path/"home"), "NLTK_DATA": str(tmp_path/"nltk_none"), "HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([COGSYNTH, "setup-wordnet", *a], capture_output=True, text=True, env=env)
    r = run("--check")
    assert r.returncode == 1 and "apt-get install wordnet-base wordnet-sense-index" in r.stdout
    r = run()
    assert r.returncode == 0, r.stderr
    assert (tmp_path/"home"/"nltk_data"/"corpora"/"wordnet"/"lexnames").exists()
    assert run("--check").returncode == 0

def test_bad_inputs_are_clear(tmp_path):
    r = _py("from cogsynth.wordnet import synset; synset('n99999999')")
    assert "unknown wnid" in r.stderr and "n99999999" in r.stderr
    r = _py("from cogsynth.core import cogsynth_home; cogsynth_home()", COGSYNTH_HOME="/proc/cogsynth-x")
    assert "COGSYNTH_HOME" in r.stderr and "/proc/cogsynth-x" in r.stderr
    r = subprocess.run([COGSYNTH, "setup-wordnet", "--source", str(tmp_path), "--target", str(tmp_path/"t")], capture_output=True, text=True)
    assert r.returncode == 2 and "wordnet-base" in r.stderr

def test_tutorials_declare_parameters():
    "Every tutorial has a cell tagged `parameters` with the runner's four names, and the python3 kernel."
    import nbformat
    from cogsynth.runner import list_tutorials
    for p in list_tutorials(ROOT/"nbs"/"tutorials"):
        nb = nbformat.read(p, as_version=4)
        assert nb.metadata.kernelspec.name == "python3", p
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, f"{p.name}: one cell tagged parameters"
        for name in ("smoke", "device", "out_dir", "results_path"): assert name in params[0].source, (p.name, name)

def test_core_stands_alone():
    "`cogsynth.core` imports no other cogsynth module (every module may import it) and stays light."
    import ast
    tree = ast.parse((ROOT/"cogsynth"/"core.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("cogsynth"))]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name.startswith("cogsynth.")]
    assert imported == [], imported
    r = _py("import sys, json, cogsynth.core; print(json.dumps(sorted(m for m in sys.modules if m.startswith(('cogsynth.', 'torch', 'matplotlib')))))")
    assert json.loads(r.stdout) == ["cogsynth.core"], r.stdout + r.stderr
