"""Each tutorial runs under papermill with smoke parameters and writes its results JSON."""
import pytest
from conftest import TUTORIALS
from cogsynth.runner import list_tutorials, tutorial_name

@pytest.mark.parametrize("name", [tutorial_name(p) for p in list_tutorials(TUTORIALS)])
def test_tutorial_runs_in_smoke_mode(run_tutorial, name):
    results, out = run_tutorial(name)
    assert results.get("smoke") is True, "a tutorial records the smoke flag in its results"
    # what `cogsynth run` merges: headline numbers under "summary" (summary.json) and a table or markdown (summary.md)
    assert isinstance(results.get("summary"), dict) and results["summary"], "a tutorial puts its headline numbers under 'summary'"
    assert results.get("summary_md") or results.get("table"), "a tutorial gives summary.md a 'table' (list of rows) or 'summary_md'"
