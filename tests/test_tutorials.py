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

@pytest.mark.parametrize("path", list_tutorials(TUTORIALS), ids=tutorial_name)
def test_papermill_sees_every_parameter(path):
    "A parameters-cell line papermill cannot parse drops its name, so `cogsynth sweep --grid NAME=...` would refuse it."
    import ast, nbformat, papermill
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    assert list(papermill.inspect_notebook(str(path))) == assigned
