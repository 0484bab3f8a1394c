"""Issue 23 (the CoG probe protocol) and issue 22 (one settings object, registries, one on-change policy): naver/cog's
rules, each pinned on a small input computed by hand or by the reference's own loop. Each test failed on the tree
before (zeros init, per-step schedule, no bias decay, univariate TPE, rounded split, seeds 0-4, bf16 'auto', L-BFGS
defaults, a dict of protocols)."""
import json, math, warnings
from pathlib import Path

import numpy as np
import pytest

from cogsynth.core import CogsynthError, Registry


def gaussians(seed, n=30, dim=12, classes=4, spread=1.0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(classes, dim)) * spread
    y = np.repeat(np.arange(classes), n)
    return (c[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


# ---------------------------------------------------------------- the SGD fit, rule by rule
def test_learning_rate_is_stepped_once_per_epoch_as_naver_cog():
    from cogsynth.solvers import sgd_schedule
    # logreg.py: train epoch e, then lr = lr0 * (1 + cos(pi e / E)) / 2: epochs 0 and 1 at lr0, epoch e at the factor of e-1
    assert np.allclose(sgd_schedule(4, 1), [1.0, 1.0, 0.8535533905932737, 0.5])
    assert np.allclose(sgd_schedule(4, 3), np.repeat([1.0, 1.0, 0.8535533905932737, 0.5], 3))   # constant within an epoch


def test_sgd_fit_is_naver_cogs_loop_step_for_step():
    import torch
    from cogsynth.solvers import batch_order, init_linear, sgd_fit
    g = torch.Generator().manual_seed(1)
    X = torch.nn.functional.normalize(torch.randn(200, 10, generator=g), dim=1); y = torch.randint(0, 4, (200,), generator=g)
    W0, b0 = init_linear(10, 4, seed=5)
    lr, wd, epochs, bs, seed = 3.0, 1e-2, 5, 48, 11
    model = torch.nn.Linear(10, 4)
    with torch.no_grad(): model.weight.copy_(W0.T); model.bias.copy_(b0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)     # every parameter decayed, bias too
    batches, spe = list(batch_order(200, bs, epochs, seed)), math.ceil(200 / bs)
    for epoch in range(epochs):
        for idx in batches[epoch * spe:(epoch + 1) * spe]:
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx]); opt.zero_grad(); loss.backward(); opt.step()
        for group in opt.param_groups: group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    W, b = sgd_fit(X, y, 4, [lr], [wd], epochs=epochs, batch_size=bs, seed=seed, init=(W0, b0))
    assert torch.allclose(W[0], model.weight.detach().T, atol=1e-5) and torch.allclose(b[0], model.bias.detach(), atol=1e-5)


def test_weight_decay_reaches_the_bias():
    import torch
    from cogsynth.solvers import sgd_fit
    X, y = torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])               # zero features: only the bias learns
    one = dict(epochs=1, batch_size=4, momentum=0.0, init=(torch.zeros(3, 2), torch.tensor([1.0, -1.0])))
    p0 = 1 / (1 + math.exp(-2))                                         # softmax of (1, -1)
    b = sgd_fit(X, y, 2, [1.0], [0.5], **one)[1][0]
    assert np.allclose(b.numpy(), [1 - (p0 - 0.5) - 0.5, -1 + (p0 - 0.5) + 0.5], atol=1e-6)     # (0.1192, -0.1192)
    b = sgd_fit(X, y, 2, [1.0], [0.5], decay_bias=False, **one)[1][0]
    assert np.allclose(b.numpy(), [1 - (p0 - 0.5), -1 + (p0 - 0.5)], atol=1e-6)                 # the option: (0.6192, -0.6192)


def test_the_linear_layer_starts_from_pytorchs_default_init():
    import torch
    from cogsynth.solvers import init_linear, sgd_fit
    X, y = torch.nn.functional.normalize(torch.randn(50, 400), dim=1), torch.arange(50) % 25
    W, b = sgd_fit(X, y, 25, [0.0], [0.0], epochs=1, seed=22)          # rate 0: the initial weights come back
    bound = 1 / math.sqrt(400)
    assert W.abs().max() <= bound and b.abs().max() <= bound and W.abs().max() > 0.9 * bound
    assert abs(W.std().item() - bound / math.sqrt(3)) < 2e-3 and abs(W.mean().item()) < 2e-3     # uniform in +-1/sqrt(D)
    assert torch.equal(W[0], init_linear(400, 25, seed=22)[0])
    assert sgd_fit(X, y, 25, [0.0], [0.0], epochs=1, init="zeros")[0].abs().sum() == 0            # the option


# ---------------------------------------------------------------- the search and the split
def test_validation_images_per_class_are_rounded_down():
    from cogsynth.probe import stratified_split
    y = np.repeat(np.arange(3), 14)
    assert np.bincount(y[stratified_split(y, 0.2, 22)[1]]).tolist() == [2, 2, 2]                  # int(14 * 0.2) = 2
    assert np.bincount(y[stratified_split(y, 0.2, 22, rounding="round")[1]]).tolist() == [3, 3, 3]
    y3 = np.repeat(np.arange(2), 3)
    assert np.bincount(y3[stratified_split(y3, 0.2, 0)[1]]).tolist() == [1, 1]                      # int(0.6) = 0: at least one


