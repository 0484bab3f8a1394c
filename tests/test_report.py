"""The offline HTML report in a real browser (headless chromium): images load, local links resolve, nothing remote,
the screenshot is not blank (issue 18.4). tools/test.sh installs Debian's chromium and sets COGSYNTH_REQUIRE_BROWSER=1,
so there a missing browser fails instead of skipping."""
import base64, json, os
from io import BytesIO
from pathlib import Path

import nbformat
import pytest

from cogsynth.core import save_figure, write_json
from cogsynth.report import browser_check, find_chromium, local_targets, notebook_html, remote_resources, write_report

needs_browser = pytest.mark.skipif(find_chromium() is None and os.environ.get("COGSYNTH_REQUIRE_BROWSER") != "1",
                                   reason="no chromium (tools/test.sh installs it: apt-get install chromium)")


def _png(color) -> str:
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 2)); ax.plot([0, 1, 2], [0, 2, 1], color=color); ax.set_title("curve")
    buf = BytesIO(); fig.savefig(buf, format="png", dpi=60); plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _results(tmp_path) -> Path:
    "A results folder as `cogsynth run` leaves it: two executed tutorials, figures, summary.md, summary.json."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    v4, root = nbformat.v4, tmp_path/"results"
    for i, (name, color) in enumerate([("levels", "tab:blue"), ("synthetic_digits", "tab:orange")], 1):
        (root/name).mkdir(parents=True)
        fig, ax = plt.subplots(figsize=(3, 2)); ax.bar(["a", "b"], [1, 2], color=color)
        save_figure(fig, root/name/f"{name}.png", dpi=50)
        (root/name/"data").mkdir(); (root/name/"data"/"sample.png").write_bytes(b"not shown")   # deeper: data, not figures
        md = v4.new_markdown_cell(f"# Tutorial {name}\n\nSee [the figure]({name}.png), the [paper](https://arxiv.org/abs/2012.05649) "
                                  f"and $g = \\max_l \\mathrm{{NMI}}_l$.\n\n![inline]({name}.png)")
        code = v4.new_code_cell("plot()", outputs=[v4.new_output("display_data", {"image/png": _png(color), "text/plain": "<Figure>"}),
                                                   v4.new_output("stream", name="stdout", text=f"{name}: top-1 97.8\n")])
        nbformat.write(v4.new_notebook(cells=[md, code]), root/name/f"0{i}_{name}.ipynb")
    (root/"summary.md").write_text("# cogsynth results\n\nsmoke=True\n\n## synthetic_digits\n\n| data | top-1 |\n|---|---|\n| real | 97.8 |\n")
    write_json(root/"summary.json", {"smoke": True, "device": "cpu", "seconds": {"levels": 3.2, "synthetic_digits": 41.0}})
    return root


def test_report_files_and_links(tmp_path):
    root = _results(tmp_path)
    index = write_report(root)
    page = index.read_text()
    assert 'href="levels/01_levels.html"' in page and 'href="synthetic_digits/02_synthetic_digits.html"' in page
    assert 'src="levels/levels.png"' in page and "sample.png" not in page
    assert "<td>97.8</td>" in page and "smoke=True, device=cpu" in page
    for p in (index, root/"levels"/"01_levels.html"):
        text = p.read_text()
        assert remote_resources(text) == [], p
        assert all(ok for _, ok in local_targets(p)), local_targets(p)
    tut = (root/"levels"/"01_levels.html").read_text()
    assert tut.count('src="data:image/png;base64,') == 2          # the figure output and the Markdown image, both embedded
    assert "cdnjs" not in tut and "mathjax" not in tut.lower().split("</style>")[-1]


def test_remote_loads_are_refused(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
        "display_data", {"text/html": '<script src="https://cdn.example.org/plotly.js"></script>'})])])
    with pytest.raises(Exception, match="still loads .*cdn.example.org"):
        notebook_html(nb)


@needs_browser
def test_report_in_headless_chromium(tmp_path):
    root = _results(tmp_path)
    index = write_report(root)
    for page, n_images in ((index, 2), (root/"synthetic_digits"/"02_synthetic_digits.html", 2)):
        r = browser_check(page, screenshot=tmp_path/f"{page.stem}.png")
        assert r["images"] == n_images and r["broken_images"] == [], r
        assert r["missing_local"] == [] and r["remote"] == [], r
        assert not r["screenshot_blank"], r
    assert not list(root.rglob(".check-*"))                      # the probe copy is removed


@needs_browser
def test_browser_check_sees_failures(tmp_path):
    "The check can fail: a missing image, a broken link and a blank page are each reported."
    (tmp_path/"bad.html").write_text('<!DOCTYPE html><html><body><h1>Results</h1><p>Text so the page is not blank.</p>'
                                     '<img src="missing.png"><a href="nowhere.html">x</a></body></html>')
    r = browser_check(tmp_path/"bad.html")
    assert r["images"] == 1 and r["broken_images"] == ["missing.png"]
    assert sorted(r["missing_local"]) == ["missing.png", "nowhere.html"]
    assert not r["screenshot_blank"]
    (tmp_path/"blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    assert browser_check(tmp_path/"blank.html")["screenshot_blank"]
