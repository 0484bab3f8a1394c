"""Render README.md from the executed nbs/index.ipynb, with its outputs and the tutorials' key figures (issue 18.3).

Quarto, which nbdev-readme needs, cannot be installed here, so nbconvert's Markdown exporter renders the notebook:
- cells marked `#| hide` (or `#| export`) are left out; `#| echo: false` keeps a cell's outputs without its code,
  `#| output: false` its code without its outputs; directive lines are removed;
- text outputs appear under their code, figures are written to README_files/ and referenced from README.md;
- where index.ipynb has a Markdown cell holding only `<!-- tutorial figures -->`, a "Results" section is put in:
  one key figure per executed tutorial of nbs/tutorials/ (the figure outputs of its cells tagged `key-figure`,
  or else its last figure), so the README shows what the tutorials measured.

    python tools/readme.py           write README.md and README_files/
    python tools/readme.py --check   exit 1 if README.md or README_files/ differ from what the notebooks render
"""
import base64, re, sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parent.parent
FILES = "README_files"                      # committed, referenced by README.md with relative links
MARKER = "<!-- tutorial figures -->"
HEADER = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"

def _directives(src: str) -> dict:
    return {m.group(1): (m.group(2) or "").strip() for m in re.finditer(r"^#\|\s*([\w-]+)\s*:?\s*(.*)$", src, re.M)}

def _prepare(nb):
    "Drop hidden cells and directive lines; tag the cells whose input or output is not shown."
    cells = []
    for c in nb.cells:
        d = _directives(c.source) if c.cell_type == "code" else {}
        if "hide" in d or "export" in d or "exporti" in d or "default_exp" in d: continue
        c.source = "\n".join(l for l in c.source.splitlines() if not l.startswith("#|")).strip("\n")
        tags = set(c.metadata.get("tags", []))
        if d.get("echo") == "false": tags.add("remove_input")
        if d.get("output") == "false": tags.add("remove_output")
        c.metadata["tags"] = sorted(tags)
        if c.source or (c.cell_type == "code" and c.get("outputs") and "remove_input" in tags): cells.append(c)
    nb.cells = cells
    return nb

def _title(nb, default: str) -> str:
    for c in nb.cells:
        if c.cell_type == "markdown" and (m := re.search(r"^#\s+(.+)$", c.source, re.M)): return m.group(1).strip()
    return default

def tutorial_figures() -> tuple[str, dict]:
    "The Results section (Markdown) and its image files {name: bytes}, from the executed tutorials."
    md, files = [], {}
    for path in sorted((root/"nbs"/"tutorials").glob("[0-9]*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        def pngs(cells): return [o["data"]["image/png"] for c in cells if c.cell_type == "code"
                                 for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        tagged = pngs([c for c in nb.cells if "key-figure" in c.metadata.get("tags", [])])
        chosen = tagged or pngs(nb.cells)[-1:]
        if not chosen: continue
        title = _title(nb, path.stem)
        md.append(f"### {title}\n\nFrom [`nbs/tutorials/{path.name}`](nbs/tutorials/{path.name}):\n")
        for k, b64 in enumerate(chosen):
            name = f"{path.stem}{'' if k == 0 else f'_{k}'}.png"
            files[name] = base64.b64decode("".join(b64) if isinstance(b64, list) else b64)
            md.append(f"![{title}]({FILES}/{name})\n")
    if not md: return "", files
    head = ("## Results\n\nThe key figures of the tutorials, executed at their default parameters on CPU "
            "(the committed notebooks in `nbs/tutorials/` carry all their outputs):\n")
    return "\n".join([head, *md]), files

def render() -> tuple[str, dict]:
    "(README.md text, {file name in README_files: bytes})."
    from traitlets.config import Config
    nb = _prepare(nbformat.read(root/"nbs"/"index.ipynb", as_version=4))
    nb.metadata["language_info"] = {"name": "python"}          # fenced code blocks say ```python
    cfg = Config()
    cfg.TagRemovePreprocessor.enabled = True
    cfg.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    cfg.TagRemovePreprocessor.remove_all_outputs_tags = {"remove_output"}
    body, res = MarkdownExporter(config=cfg).from_notebook_node(nb, resources={"output_files_dir": FILES})
    files = {Path(k).name: v for k, v in res.get("outputs", {}).items()}
    results, figs = tutorial_figures()
    files.update(figs)
    body = body.replace(MARKER, results) if MARKER in body else body
    return HEADER + re.sub(r"\n{3,}", "\n\n", body).strip() + "\n", files

def differences(text: str, files: dict) -> list[str]:
    readme, folder = root/"README.md", root/FILES
    out = []
    if not readme.exists() or readme.read_text() != text: out.append("README.md")
    have = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    out += [f"{FILES}/{n}" for n in sorted(set(files) ^ have)]
    out += [f"{FILES}/{n}" for n in sorted(set(files) & have) if (folder/n).read_bytes() != files[n]]
    return out

if __name__ == "__main__":
    text, files = render()
    if "--check" in sys.argv:
        diff = differences(text, files)
        if diff: sys.exit(f"out of date with nbs/index.ipynb and the executed tutorials: {', '.join(diff)}: run `python tools/readme.py`")
        print("README.md is up to date")
    else:
        folder = root/FILES
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name not in files: p.unlink()
        if files: folder.mkdir(exist_ok=True)
        for n, b in files.items():
            if not (folder/n).exists() or (folder/n).read_bytes() != b: (folder/n).write_bytes(b)
        (root/"README.md").write_text(text); print(f"wrote README.md and {len(files)} files in {FILES}/")
