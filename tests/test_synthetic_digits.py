"""The synthetic-digits tutorial (issue 8) and its embedded generator (cogsynth.digitgen)."""
from pathlib import Path

import numpy as np
import pytest

from cogsynth.core import CogsynthError, read_json
from cogsynth.generate import read_manifest

TRICKS = {"guidance 7.5", "guidance 2", "random guidance [1, 5]", "several phrasings", "all combined (phrasings + random guidance)"}


@pytest.fixture(scope="module")
def smoke(run_tutorial):
    "The tutorial in smoke mode (the same session-cached run as tests/test_tutorials.py)."
    results, out = run_tutorial("synthetic_digits")
    return results, out, [Path(results["generator"]["path"]), Path(results["seen_generator"]["path"])]


def test_results_have_every_table_entry(smoke):
    results, out, _ = smoke
    assert results["smoke"] is True
    s = results["summary"]
    rows = s["classifiers"]
    assert {r["trick"] for r in rows if r["train_data"].startswith("synthetic")} == TRICKS
    assert sum(r["train_data"].startswith("real") for r in rows) == 1
    for r in rows:
        assert set(r) >= {"train_data", "trick", "real_test_top1", "gap_to_real"}
        assert 0.0 <= r["real_test_top1"] <= 100.0
    # the baseline is trained on the real training share (all 1,257 training digits), each synthetic set on
    # per_class generated images of each of the 10 digits
    from cogsynth.data import digits_arrays
    assert s["real_baseline"]["images"] == len(digits_arrays("train")[1]) == 1257
    assert all(r["images"] == 10 * results["params"]["per_class"] for r in rows if r["train_data"].startswith("synthetic"))
    layers = {name: [c["layer"] for c in g["curve"]] for name, g in s["genindex"].items()}
    assert layers["real 0-4"] == layers["synthetic 0-4"] and len(layers["real 0-4"]) > 1   # same taps: comparable g
    for name in ("real 0-4", "synthetic 0-4"):
        g = s["genindex"][name]
        assert 0.0 <= g["g"] <= 1.0 and 0.0 <= g["g_seen"] <= 1.0
        assert g["best_layer"] in layers[name]
        assert 0.0 <= g["probe_top1_unseen"] <= 100.0
    assert set(results["copy_check"]) == {"guidance_7.5", "guidance_2", "random_guidance", "phrasings", "combined"}
    for f in ("generator_curves.png", "samples.png", "classifier_curves.png", "genindex_fewshot.png"):
        assert (out/f).stat().st_size > 1000, f


def test_synthetic_sets_are_generated_images_of_every_class(smoke):
    results, out, _ = smoke
    folders = [p for p in (out/"synthetic").glob("*/*") if (p/"manifest.jsonl").exists()]
    assert len(folders) == 6                                    # five tricks + the 0-4 clone
    seen = [p for p in folders if "-seen-" in p.parent.name]
    assert len(seen) == 1 and sorted(d.name for d in seen[0].iterdir() if d.is_dir()) == ["0", "1", "2", "3", "4"]
    manifest = next((out/"synthetic").glob("*/random_guidance/manifest.jsonl"))
    recs = read_manifest(manifest.parent)
    assert {r["guidance"] for r in recs} <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len({r["class"] for r in recs}) == 10


def test_generator_folder_loads_like_stable_diffusion(smoke):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    _, _, dirs = smoke
    assert [read_json(d/"digitgen.json")["classes"] for d in dirs] == [list(range(10)), [0, 1, 2, 3, 4]]
    for d in dirs:                                                        # no unfinished training run left behind, only the lock
        assert [p.name for p in (d.parent/f".{d.name}.work").iterdir()] == [".cogsynth.lock"]
    pipe = DiffusionPipeline.from_pretrained(dirs[0])
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.scheduler.config.beta_schedule == "scaled_linear" and pipe.scheduler.config.beta_start == 0.00085
    img = pipe("a handwritten digit seven", num_inference_steps=2, guidance_scale=2.0, height=16, width=16).images[0]
    assert img.size == (16, 16)


def test_generator_cache_and_errors(tmp_path):
    from cogsynth.digitgen import train_digit_generator, digitgen_params, copy_check, real_digit_images
    with pytest.raises(CogsynthError, match="unknown digit-generator parameter"): train_digit_generator(tmp_path/"g", smoke=True, unet_step=3)
    with pytest.raises(CogsynthError, match="not digits 0-9"): digitgen_params(classes=[3, 12])
    tr, _ = real_digit_images("train"); te, _ = real_digit_images("test")
    assert copy_check(tr[:50], tr, te)["near_copy_share"] == 1.0     # verbatim training images are flagged
    assert copy_check(te[:50], tr, te)["ratio"] == pytest.approx(1.0, abs=0.35)


def test_generator_folder_follows_the_run_identity_policy(tmp_path):
    "Another generator in the folder is refused (naming the difference); replace sets it aside; force is recompute, deprecated."
    from cogsynth.digitgen import train_digit_generator
    g = train_digit_generator(tmp_path/"g", smoke=True, device="cpu")
    with pytest.raises(CogsynthError, match=r"holds a digit generator of other settings: params.vae_steps=8 -> 4"):
        train_digit_generator(g, smoke=True, device="cpu", vae_steps=4)
    assert train_digit_generator(g, smoke=True, device="cpu", vae_steps=4, on_change="replace") == g
    assert read_json(g/"digitgen.json")["params"]["vae_steps"] == 4
    assert read_json(tmp_path/"g.replaced-1"/"digitgen.json")["params"]["vae_steps"] == 8    # set aside, never deleted
    with pytest.warns(FutureWarning, match="force=True is deprecated"):
        train_digit_generator(g, smoke=True, device="cpu", vae_steps=4, force=True)
    assert (tmp_path/"g.replaced-2").exists()

@pytest.mark.slow
def test_full_run_reaches_the_target(tmp_path):
    "The default parameters (minutes): a synthetic-only classifier reaches >= 93% on real test digits."
    from cogsynth.runner import run_tutorial
    from conftest import TUTORIALS
    results = run_tutorial(TUTORIALS/"06_synthetic_digits.ipynb", tmp_path, smoke=False, device="cpu", timeout=3600)
    rows = results["summary"]["classifiers"]
    assert max(r["real_test_top1"] for r in rows if r["train_data"].startswith("synthetic")) >= 93.0
    assert results["summary"]["real_baseline"]["real_test_top1"] >= 95.0
    assert all(c["near_copy_share"] < 0.5 for c in results["copy_check"].values())
