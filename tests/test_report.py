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


# ---- issue 24.5: the report escapes what it shows and never follows a link out of the results folder

PAYLOAD = "<script>alert(1)</script>"
MARK = """<img src=x onerror="document.title='pwned'">"""          # would rename the page if it ran


def _dom(page) -> str:
    "The DOM of `page` after chromium ran it (scripts included, if the page lets them run)."
    from cogsynth.report import _chromium
    return _chromium(["--virtual-time-budget=5000", "--dump-dom", Path(page).resolve().as_uri()], 60).stdout


def test_report_escapes_table_cells_names_and_facts(tmp_path):
    root = _results(tmp_path)
    (root/"summary.md").write_text(f"# cogsynth results\n\n## levels\n\n| level | note |\n|---|---|\n| L1 | {PAYLOAD} |\n"
                                   f"| L2 | {MARK} |\n\n{PAYLOAD}\n")
    write_json(root/"summary.json", {"smoke": True, "device": MARK, "seconds": {"levels": MARK, "synthetic_digits": 41.0}})
    (root/"levels"/"levels.png").rename(root/"levels"/f"{MARK}.png")             # a figure whose name is markup
    page = write_report(root).read_text()
    assert "<script" not in page.lower() and "onerror=" not in page.replace("onerror=&quot;", "").replace("onerror=x", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and page.count("<img ") == 2                 # the two figures, nothing else
    if find_chromium() is not None: assert "pwned</title>" not in _dom(root/"index.html")


def test_report_pages_run_no_script(tmp_path):
    "A tutorial page keeps a notebook's HTML outputs, but its content security policy lets no script run."
    root = _results(tmp_path)
    v4 = nbformat.v4
    bad = v4.new_notebook(cells=[v4.new_markdown_cell(f"# Bad\n\n{MARK}"), v4.new_code_cell("x", outputs=[v4.new_output(
        "display_data", {"text/html": f"<b>table</b>{PAYLOAD}<script>document.title='pwned'</script>{MARK}", "text/plain": "x"})])])
    nbformat.write(bad, root/"levels"/"01_levels.ipynb")
    index = write_report(root)
    for p in (index, root/"levels"/"01_levels.html"):
        assert "Content-Security-Policy" in p.read_text() and "script-src" not in p.read_text()
    if find_chromium() is None: return
    dom = _dom(root/"levels"/"01_levels.html")
    assert "<title>Bad</title>" in dom and "pwned</title>" not in dom


def test_report_stays_inside_the_results_folder(tmp_path):
    root = _results(tmp_path)
    elsewhere, outside = tmp_path/"elsewhere", tmp_path/"outside"
    elsewhere.mkdir(); outside.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Foreign")]), elsewhere/"02_foreign.ipynb")
    (root/"foreign").symlink_to(elsewhere)                                         # a tutorial folder linked out
    (root/"levels"/"secret.png").symlink_to("/etc/passwd")                         # a figure linked out
    (outside/"fig.png").write_bytes((root/"levels"/"levels.png").read_bytes())
    (root/"levels"/"stolen.png").symlink_to(outside/"fig.png")
    nb = nbformat.read(root/"levels"/"01_levels.ipynb", as_version=4)              # the page embeds what Markdown shows
    nb.cells.append(nbformat.v4.new_markdown_cell("![s](secret.png) ![t](stolen.png) <img src='../../outside/fig.png'>"))
    nbformat.write(nb, root/"levels"/"01_levels.ipynb")
    write_json(outside/"summary.json", {"device": "LEAKED"})
    (root/"summary.json").unlink(); (root/"summary.json").symlink_to(outside/"summary.json")
    index = write_report(root)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["02_foreign.ipynb"]    # no 02_foreign.html outside
    page = index.read_text()
    assert "foreign/02_foreign.html" not in page and "LEAKED" not in page
    assert 'src="levels/secret.png"' not in page and 'src="levels/stolen.png"' not in page and 'src="levels/levels.png"' in page
    left = page.split("Left out")[1].split("</p>")[0]
    assert all(n in left for n in ("foreign", "secret.png", "stolen.png", "summary.json"))
    tut = (root/"levels"/"01_levels.html").read_text()
    assert tut.count('src="data:image/png;base64,') == 2                          # the figure output and inline.png only
    assert tut.count("leads outside the results folder") == 3


def test_report_writes_no_file_through_a_link(tmp_path):
    root = _results(tmp_path)
    target = tmp_path/"victim.html"; target.write_text("keep")
    (root/"levels"/"01_levels.html").symlink_to(target)                           # an old page that links out
    index = write_report(root)
    assert target.read_text() == "keep" and "01_levels.html" in index.read_text().split("Left out")[1]
    index.unlink(); index.symlink_to(target)
    with pytest.raises(Exception, match="index.html is a link leading outside the results folder"):
        write_report(root)
    assert target.read_text() == "keep"


# ---- issue 27.4: figures readable in the page, tables with captions and units

def test_report_tables_have_captions_and_units(tmp_path):
    from cogsynth.runner import write_summary
    root = _results(tmp_path)
    zsl = [{"embeddings": "attributes", "method": "V&S-CC", "rebalance": "discriminator", "tau": 3.0, "T1": 81.2, "S": 70.1, "U": 55.0, "H": 61.6}]
    gi = [{"model": "trained", "g_unseen": 0.41, "best_layer": "stages.2", "g_seen": 0.8, "knn_at_best": 0.7, "new_score": 3}]
    write_summary(root, {"zsl": {"table": zsl}, "genindex": {"table": gi}}, {"zsl": 1.0}, smoke=True, device="cpu")
    page = write_report(root).read_text()
    assert page.count("<table>") == page.count("<caption>") == 3                   # tutorials, zsl, genindex
    assert '>T1 <span class="unit">(%)</span></th>' in page and '>H <span class="unit">(%)</span></th>' in page
    assert "<b>H</b>: harmonic mean of S and U, %" in page and "<b>tau</b>: softmax temperature (calibration)" in page
    assert "<b>g_unseen</b>: generalization index" in page and "<caption>Generalization index per model" in page
    assert "new_score" in page and "<b>new_score</b>" not in page                  # no meaning known: no legend entry


@needs_browser
def test_report_figures_fill_the_page_width(tmp_path):
    "A wide multi-panel figure is shown at the page's content width (not a thumbnail), and links to its file."
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    root = _results(tmp_path)
    fig, axs = plt.subplots(1, 6, figsize=(16, 3))
    for a in axs: a.plot([0, 1], [1, 0])
    save_figure(fig, root/"levels"/"panels.png", dpi=100)                         # 1600 px wide
    index = write_report(root)
    assert 'href="levels/panels.png"><img src="levels/panels.png"' in index.read_text()
    r = browser_check(index, screenshot=tmp_path/"index.png", size=(1280, 1000))
    assert r["broken_images"] == [] and max(r["image_widths"]) >= 1000, r       # the old 32rem figures were 512 px
