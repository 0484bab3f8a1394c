"""A third-party package extends cogsynth through the `cogsynth.plugins` entry-point group (issue 22).

The test builds a tiny plugin package, installs it with pip into a folder of its own (its dist-info carries the
entry point), and drives the `cogsynth` command with that folder on PYTHONPATH: the plugin's prompt family and its
probe protocol appear in the help and work like built-in ones. It also checks that a plugin that fails to load is
reported and does not break the command."""
import json, os, subprocess, sys, textwrap
from pathlib import Path

import pytest

PLUGIN = '''
"""A demo cogsynth plugin: one prompt family and one probe protocol."""
from pathlib import Path
from cogsynth.core import write_json
from cogsynth.prompts import register_prompt_family
from cogsynth.protocols import register_protocol

register_prompt_family("demo-haiku", "a quiet {name} in autumn light", doc="demo plugin: a haiku-like prompt")

@register_protocol("demo-count", splits=("train",))
def demo_count(features, *, out, model="model"):
    "Counts the images of each data item (demo plugin)."
    res = {name: {split: len(next(iter(layers.values()))) for split, layers in splits.items()} for name, splits in features.items()}
    write_json(Path(out)/"demo_count.json", {"model": model, "counts": res})
    return res
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "cogsynth-demo-plugin"
version = "0.1"

[tool.setuptools]
packages = ["cogsynth_demo_plugin", "cogsynth_demo_broken"]

[project.entry-points."cogsynth.plugins"]
demo = "cogsynth_demo_plugin"
broken = "cogsynth_demo_broken"
'''

@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    "A folder on which the demo plugin is installed (pip --target), with its entry points."
    src, target = tmp_path_factory.mktemp("plugin_src"), tmp_path_factory.mktemp("plugin_site")
    (src/"cogsynth_demo_plugin").mkdir()
    (src/"cogsynth_demo_plugin"/"__init__.py").write_text(textwrap.dedent(PLUGIN))
    (src/"cogsynth_demo_broken").mkdir()
    (src/"cogsynth_demo_broken"/"__init__.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    (src/"pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(src)], check=True)
    assert list(target.glob("cogsynth_demo_plugin-0.1.dist-info/entry_points.txt"))
    return target

def cogsynth(plugin_path, *args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "HF_HUB_OFFLINE": "1", "COGSYNTH_QUIET": "1", "MPLBACKEND": "Agg"}
    exe = Path(sys.executable).parent/"cogsynth"                     # the installed command, as a user runs it
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)

def test_plugin_protocol_runs_from_the_cli(plugin_path, tmp_path):
    h = cogsynth(plugin_path, "probe", "--help")
    assert h.returncode == 0 and "demo-count" in h.stdout, h.stdout + h.stderr
    r = cogsynth(plugin_path, "probe", "--model", "cnn_small", "--random-init", "--data", "seen=digits:seen", "--protocol", "demo-count",
                 "--split", "train", "--out", str(tmp_path/"out"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    counts = json.loads((tmp_path/"out"/"demo_count.json").read_text())["counts"]
    assert counts == {"seen": {"train": 630}}          # digits 0-4 of the 1,257 training digits
    assert "broken" in r.stderr and "failed to load" in r.stderr    # reported, and the rest still works

def test_plugin_prompt_family_is_a_choice_of_the_cli(plugin_path, tmp_path):
    h = cogsynth(plugin_path, "generate", "--help")
    assert h.returncode == 0 and "demo-haiku" in h.stdout, h.stdout + h.stderr
    probe = ("import json; from cogsynth.prompts import make_plan; "
             "print(json.dumps([j.prompt for j in make_plan(['pickup_truck'], 2, prompt='demo-haiku')]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ["a quiet pickup truck in autumn light"] * 2

def test_without_the_plugin_its_names_are_unknown(tmp_path, capsys):
    from cogsynth.cli import main
    with pytest.raises(SystemExit) as e:
        main(["probe", "--model", "cnn_small", "--random-init", "--data", "seen=digits:seen", "--protocol", "demo-count", "--out", str(tmp_path)])
    assert e.value.code == 2 and "invalid choice: 'demo-count'" in capsys.readouterr().err
