"""ImageNet-CoG levels: the shipped manifests' invariants, the published levels reproduced exactly, the LCS rules,
level specs, NAVER's pickles read safely, the tutorial, the CLI and its errors."""
import io, json, os, pickle, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from cogsynth.core import data_file
from cogsynth.levels import (PERSON, eligible_concepts, imagenet_cog_exclusions, is_level_spec, load_levels,
                             published_levels, resolve_level_spec)
from cogsynth.wordnet import ConceptGraph, imagenet_wnids, lowest_common_subsumer, set_similarity, synset

COGSYNTH = str(Path(sys.executable).parent/"cogsynth")

@pytest.fixture(scope="module")
def graph():
    return ConceptGraph.build(list(imagenet_wnids("21k")) + list(imagenet_wnids("1k")))

@pytest.fixture(scope="module")
def published():
    return published_levels()

@pytest.mark.parametrize("preset", ["imagenet-cog", "imagenet-cog-wordnet"])
def test_shipped_manifest_invariants(preset, graph):
    m = load_levels(preset)
    levels = m["levels"]
    wnids = [c["wnid"] for l in levels for c in l["concepts"]]
    assert [len(l["concepts"]) for l in levels] == [1000] * 5 and len(set(wnids)) == 5000      # 5 disjoint levels
    seen = set(imagenet_wnids("1k"))
    assert not set(wnids) & seen
    assert not set(wnids) & {a for s in seen for a, d in graph.ancestors(s).items() if d > 0}
    assert all(PERSON not in graph.ancestors(w) for w in wnids)
    assert not set(wnids) & set(imagenet_cog_exclusions())
    # every concept is a leaf of the filtered pool: no eligible concept lies below it
    eligible, _ = eligible_concepts(graph, sorted(seen), imagenet_wnids("21k"))
    below = {a for e in eligible for a, d in graph.ancestors(e).items() if d > 0}
    assert not set(wnids) & below and set(wnids) <= set(eligible)
    for a, b in zip(levels, levels[1:]): assert a["similarity_min"] >= b["similarity_max"]
    for l in levels:
        sims = [c["similarity"] for c in l["concepts"]]
        assert sims == sorted(sims, reverse=True) and all(c["nearest_seen"] in seen for c in l["concepts"])
    excluded = next(f for f in m["filters"] if f["filter"] == "excluded")
    assert excluded["removed"] == 70 and m["lcs"] == "deepest"
    c = levels[2]["concepts"][0]
    assert c["lcs"] == lowest_common_subsumer(graph, [(c["wnid"], c["nearest_seen"])])[0]
    assert c["name"] and c["definition"] == synset(c["wnid"]).definition()

def test_imagenet_cog_is_the_published_levels(published):
    m = load_levels("imagenet-cog")
    assert [l["name"] for l in m["levels"]] == list(published)
    assert [sorted(c["wnid"] for c in l["concepts"]) for l in m["levels"]] == [sorted(v) for v in published.values()]
    assert m["ranking_reproduces_levels"] is True and m["eligible"] == 5000
    ranges = [(round(l["similarity_min"], 3), round(l["similarity_max"], 3)) for l in m["levels"]]
    assert ranges == [(0.745, 0.964), (0.642, 0.744), (0.513, 0.641), (0.342, 0.513), (0.004, 0.338)]   # DESIGN.md
    assert (data_file("imagenet-cog/PROVENANCE.md")).read_text().count("syuan8889/HTH") >= 1

def test_lcs_rules_on_the_issue_examples(graph):
    "Issue 16's measured values: quince, mausoleum, repository and pistol grip under both rules."
    seen = list(imagenet_wnids("1k"))
    want = {"n07769584": (0.6497, 0.5283), "n03732114": (0.5929, 0.4314), "n04076713": (0.5929, 0.4314), "n03948830": (0.5565, 0.5127)}
    maxic, _ = set_similarity(graph, list(want), seen, lcs="max_ic")
    deep, near = set_similarity(graph, list(want), seen, lcs="deepest")
    assert np.allclose(maxic, [v[0] for v in want.values()], atol=5e-5)
    assert np.allclose(deep, [v[1] for v in want.values()], atol=5e-5)
    assert synset(near[0]).name() == "orange.n.01"
    assert synset(lowest_common_subsumer(graph, [("n07769584", near[0])])[0]).name() == "edible_fruit.n.01"

