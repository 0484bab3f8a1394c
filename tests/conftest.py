"""Shared fixtures: run a tutorial once per session through papermill with smoke parameters.

Markers: `slow` (minutes of compute: run with --runslow; CI does not) and `tutorial` (the test executes a tutorial
notebook, given to every test that uses the `run_tutorial` fixture: about 5 minutes together on 2 cores; run with
--tutorials, which `COGSYNTH_SLOW_TESTS=1 bash tools/test.sh` does in a step of its own)."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT/"nbs"/"tutorials"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (minutes of compute)")
    parser.addoption("--tutorials", action="store_true", help="also run the tests that execute a tutorial (marker `tutorial`)")

def pytest_configure(config):
    config.addinivalue_line("markers", "tutorial: executes a tutorial notebook in smoke mode; skipped unless --tutorials")

@pytest.hookimpl(tryfirst=True)            # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "run_tutorial" in item.fixturenames: item.add_marker(pytest.mark.tutorial)
    skips = {"slow": (config.getoption("--runslow"), "slow: run with --runslow"),
             "tutorial": (config.getoption("--tutorials"), "executes a tutorial: run with --tutorials (COGSYNTH_SLOW_TESTS=1 bash tools/test.sh)")}
    for item in items:
        for mark, (wanted, why) in skips.items():
            if mark in item.keywords and not wanted: item.add_marker(pytest.mark.skip(reason=why))

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
