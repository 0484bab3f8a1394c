"""ImageNet-CoG levels: the committed manifest's invariants, the tutorial, the CLI and its errors."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

from cogsynth.core import data_file
from cogsynth.levels import PERSON, imagenet_cog_exclusions, load_levels, eligible_concepts
from cogsynth.wordnet import ConceptGraph, imagenet_wnids

COGSYNTH = str(Path(sys.executable).parent/"cogsynth")

@pytest.fixture(scope="module")
def committed():
    return load_levels(data_file("imagenet-cog/levels.json"))

@pytest.fixture(scope="module")
def graph():
    return ConceptGraph.build(list(imagenet_wnids("21k")) + list(imagenet_wnids("1k")))

def test_committed_manifest_invariants(committed, graph):
    levels = committed["levels"]
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
    assert committed["filters"][-1]["filter"] == "excluded" and committed["filters"][-1]["removed"] == 70

def test_tutorial(run_tutorial):
    res, out = run_tutorial("levels")
    assert all(res["checks"].values()) and res["same_as_committed"]
    assert 13_500 < res["eligible"] < 14_500
    assert (out/"levels.json").exists() and (out/"levels.png").stat().st_size > 10_000
    agreement = res["text_agreement"]
    assert sum(map(sum, agreement)) == 300 and 0 < res["text_diagonal_share"] <= 1

def _cli(*args, **env):
    return subprocess.run([COGSYNTH, "levels", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=600)

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

def test_cli_bad_inputs(tmp_path):
    r = _cli("--levels", "20", "--per-level", "1000", "--out", str(tmp_path))
    assert r.returncode == 2 and "only 14,178 are eligible" in r.stderr
    r = _cli("--seen", str(_write(tmp_path/"empty.txt", [])), "--out", str(tmp_path))
    assert r.returncode == 2 and "seen set is empty" in r.stderr
    r = _cli("--seen", str(_write(tmp_path/"bad.txt", ["n02086910", "n99999999"])), "--out", str(tmp_path))
    assert r.returncode == 2 and "n99999999" in r.stderr
    r = _cli("--image-root", str(tmp_path/"nope"), "--out", str(tmp_path))
    assert r.returncode == 2 and "not a readable folder" in r.stderr