def _cli(*args, **env):
    return subprocess.run([COGSYNTH, "levels", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=600)

def test_counts_keeping_the_published_5000_reproduce_them_exactly(tmp_path, published):
    keep = {w for v in published.values() for w in v}
    counts = tmp_path/"counts.txt"
    counts.write_text("wnid\tcount\n" + "".join(f"{w}\t{1300 if w in keep else 781}\n" for w in imagenet_wnids("21k")))
    r = _cli("--image-counts", str(counts), "--min-images", "782", "--out", str(tmp_path/"out"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/"out"/"levels.json").read_text())
    assert m["eligible"] == 5000
    for l in m["levels"]:                                  # concept for concept, level for level
        assert sorted(c["wnid"] for c in l["concepts"]) == published[l["name"]]
    assert {"levels.png", "level_ranges.png", "examples.md"} <= {p.name for p in (tmp_path/"out").iterdir()}

def test_counts_file_with_a_malformed_line_fails_first(tmp_path):
    counts = tmp_path/"counts.txt"
    counts.write_text("n01440764 1300\nn01443537 782\nn01484850 lots\n")
    r = _cli("--image-counts", str(counts), "--out", str(tmp_path/"out"))
    assert r.returncode == 2 and "counts.txt:3: expected 'wnid count'" in r.stderr and "'n01484850 lots'" in r.stderr
    assert not (tmp_path/"out").exists()

def test_preset_writes_the_published_levels(tmp_path):
    r = _cli("--preset", "imagenet-cog", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/"levels.json").read_text()) == load_levels("imagenet-cog")
    assert (tmp_path/"level_ranges.png").stat().st_size > 20_000 and (tmp_path/"PROVENANCE.md").exists()
    shown = (tmp_path/"examples.md").read_text()
    assert shown.count("| L") == 20 and "n13555775" not in shown
    wn = tmp_path/"wn"
    assert _cli("--preset", "imagenet-cog-wordnet", "--out", str(wn)).returncode == 0
    assert "n13555775" not in (wn/"examples.md").read_text()          # its L5 holds it: the example moves on
    assert "n13555775" in {c["wnid"] for c in load_levels("imagenet-cog-wordnet")["levels"][4]["concepts"]}

def test_level_specs(tmp_path, published):
    assert resolve_level_spec("imagenet-cog:L3") == (published["L3"], "imagenet-cog", "L3")
    m = load_levels("imagenet-cog-wordnet")
    (tmp_path/"levels.json").write_text(json.dumps(m))
    spec = f"{tmp_path}/levels.json:L2"
    assert is_level_spec(spec) and not is_level_spec("n01440764,n01443537") and not is_level_spec(str(tmp_path))
    wnids, src, name = resolve_level_spec(spec)
    assert wnids == sorted(c["wnid"] for c in m["levels"][1]["concepts"]) and (src, name) == (f"{tmp_path}/levels.json", "L2")
    with pytest.raises(ValueError, match="use one of L1, L2, L3, L4, L5"): resolve_level_spec(f"{tmp_path}/levels.json:L6")
    (tmp_path/"other.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a level manifest"): resolve_level_spec(f"{tmp_path}/other.json:L1")

def test_one_level_lookup(tmp_path, published):
    "A level spec and `cogsynth.data.level_wnids` find the same level: by name in any case, or by number."
    from cogsynth.data import level_wnids
    for level in ("L3", "l3", 3, "3"):
        assert sorted(level_wnids("imagenet-cog", level)) == published["L3"] == resolve_level_spec(f"imagenet-cog:{level}")[0]
    with pytest.raises(ValueError, match="use one of L1, L2, L3, L4, L5"): level_wnids("imagenet-cog", 0)
    with pytest.raises(ValueError, match="neither a preset"): level_wnids(tmp_path/"missing.json", "L1")

def test_pickle_with_tuple_keys_is_refused(tmp_path):
    from cogsynth.levels import UnsafePickleError, safe_unpickle
    f = tmp_path/"keys.pkl"; f.write_bytes(pickle.dumps({"n01440764": {("train", 0): ["a.JPEG"]}}))
    with pytest.raises(UnsafePickleError, match="dict key of type tuple"): safe_unpickle(f)

class WritesAFile:
    "A hostile pickle: loading it would create a file."
    def __init__(self, path): self.path = path
    def __reduce__(self): return (io.open, (self.path, "w"))

def _split(w, n_train, n_test):
    paths = np.array([f"{w}/{w}_{i}.JPEG" for i in range(n_train + n_test)])
    return {"train": paths[:n_train], "test": paths[n_train:]}

