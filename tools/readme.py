"""Render README.md from nbs/index.ipynb (quarto, which nbdev-readme needs, cannot be installed here).

    python tools/readme.py           write README.md
    python tools/readme.py --check   exit 1 if README.md differs from what index.ipynb renders
"""
import re, sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parent.parent

def render() -> str:
    nb = nbformat.read(root/"nbs"/"index.ipynb", as_version=4)
    cells = []
    for c in nb.cells:
        if re.search(r"^#\|\s*(hide|exporti?)\b", c.source, re.M): continue
        c.source = "\n".join(l for l in c.source.splitlines() if not l.startswith("#|")).strip("\n")
        if c.source: cells.append(c)
    nb.cells = cells
    body, _ = MarkdownExporter(exclude_output=True).from_notebook_node(nb)
    header = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"
    return header + re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"

if __name__ == "__main__":
    text, readme = render(), root/"README.md"
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python tools/readme.py`")
        print("README.md is up to date")
    else:
        readme.write_text(text); print(f"wrote {readme}")
