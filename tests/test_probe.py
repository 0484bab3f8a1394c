"""Behaviour checks of cogsynth.probe and cogsynth.analysis, plus assertions on the cog_probe and genindex tutorials."""
import json, os, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest

from cogsynth.core import CogsynthError
from cogsynth.probe import (linear_probe, fewshot_probe, stratified_split, fewshot_indices, extract_features,
                            load_features, save_features, cog_benchmark, cog_table)
from cogsynth.features import feature_entries
from cogsynth.analysis import cluster_nmi, knn_agreement, feature_stats, generalization_index

ROOT = Path(__file__).resolve().parent.parent


def mixture(n_classes=8, n_train=50, n_test=20, dim=32, spread=3.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * spread
    ytr, yte = np.repeat(np.arange(n_classes), n_train), np.repeat(np.arange(n_classes), n_test)
    return (centers[ytr] + rng.normal(size=(len(ytr), dim))).astype(np.float32), ytr, \
           (centers[yte] + rng.normal(size=(len(yte), dim))).astype(np.float32), yte


# ---------------------------------------------------------------- probes
@pytest.mark.parametrize("solver,kw", [("lbfgs", dict(trials=4, max_iter=200)), ("sgd", dict(trials=3, epochs=15, batch_size=64))])
def test_separable_mixture_is_solved(solver, kw):
    Xtr, ytr, Xte, yte = mixture()
    r = linear_probe(Xtr, ytr, Xte, yte, solver=solver, seed=0, device="cpu", **kw)
    assert r["top1"] >= 99.0 and r["mean_per_class"] >= 99.0 and r["top5"] == 100.0
    assert len(r["trials"]) == kw["trials"]
    assert set(r["hparams"]) == ({"C"} if solver == "lbfgs" else {"lr", "wd"})
    space = {"C": (1e-5, 1e6), "lr": (1e-1, 1e2), "wd": (1e-12, 1e-4)}
    for t in r["trials"]:
        for k, v in t.items():
            if k in space: assert space[k][0] <= v <= space[k][1]


def test_hard_mixture_is_not_solved_and_matches_sklearn():
    """Overlapping classes: the probe is far from 100% and agrees with scikit-learn's LogisticRegression (same C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize
    Xtr, ytr, Xte, yte = mixture(spread=0.25, n_train=80, n_test=80, seed=1)
    r = linear_probe(Xtr, ytr, Xte, yte, solver="lbfgs", trials=0, C=10.0, device="cpu")
    sk = LogisticRegression(C=10.0, max_iter=2000).fit(normalize(Xtr), ytr)
    sk_top1 = 100 * (sk.predict(normalize(Xte)) == yte).mean()
    assert 20 < r["top1"] < 95
    assert abs(r["top1"] - sk_top1) <= 1.0, (r["top1"], sk_top1)


def test_trials_zero_uses_given_hyperparameters_and_is_deterministic():
    Xtr, ytr, Xte, yte = mixture(spread=0.5)
    a = linear_probe(Xtr, ytr, Xte, yte, solver="sgd", trials=0, lr=3.0, wd=1e-8, epochs=5, batch_size=64, device="cpu")
    b = linear_probe(Xtr, ytr, Xte, yte, solver="sgd", trials=0, lr=3.0, wd=1e-8, epochs=5, batch_size=64, device="cpu")
    assert a["hparams"] == {"lr": 3.0, "wd": 1e-8} and a["trials"] == []
    assert a["top1"] == b["top1"]


def test_fewshot_never_leaks_validation_or_test_into_training():
    Xtr, ytr, Xte, yte = mixture(n_train=40)
    fs = fewshot_probe(Xtr, ytr, Xte, yte, shots=(1, 2, 8), seeds=(0, 3), solver="lbfgs", trials=2, max_iter=50, device="cpu")
    for n, agg in fs["shots"].items():
        for run in agg["runs"]:
            _, val = stratified_split(ytr, 0.2, run["seed"])
            tr = np.array(run["train_idx"])
            assert not set(tr) & set(val.tolist())                      # no validation image among the shots
            assert tr.max() < len(Xtr)                                  # indices into the training set only
            assert np.all(np.bincount(ytr[tr]) == n) and run["n_train"] == n * 8
            assert run["n_test"] == len(yte)                            # the test set is only evaluated
    # the validation split is made before subsampling: the same for every N of a seed
    assert fewshot_indices(ytr, 2, 0, pool=stratified_split(ytr, 0.2, 0)[0]).tolist() == fs["shots"][2]["runs"][0]["train_idx"]


@pytest.mark.parametrize("call,msg", [
    (lambda X, y, Xt, yt: linear_probe(np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y, Xt, yt), "NaN or infinite"),
    (lambda X, y, Xt, yt: linear_probe(X, y, np.where(np.arange(Xt.size).reshape(Xt.shape) == 0, np.inf, Xt), yt), "NaN or infinite"),
    (lambda X, y, Xt, yt: linear_probe(X, y[:-3], Xt, yt), "400 feature rows but 397 labels"),
    (lambda X, y, Xt, yt: linear_probe(X[:9], np.r_[np.zeros(8, int), 1], Xt[:2], np.array([0, 1])), "class 1 has 1 training sample"),
    (lambda X, y, Xt, yt: fewshot_probe(X, y, Xt, yt, shots=(1, 64)), "N=64 shots asked for, but class 0 holds only 40"),
    (lambda X, y, Xt, yt: linear_probe(X, y, Xt, yt, solver="newton"), "solver='newton' is not one of: sgd, lbfgs"),
    (lambda X, y, Xt, yt: linear_probe(X, y, Xt, yt, precision="bfloat16"), "'bf16'"),
])
def test_bad_input_fails_before_training(call, msg, monkeypatch):
    import cogsynth.probe as P
    monkeypatch.setattr(P, "_fit", lambda *a, **k: pytest.fail("training started despite bad input"))
    import re
    with pytest.raises(CogsynthError, match=re.escape(msg)):
        call(*mixture())


# ---------------------------------------------------------------- analysis
def test_cluster_nmi_extremes_and_sklearn_agreement():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    perfect = np.eye(4, 16)[y] * 5 + rng.normal(scale=0.05, size=(120, 16))
    assert cluster_nmi(perfect, y, seeds=(0, 1))["nmi"] == pytest.approx(1.0)
    rnd = cluster_nmi(rng.normal(size=(120, 16)), y, seeds=(0, 1, 2))
    assert rnd["nmi"] < 0.1 and rnd["ci95"][0] <= rnd["nmi"] <= rnd["ci95"][1]
    X = np.eye(4, 16)[y] + rng.normal(scale=0.6, size=(120, 16))
    ours = cluster_nmi(X, y, seeds=(7,), n_init=5)["nmi"]
    ref = normalized_mutual_info_score(y, KMeans(4, n_init=5, random_state=7).fit_predict(X.astype(np.float32)))
    assert ours == pytest.approx(ref) and 0.2 < ours < 1.0


def test_knn_agreement_matches_sklearn():
    from sklearn.neighbors import KNeighborsClassifier
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 20)
    X = (np.eye(3, 8)[y] + rng.normal(scale=0.7, size=(60, 8))).astype(np.float32)
    r = knn_agreement(X, y, k="smallest")
    assert r["k"] == 19 and knn_agreement(X, y)["k"] == 20      # seed 000's default: k = images per class, self excluded
    knn = KNeighborsClassifier(r["k"] + 1).fit(X, y)
    nbrs = knn.kneighbors(X, return_distance=False)[:, 1:]          # drop each point itself
    assert r["agreement"] == pytest.approx((y[nbrs] == y[:, None]).mean(), abs=1e-6)
    loo = np.mean([KNeighborsClassifier(1).fit(np.delete(X, i, 0), np.delete(y, i)).predict(X[i:i+1])[0] == y[i] for i in range(60)])
    assert r["nn1"] == pytest.approx(loo)
    assert knn_agreement(np.eye(3, 8)[y] * 4 + rng.normal(scale=0.01, size=(60, 8)), y, k="smallest")["agreement"] == 1.0


def test_feature_stats_formulas_and_chunking():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 64)); X[:, 1] = X[:, 0] * 3; y = rng.integers(0, 4, 500)
    a, b = feature_stats(X, y, block=64), feature_stats(X, y, block=5)
    assert a["redundancy"] == pytest.approx(b["redundancy"], rel=1e-9)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert a["redundancy"] == pytest.approx(np.abs(np.corrcoef(Xn.T)).mean(), rel=1e-6)
    assert a["coding_length"] == pytest.approx(0.5 * np.linalg.slogdet(np.eye(64) + 64 / (500 * 0.5) * Xn.T @ Xn)[1], rel=1e-6)
    small = feature_stats(X[:20], y[:20])            # N < d uses the N x N Gram: same determinant
    Xs = Xn[:20]
    assert small["coding_length"] == pytest.approx(0.5 * np.linalg.slogdet(np.eye(64) + 64 / (20 * 0.5) * Xs.T @ Xs)[1], rel=1e-6)
    relu = np.maximum(X, 0)
    assert feature_stats(relu, y)["sparsity"] == pytest.approx((np.abs(relu / np.linalg.norm(relu, axis=1, keepdims=True)) < 1e-5).mean())


def test_generalization_index_picks_best_layer():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 30)
    c = rng.normal(size=(5, 12))
    layers = {f"l{i}": s * c[y] + rng.normal(size=(150, 12)) for i, s in enumerate([0.1, 3.0, 0.5])}
    r = generalization_index(layers, y, seeds=(0,), n_init=3)
    assert r["best_layer"] == "l1" and r["g"] == max(x["nmi"] for x in r["curve"])
    assert r["curve"][1]["knn"] > r["curve"][0]["knn"]
    with pytest.raises(CogsynthError, match="seen= needs y_seen="):
        generalization_index(layers, y, seen=layers)


# ---------------------------------------------------------------- features on disk
def test_features_roundtrip_cache_and_unknown_layer(tmp_path):
    import torch
    from cogsynth.models import create_encoder
    torch.manual_seed(0)
    net = create_encoder("cnn_small")
    f = extract_features(net, "digits", layers=["stem", "pre_logits"], split="test", classes="unseen", out=tmp_path, device="cpu")
    assert f["pre_logits"].X.shape == (len(f["pre_logits"].y), 128) and f["pre_logits"].X.dtype == np.float16
    entry = f["pre_logits"].path.parent
    assert feature_entries(tmp_path) == [entry]
    side = json.loads((entry/"pre_logits.json").read_text())
    assert side["schema"] == "cogsynth.features/1" and side["classes"] == ["5", "6", "7", "8", "9"] and "weights_sha256" in side
    mtime = (entry/"pre_logits.npy").stat().st_mtime_ns
    g = extract_features(net, "digits", layers=["pre_logits"], split="test", classes="unseen", out=tmp_path, device="cpu")
    assert (entry/"pre_logits.npy").stat().st_mtime_ns == mtime              # cache hit
    np.testing.assert_array_equal(g["pre_logits"].X, f["pre_logits"].X)
    with pytest.raises(CogsynthError, match=r"unknown layer\(s\) \['stages.7'\].*valid layers are \['stem', 'stages.0.0'"):
        extract_features(net, "digits", layers=["stages.7"], out=tmp_path)
    with pytest.raises(CogsynthError, match="NaN or infinite"):
        save_features(tmp_path/"bad", "x", np.full((3, 2), np.nan), [0, 1, 1], ["a", "b"])


SHARD_SCRIPT = textwrap.dedent("""
    import sys, torch
    from cogsynth.models import create_encoder, save_encoder
    from cogsynth.probe import extract_features
    import torch.distributed as dist
    out, ckpt = sys.argv[1], sys.argv[2]
    f = extract_features(ckpt, "digits", layers=["stages.1.1", "pre_logits"], split="test", classes="seen", out=out, device="cpu", batch_size=32)
    assert dist.is_initialized() and dist.get_world_size() == 2
    print("rank", dist.get_rank(), f["pre_logits"].X.shape)
""")


def test_sharded_extraction_with_torchrun_matches_single_process(tmp_path):
    import torch
    from cogsynth.models import create_encoder, save_encoder
    torch.manual_seed(0)
    ckpt = save_encoder(tmp_path/"encoder.pt", create_encoder("cnn_small"), "cnn_small", img_size=16)
    script = tmp_path/"shard.py"; script.write_text(SHARD_SCRIPT)
    torchrun = Path(sys.executable).parent/"torchrun"
    env = {**os.environ, "COGSYNTH_QUIET": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517", str(script), str(tmp_path/"sharded"), str(ckpt)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    single = extract_features(str(ckpt), "digits", layers=["stages.1.1", "pre_logits"], split="test", classes="seen", out=tmp_path/"single", device="cpu")
    for layer in ("stages.1.1", "pre_logits"):
        sh = load_features(feature_entries(tmp_path/"sharded")[0], layer)
        np.testing.assert_array_equal(sh.y, single[layer].y)
        np.testing.assert_allclose(sh.X.astype(np.float32), single[layer].X.astype(np.float32), atol=1e-2)
        assert sh.meta["key"] == single[layer].meta["key"]
    assert [p.name for p in (tmp_path/"sharded").iterdir() if p.name.startswith(".work")] == []      # the work folder was published


# ---------------------------------------------------------------- CLI
def test_cli_probe_cog_then_reuse_features(tmp_path):
    from cogsynth.cli import main
    out = tmp_path/"run"
    assert main(["probe", "--model", "cnn_small", "--random-init", "--data", "seen=digits:seen", "L1=digits:5,6,7", "--layers", "pre_logits",
                 "--protocol", "cog", "--trials", "2", "--seeds", "0", "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads((out/"cog.json").read_text())["results"][0]
    assert set(res["levels"]) == {"seen", "L1"} and (out/"cog.png").exists()
    assert res["levels"]["seen"]["top1_mean"] > 60 and res["levels"]["L1"]["top1_mean"] > 60      # chance: 20% and 33%
    assert (feature_entries(out/"features"/"L1"/"test")[0]/"pre_logits.json").exists()
    feats = str(out/"features")
    saved = lambda name, split: load_features(feature_entries(out/"features"/name/split)[0], "pre_logits")
    assert main(["probe", "--features", feats, "--data", "seen=x", "L1=x", "--protocol", "genindex", "--split", "test",
                 "--seeds", "0", "--out", str(tmp_path/"gi")]) == 0
    gi = json.loads((tmp_path/"gi"/"genindex.json").read_text())
    assert 0 <= gi["g"] <= 1 and "g_seen" in gi
    unseen, seen = saved("L1", "test"), saved("seen", "test")          # the first non-seen item is unseen, seen= the baseline
    ref = generalization_index({"pre_logits": unseen.X}, unseen.y, seen={"pre_logits": seen.X}, y_seen=seen.y, seeds=(0,))
    assert {k: gi[k] for k in ("g", "g_seen", "best_layer", "curve", "seen_curve")} == {k: ref[k] for k in ("g", "g_seen", "best_layer", "curve", "seen_curve")}
    assert main(["probe", "--features", feats, "--data", "L1=x", "--protocol", "stats", "--out", str(tmp_path/"st")]) == 0
    st = json.loads((tmp_path/"st"/"stats.json").read_text())["stats"]["L1/pre_logits"]
    assert 0 <= st["sparsity"] <= 1 and st["coding_length"] > 0
    assert st == feature_stats(saved("L1", "train").X, saved("L1", "train").y)          # --split defaults to train
    # --baseline: the earlier run's --out folder joins the table and plots (same features and seeds: same numbers)
    vs = tmp_path/"vs"
    assert main(["probe", "--features", feats, "--data", "seen=x", "L1=x", "--protocol", "cog", "--trials", "2", "--seeds", "0",
                 "--out", str(vs), "--baseline", str(out)]) == 0
    md = (vs/"cog.md").read_text()
    for lv in ("seen", "L1"):
        top1 = f"{res['levels'][lv]['top1_mean']:.2f}"
        assert f"| cnn_small | {lv} | {top1} |" in md and f"| features | {lv} | {top1} |" in md, md
    assert [r["model"] for r in json.loads((vs/"cog.json").read_text())["results"]] == ["features"]     # the baseline is not re-saved
    assert (vs/"cog.png").exists()
    assert main(["probe", "--features", feats, "--data", "seen=x", "--out", str(tmp_path/"e"), "--baseline", str(tmp_path/"gi")]) == 2
    assert main(["probe", "--features", feats, "--data", "seen=x", "--shots", "4", "--out", str(tmp_path/"e"), "--baseline", str(out)]) == 2   # no few-shot results
    assert main(["probe", "--data", "L1=x", "--out", str(tmp_path/"e")]) == 2            # neither --model nor --features
    assert main(["probe", "--model", "cnn_small", "--random-init", "--data", "seen=digits:seen", "--layers", "nope", "--out", str(tmp_path/"e")]) == 2


# ---------------------------------------------------------------- tutorials
def test_cog_probe_tutorial(run_tutorial):
    res, out = run_tutorial("cog_probe")
    assert res["smoke"] is True
    assert set(res["levels"]) == {"seen", "L1", "L2", "L3"}
    models = {r["model"] for r in res["table"]}
    assert models == {"random-init", "trained on 0-4", "pixels"}
    for r in res["table"]:
        assert 40 < r["top1"] <= 100                     # chance is 20-33%: every representation separates digits
    fs = res["results"][1]["levels"]["L1"]["fewshot"]
    assert fs["8"]["top1_mean"] >= fs["1"]["top1_mean"] - 5
    assert (out/"cog.png").exists() and (out/"fewshot.png").exists()


def test_genindex_tutorial(run_tutorial):
    res, out = run_tutorial("genindex")
    assert res["smoke"] is True
    g = res["genindex"]
    assert set(g) == {"random-init", "trained on 0-4"}
    for r in g.values():
        assert 0 < r["g"] <= 1 and r["best_layer"] in res["layers"] and len(r["curve"]) == len(res["layers"])
    trained, rnd = g["trained on 0-4"], g["random-init"]
    # training on 0-4 makes the seen classes cluster (smoke run: 0.94 vs 0.45) and helps the unseen ones (0.49 vs 0.29)
    assert trained["g_seen"] > rnd["g_seen"] + 0.2, (trained["g_seen"], rnd["g_seen"])
    assert trained["g"] > rnd["g"] + 0.05, (trained["g"], rnd["g"])
    # genindex_checkpoints on the first and last checkpoint agrees with the direct computation on the same encoders
    ot = res["over_training"]
    assert [ot[k]["g"] for k in (min(ot, key=int), max(ot, key=int))] == pytest.approx([rnd["g"], trained["g"]], abs=1e-6)
    assert (out/"genindex_layers.png").exists() and (out/"g_over_training.png").exists()