@pytest.mark.parametrize("multivariate", [True, False])
def test_the_search_is_optunas_tpe_as_naver_cog_seeds_it(multivariate):
    import optuna
    from cogsynth.probe import linear_probe
    X, y = gaussians(0, spread=0.6)
    r = linear_probe(X, y, X, y, trials=14, epochs=2, seed=37, multivariate=multivariate, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        def replay(mv):
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=37, multivariate=mv))
            asked = []
            for t in r["trials"]:
                trial = study.ask()
                asked.append({k: trial.suggest_float(k, *rng, log=True) for k, rng in (("lr", (0.1, 100.0)), ("wd", (1e-12, 1e-4)))})
                study.tell(trial, t["val_top1"])
            return asked
        got = [{k: t[k] for k in ("lr", "wd")} for t in r["trials"]]
        assert got == replay(multivariate)
        assert got != replay(not multivariate)           # the two samplers part after the 10 random start-up trials


# ---------------------------------------------------------------- one default, in one place, recorded
def test_the_defaults_are_naver_cogs_in_one_object():
    from cogsynth.probe import COG_SEEDS, ProbeSettings
    from cogsynth.solvers import SOLVERS
    s = ProbeSettings()
    assert (s.solver, s.trials, s.val_frac, s.val_rounding, s.multivariate, s.parallel_trials, s.normalize, s.precision) == \
           ("sgd", 30, 0.2, "floor", True, 1, True, "fp32")
    assert s.options == dict(epochs=100, batch_size=1024, momentum=0.9, schedule="epoch", init="torch", decay_bias=True)
    assert SOLVERS["sgd"].space == {"lr": (1e-1, 1e2), "wd": (1e-12, 1e-4)} and COG_SEEDS == (22, 37, 45, 77, 93)
    assert isinstance(SOLVERS, Registry)


def test_every_entry_point_probes_with_the_same_defaults(tmp_path):
    import inspect
    from cogsynth import cog, probe, protocols
    from cogsynth.probe import COG_SEEDS
    for fn in (probe.fewshot_probe, cog.cog_benchmark, protocols.cog_protocol, protocols.fewshot_protocol):
        assert inspect.signature(fn).parameters["seeds"].default == COG_SEEDS, fn
    for fn in (probe.linear_probe, probe.fewshot_probe, cog.cog_benchmark, protocols.cog_protocol):
        p = inspect.signature(fn).parameters
        assert p["settings"].default is None and not {"solver", "trials", "precision", "epochs"} & set(p), fn   # no second default
    X, y = gaussians(0)
    r = probe.linear_probe(X, y, X, y, trials=0, device="cpu")
    assert r["precision"] == "fp32" and r["solver"] == "sgd" and r["settings"]["differs_from_naver_cog"] == ["trials=30 -> 0"]


def test_cli_cog_defaults_to_naver_cogs_protocol_and_records_it(tmp_path):
    from cogsynth.cli import main
    out = tmp_path/"run"
    assert main(["probe", "--model", "cnn_small", "--random-init", "--data", "L1=digits:5,6,7", "--trials", "0",
                 "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads((out/"cog.json").read_text())["results"][0]
    assert res["seeds"] == [22, 37, 45, 77, 93] and res["solver"] == "sgd"
    s = res["settings"]
    assert s["differs_from_naver_cog"] == ["trials=30 -> 0"] and s["precision"] == "fp32" and s["multivariate"] is True
    assert s["options"]["schedule"] == "epoch" and s["options"]["init"] == "torch" and s["options"]["decay_bias"] is True
    assert s["search_space"] == {"lr": [0.1, 100.0], "wd": [1e-12, 0.0001]} and s["val_rounding"] == "floor"
    run = json.loads((out/"cnn_small"/"L1"/"seed22.json").read_text())
    assert run["identity"]["probe"]["options"] == s["options"] and run["settings"]["precision"] == "fp32"


def test_lbfgs_stays_available_and_settings_of_another_solver_are_named():
    from cogsynth.probe import as_settings, linear_probe
    X, y = gaussians(0)
    assert linear_probe(X, y, X, y, solver="lbfgs", trials=0, C=10.0, device="cpu")["hparams"] == {"C": 10.0}
    with pytest.raises(CogsynthError, match="it belongs to solver='lbfgs'"): as_settings(max_iter=10)
    with pytest.raises(CogsynthError, match=r"unknown probe setting\(s\) \['epoch'\]"): as_settings(epoch=3)


# ---------------------------------------------------------------- registries and the on-change policy
def test_protocols_are_a_registry_and_the_cli_lists_new_ones():
    from cogsynth import protocols
    from cogsynth.cli import build_parser
    assert isinstance(protocols.PROTOCOLS, Registry)
    @protocols.register_protocol("count-rows", splits=None)
    def count_rows(features, *, out, model="model", split="train"):
        "Rows per data item."
        return {"message": "ok"}
    try:
        sub = build_parser("probe").subcommands["probe"]
        act = sub._option_string_actions["--protocol"]
        assert "count-rows" in act.choices and "count-rows" in act.help
        assert protocols.get_protocol("count-rows").fn is count_rows and protocols.list_protocols("count*") == ["count-rows"]
    finally:
        protocols.PROTOCOLS._entries.pop("count-rows"); protocols.PROTOCOLS._docs.pop("count-rows")


def test_cli_on_change_refuses_by_default_and_takes_the_old_words(tmp_path, capsys):
    from cogsynth.cli import main
    base = ["probe", "--model", "cnn_small", "--random-init", "--data", "L1=digits:5,6", "--seeds", "22", "--device", "cpu",
            "--out", str(tmp_path/"run")]
    assert main([*base, "--trials", "0"]) == 0
    assert main([*base, "--trials", "2"]) == 2                      # other settings: refused, each difference named
    err = capsys.readouterr().err
    assert "trials=0 -> 2" in err and "--on-change='replace'" in err
    with pytest.warns(FutureWarning, match="on_change='replace'"):
        assert main([*base, "--trials", "2", "--on-change", "rerun"]) == 0
    assert (tmp_path/"run"/"cnn_small"/"L1"/"seed22.json.replaced-1").exists()
