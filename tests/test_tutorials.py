"""Each tutorial runs under papermill with smoke parameters and writes its results JSON (these execute tutorials:
marked `tutorial`, run with --tutorials); every import of a shipped tutorial is a runtime requirement (issue 27.1)."""
import ast, re, sys, tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires

import nbformat
import pytest
from conftest import ROOT, TUTORIALS
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
    import papermill
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    assert list(papermill.inspect_notebook(str(path))) == assigned


def _name(requirement:str) -> str:
    "A requirement's distribution name, normalized (PEP 503): 'scikit-learn>=1.5' -> 'scikit-learn'."
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()

def _runtime(requirement:str) -> bool: return "extra" not in requirement.partition(";")[2]

def tutorial_imports(path) -> set[str]:
    "The top-level modules a notebook's code imports (absolute imports; magics and shell lines skipped)."
    mods = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code": continue
        src = "\n".join(l for l in cell.source.splitlines() if not l.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import): mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0: mods.add(node.module.split(".")[0])
    return mods

def test_tutorials_import_only_runtime_requirements():
    """The wheel, installed without extras, must run `cogsynth run`: each module a tutorial imports comes from a requirement in
    pyproject.toml's [project].dependencies, or from one that such a requirement itself needs at run time (IPython comes with
    ipykernel, the kernel every tutorial runs in). fastcore in the dev extra only broke tutorial 02 this way (issue 27.1)."""
    deps = {_name(r) for r in tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]["dependencies"]}
    def needed_by(dist):
        try: return {_name(r) for r in requires(dist) or [] if _runtime(r)}
        except PackageNotFoundError: return set()
    allowed, dists = deps | {n for d in deps for n in needed_by(d)}, packages_distributions()
    for path in list_tutorials(TUTORIALS):
        for mod in sorted(tutorial_imports(path) - set(sys.stdlib_module_names) - {"cogsynth"}):
            names = {_name(d) for d in dists.get(mod, [])}
            assert names, f"{path.name} imports {mod}, which no installed distribution provides"
            assert names & allowed, f"{path.name} imports {mod} (from {', '.join(sorted(names))}), which is no runtime requirement: add it to [project].dependencies"

def test_the_check_sees_a_dev_only_import(tmp_path):
    "The check above would have caught the fastcore case: a module from the dev extra only (nbdev) is no runtime requirement."
    deps = {_name(r) for r in tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]["dependencies"]}
    assert "nbdev" not in deps and {"fastcore", "ipykernel"} <= deps
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%matplotlib inline\nimport nbdev.showdoc\nfrom os import path")])
    nbformat.write(nb, tmp_path/"t.ipynb")
    assert tutorial_imports(tmp_path/"t.ipynb") == {"nbdev", "os"}
