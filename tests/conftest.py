"""Shared fixtures: run a tutorial once per session through papermill with smoke parameters."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT/"nbs"/"tutorials"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")

def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"): return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords: item.add_marker(skip)

_cache = {}

@pytest.fixture(scope="session")
def run_tutorial(tmp_path_factory):
    """`run_tutorial("levels")` executes nbs/tutorials/NN_levels.ipynb (smoke=True, device=cpu) once per session
    and returns `(results_dict, out_dir)`."""
    from cogsynth.runner import list_tutorials, run_tutorial as _run, tutorial_name
    def run(name, **params):
        key = (name, tuple(sorted(params.items())))
        if key not in _cache:
            path = {tutorial_name(p): p for p in list_tutorials(TUTORIALS)}[name]
            out = tmp_path_factory.mktemp(f"tut-{name}")
            _cache[key] = (_run(path, out, smoke=True, device="cpu", timeout=900, **params), out/name)
        return _cache[key]
    return run