def test_naver_levels_file_imports(tmp_path, published):
    f = tmp_path/"cog_levels_mapping_file.pkl"
    f.write_bytes(pickle.dumps([np.array(v) for v in published.values()], protocol=2))   # numpy string arrays
    r = _cli("--cog-levels", str(f), "--out", str(tmp_path/"out"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/"out"/"levels.json").read_text())
    assert [[c["wnid"] for c in l["concepts"]] for l in m["levels"]] == [[c["wnid"] for c in l["concepts"]] for l in load_levels("imagenet-cog")["levels"]]
    assert m["ranking_reproduces_levels"] is True and not (tmp_path/"out"/"splits.json").exists()

def test_naver_split_file_reads(tmp_path, published):
    from cogsynth.levels import read_cog_splits
    f = tmp_path/"cog_concepts_split_file.pkl"
    f.write_bytes(pickle.dumps({w: _split(w, 732 + i, 50) for i, w in enumerate(published["L1"][:4])}, protocol=5))
    sp = read_cog_splits(f)
    assert sp["schema"] == "cogsynth.splits/1" and sorted(sp["splits"]) == published["L1"][:4]
    s = sp["splits"][published["L1"][3]]
    assert len(s["train"]) == 735 and len(s["test"]) == 50 and s["train"] == sorted(s["train"])

def test_naver_bad_files_fail_before_work(tmp_path, published):
    lv = tmp_path/"levels.pkl"; lv.write_bytes(pickle.dumps([list(v) for v in published.values()]))
    out = tmp_path/"out"
    evil = tmp_path/"evil.pkl"; evil.write_bytes(pickle.dumps({published["L1"][0]: WritesAFile(str(tmp_path/"pwned"))}))
    for args in (["--cog-levels", str(evil)], ["--cog-levels", str(lv), "--cog-splits", str(evil)]):
        r = _cli(*args, "--out", str(out))
        assert r.returncode == 2 and "refused" in r.stderr and "io.open" in r.stderr, r.stderr
        assert not (tmp_path/"pwned").exists() and not out.exists()
    short = tmp_path/"short.pkl"
    short.write_bytes(pickle.dumps({w: _split(w, 900, 49 if i == 2 else 50) for i, w in enumerate(published["L1"][:3])}))
    r = _cli("--cog-levels", str(lv), "--cog-splits", str(short), "--out", str(out))
    assert r.returncode == 2 and f"1 concept(s) without 732-1300 train and exactly 50 test images: {published['L1'][2]} (900 train, 49 test)" in r.stderr
    bad = tmp_path/"bad.pkl"
    bad.write_bytes(pickle.dumps([list(v) for v in published.values()][:4] + [published["L5"][:999] + ["n04399382"]]))
    r = _cli("--cog-levels", str(bad), "--out", str(out))
    assert r.returncode == 2 and "1 wnid(s) are not imagenet-21k nouns: n04399382" in r.stderr
    assert not out.exists()

# ---------------------------------------------------------------- issue 24, point 10: bounded pickles
def _laughs(depth=8, width=10):
    "A few hundred bytes of shared references that expand to width**depth strings."
    x = ["n01440764"]
    for _ in range(depth): x = [x] * width
    return pickle.dumps(x, protocol=4)

def test_self_referencing_pickle_is_a_clear_error(tmp_path):
    from cogsynth.core import CogsynthError
    from cogsynth.levels import read_cog_levels
    l = []; l.append(l)
    f = tmp_path/"cog_levels_mapping_file.pkl"; f.write_bytes(pickle.dumps(l, protocol=4))
    assert f.stat().st_size == 17
    with pytest.raises(CogsynthError, match="refused: it holds a container inside itself"): read_cog_levels(f)   # not RecursionError
    d = {}; d["n01440764"] = {"train": d}
    f.write_bytes(pickle.dumps(d))
    with pytest.raises(CogsynthError, match="container inside itself"): read_cog_levels(f)
    r = _cli("--cog-levels", str(f), "--out", str(tmp_path/"out"))
    assert r.returncode == 2 and "container inside itself" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path/"out").exists()

def test_shared_reference_pickle_stops_fast_and_small(tmp_path):
    import time, tracemalloc
    from cogsynth.core import CogsynthError
    from cogsynth.levels import read_cog_splits, safe_unpickle
    f = tmp_path/"cog_concepts_split_file.pkl"; f.write_bytes(_laughs())                  # 10**8 strings once expanded
    assert f.stat().st_size < 600
    tracemalloc.start(); t0 = time.perf_counter()
    with pytest.raises(CogsynthError, match="would expand to more than 10,000,000 items"): read_cog_splits(f)
    seconds, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory(); tracemalloc.stop()
    assert seconds < 2 and peak < 20e6, (seconds, peak)
    f.write_bytes(_laughs(depth=30, width=2))                                                 # deep instead of wide
    with pytest.raises(CogsynthError, match="nests containers more than 16 deep"): safe_unpickle(f)
    f.write_bytes(_laughs(depth=3, width=10))                                                 # small enough: read as lists
    assert safe_unpickle(f)[9][9][9] == ["n01440764"]
    with pytest.raises(CogsynthError, match="more than 100 items"): safe_unpickle(f, max_items=100)

def test_level_flags_are_named_by_the_cli():
    import cogsynth.levels as levels
    assert not hasattr(levels, "_LEVEL_FLAGS")               # one flag-naming path: cogsynth.cli.name_flags
    r = _cli("--levels", "0", "--out", "unused")
    assert r.returncode == 2 and "--levels=0 and --per-level=1000 must be >= 1" in r.stderr, r.stderr

def test_tutorial(run_tutorial):
    res, out = run_tutorial("levels")
    assert all(res["checks"].values()) and res["same_as_committed"]
    assert 13_500 < res["eligible"] < 14_500
    assert (out/"levels.json").exists() and (out/"levels.png").stat().st_size > 10_000
    published_fig, wordnet_fig = (out/"published_level_ranges.png").read_bytes(), (out/"level_ranges.png").read_bytes()
    assert published_fig != wordnet_fig                    # the report of the rebuilt levels does not overwrite the published figure
    agreement = res["text_agreement"]
    assert sum(map(sum, agreement)) == 300 and 0 < res["text_diagonal_share"] <= 1

def test_cli_with_image_root(tmp_path):
    "Seen = 100 ImageNet-1K classes, a tiny fake image root: levels, counts filter and splits in one call."
    seen = tmp_path/"seen.txt"; seen.write_text("\n".join(imagenet_wnids("1k")[:100]))
    r = _cli("--seen", str(seen), "--levels", "2", "--per-level", "20", "--out", str(tmp_path/"a"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/"a"/"levels.json").read_text())
    wnids = [c["wnid"] for l in m["levels"] for c in l["concepts"]]
    root = tmp_path/"images"
    for i, w in enumerate(wnids):          # half the concepts get too few images
        (root/w).mkdir(parents=True)
        for j in range(12 if i % 2 else 3): (root/w/f"{j}.jpg").write_bytes(b"")
    r = _cli("--seen", str(seen), "--pool", str(_write(tmp_path/"pool.txt", wnids)), "--levels", "2", "--per-level", "5",
             "--image-root", str(root), "--min-images", "10", "--n-train", "2", "--n-test", "10", "--out", str(tmp_path/"b"))
    assert r.returncode == 0, r.stderr
    assert "min_images: removed" in r.stdout
    m = json.loads((tmp_path/"b"/"levels.json").read_text()); sp = json.loads((tmp_path/"b"/"splits.json").read_text())
    chosen = [c["wnid"] for l in m["levels"] for c in l["concepts"]]
    assert sorted(sp["splits"]) == sorted(chosen)
    assert all(len(s["train"]) == 2 and len(s["test"]) == 10 for s in sp["splits"].values())

def _write(p, wnids):
    p.write_text("\n".join(wnids)); return p

def test_cli_help_and_bad_inputs(tmp_path):
    h = _cli("--help").stdout
    for flag in ("--preset", "--cog-levels", "--lcs", "--per-level", "--min-images", "--levels"): assert flag in h
    assert "(default: 782)" in h and "(default: 1000)" in h and "(default: deepest)" in h
    r = _cli("--levels", "20", "--per-level", "1000", "--out", str(tmp_path))
    assert r.returncode == 2 and "only 14,178 are eligible" in r.stderr and "lower --levels=20 or --per-level=1000" in r.stderr
    r = _cli("--seen", str(_write(tmp_path/"empty.txt", [])), "--out", str(tmp_path))
    assert r.returncode == 2 and "seen set is empty" in r.stderr
    r = _cli("--seen", str(_write(tmp_path/"bad.txt", ["n02086910", "n99999999"])), "--out", str(tmp_path))
    assert r.returncode == 2 and "n99999999" in r.stderr
    r = _cli("--image-root", str(tmp_path/"nope"), "--out", str(tmp_path))
    assert r.returncode == 2 and "not a readable folder" in r.stderr
    r = _cli("--cog-splits", "x.pkl", "--out", str(tmp_path))
    assert r.returncode == 2 and "--cog-splits needs --cog-levels" in r.stderr
