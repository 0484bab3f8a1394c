"""Every registered recipe, augmentation, head, scheduler and dataset trains; a recipe, augmentation and head registered from user code
reach the CLI; the run identity (refuse / extend / replace, the deprecated accept_changes); torn checkpoints; the CLI explains itself."""
import argparse, contextlib, io, json

import pytest
import torch

from cogsynth.core import CogsynthError
from cogsynth.runs import IdentityChanged
from cogsynth.data import dataset_entry, list_datasets
from cogsynth.models import HEADS
from cogsynth.train import AUGMENTATIONS, RECIPES, SCHEDULES, get_recipe, read_metrics, register_recipe, train

torch.set_num_threads(1)
TINY = dict(epochs=1, steps_per_epoch=2, batch_size=16, projector_hidden=16, projector_out=8, memory_size=32, n_local=1,
            ema_momentum=0.9, warmup_epochs=0, device="cpu")

@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    out = tmp_path_factory.mktemp("enc")/"run"
    train("digits:0,1,2", "cnn_small", "torch", out_dir=out, **TINY)
    return out/"encoder.pt"

@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_trains(recipe, tmp_path, encoder):
    weights = encoder if get_recipe(recipe)["weights_required"] else None
    ms = train("digits:0,1,2", "cnn_small", recipe, out_dir=tmp_path/recipe, weights=weights, **TINY)
    assert len(ms) == 1 and ms[0]["step"] == 2 and ms[0]["val_top1"] is not None and torch.isfinite(torch.tensor(ms[0]["loss"]))
    assert (tmp_path/recipe/"encoder.pt").exists()

@pytest.mark.parametrize("augment", list(AUGMENTATIONS))
def test_every_augmentation_builds_its_transform(augment):
    from PIL import Image
    t = AUGMENTATIONS[augment](get_recipe("torch", augment=augment, n_local=2), 32, None)
    out = t(Image.new("RGB", (40, 40), (200, 10, 10)))
    crops = out if isinstance(out, (list, tuple)) else [out]
    assert crops[0].shape == (3, 32, 32) and crops[0].dtype == torch.uint8 and (len(crops) == 3) == augment.startswith("multicrop")
    assert AUGMENTATIONS.doc(augment)

@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_trains(head, tmp_path):
    ms = train("digits:0,1,2", "cnn_small", "torch", out_dir=tmp_path/head, head=head, projector_layers=1, **TINY)
    assert len(ms) == 1 and torch.isfinite(torch.tensor(ms[0]["loss"]))
    assert (tmp_path/head/"classifier.pt").exists() and HEADS.doc(head)

def test_user_registered_recipe_augmentation_and_head_reach_the_cli(tmp_path):
    "Registered from user code after import: --recipe's choices are built with the parser, and train has no special case for a head."
    from cogsynth.cli import main
    from cogsynth.models import HeadEntry
    import torch.nn as nn
    calls = {"hook": 0, "aug": 0}
    def aug(r, img_size, mean):
        calls["aug"] += 1; return AUGMENTATIONS["none"](r, img_size, mean)
    def hook(net, s):
        def run(crops, y, new_step=True): calls["hook"] += 1
        return run
    AUGMENTATIONS.register("test-plain", aug, doc="the eval transform (a test)", replace=True)
    HEADS.register("test-linear", HeadEntry(lambda d, c, s: nn.Linear(d, c), shape=("temperature",), hook=hook), doc="a test head", replace=True)
    register_recipe("test-recipe", "a recipe of the test", augment="test-plain", head="test-linear", schedule="constant")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", "--data", "digits:0,1", "--recipe", "test-recipe", "--out", str(tmp_path/"p"), "--epochs", "1", "--workers", "0",
                         "--device", "cpu", "--batch-size", "16", "--set", "steps_per_epoch=2"]) == 0
        assert calls["aug"] == 1 and calls["hook"] == 2
        assert "test-recipe" in _parser().format_help()
        # the head's declared shape setting cannot change in the folder, not even with extend
        msg = main_err(main, ["train", "--data", "digits:0,1", "--recipe", "test-recipe", "--out", str(tmp_path/"p"), "--epochs", "2", "--workers", "0",
                              "--device", "cpu", "--batch-size", "16", "--set", "steps_per_epoch=2", "--resume", "--on-change", "extend", "--set", "temperature=0.5"])
        assert "--set temperature=0.1 -> 0.5" in msg and "cannot change in one folder" in msg
    finally:
        for reg, name in ((RECIPES, "test-recipe"), (AUGMENTATIONS, "test-plain"), (HEADS, "test-linear")): reg._entries.pop(name, None)

@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_scheduler_trains(schedule, tmp_path):
    ms = train("digits:0,1", "cnn_small", "torch", out_dir=tmp_path/schedule, schedule=schedule, **dict(TINY, epochs=2))
    assert [m["step"] for m in ms] == [2, 4]
    lr0 = get_recipe("torch")["lr"] * 16 / 256
    assert (ms[-1]["lr"] == pytest.approx(lr0)) == (schedule != "cosine")   # cosine decays to 0; step (30 epochs) and constant do not

@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_trains_with_its_defaults(name, tmp_path):
    d = dataset_entry(name).defaults
    ms = train(name, out_dir=tmp_path/name, epochs=1, steps_per_epoch=2, device="cpu")
    cfg = json.loads((tmp_path/name/"config.json").read_text())
    assert cfg["model"] == d.get("model", "resnet50") and cfg["hparams"]["batch_size"] == d.get("batch_size", 256)
    assert cfg["hparams"]["img_size"] == d.get("img_size", 224) and cfg["hparams"]["flip"] == d.get("flip", 0.5)
    assert (ms[0]["val_top1"] is not None) == ("val_split" in d)

def test_digits_defaults_reach_85_percent_in_4_epochs(tmp_path):
    "Issue 13: with ImageNet's batch of 256, `cogsynth train --data digits --epochs 4` reached 29%."
    from cogsynth.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--data", "digits", "--epochs", "4", "--out", str(tmp_path/"d"), "--workers", "0", "--device", "cpu"]) == 0
    assert read_metrics(tmp_path/"d")[-1]["val_top1"] >= 85

def test_classes_as_an_explicit_list(tmp_path):
    from cogsynth.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--data", "digits", "--classes", "0,1,2", "--epochs", "1", "--set", "steps_per_epoch=1",
                     "--out", str(tmp_path/"c"), "--workers", "0", "--device", "cpu"]) == 0
    assert json.loads((tmp_path/"c"/"config.json").read_text())["classes"] == ["0", "1", "2"]
    with pytest.raises(CogsynthError, match="dataset spec 'digits:7,8,x'"): train("digits:7,8,x", out_dir=tmp_path/"x")

@pytest.fixture
def half_run(tmp_path):
    kw = dict(epochs=2, batch_size=32, lr=0.2, steps_per_epoch=3, device="cpu")
    train("digits:0,1,2", "cnn_small", "torch", out_dir=tmp_path/"r", stop_after=1, **kw)
    return tmp_path/"r", kw

def test_resume_with_changed_settings_is_refused(half_run):
    out, kw = half_run
    for change, named in [(dict(lr=0.5), "lr=0.2 -> 0.5"), (dict(batch_size=16), "batch_size=32 -> 16"), (dict(seed=3), "seed=0 -> 3"),
                          (dict(weight_decay=0.1), "weight_decay=0.0001 -> 0.1"), (dict(precision="fp32"), "precision='auto' -> 'fp32'")]:
        with pytest.raises(IdentityChanged, match="holds a training run of other settings: " + named):
            train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, **dict(kw, **change))
    with pytest.raises(IdentityChanged, match="head='linear' -> 'cosine'. These cannot change in one folder"):
        train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, on_change="extend", head="cosine", **kw)
    assert len(read_metrics(out)) == 1   # nothing ran
    ms = train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, **dict(kw, epochs=3))   # only epochs may change
    assert len(ms) == 3

def test_a_folder_whose_classes_changed_is_another_run(tmp_path):
    "The classes are part of the run identity, fixed even with extend (compared once the data is read)."
    from cogsynth.data import write_digits_folder
    data = write_digits_folder(tmp_path/"d", "train", [0, 1])
    kw = dict(epochs=2, batch_size=16, steps_per_epoch=2, img_size=16, device="cpu")
    train(str(data), "cnn_small", "torch", out_dir=tmp_path/"r", stop_after=1, **kw)
    write_digits_folder(data, "train", [2])                 # the folder gains a class
    with pytest.raises(IdentityChanged, match=r"classes=\['0', '1'\] -> \['0', '1', '2'\]. These cannot change in one folder"):
        train(str(data), "cnn_small", "torch", out_dir=tmp_path/"r", resume=True, on_change="extend", **kw)
    assert len(train(str(data), "cnn_small", "torch", out_dir=tmp_path/"r", resume=True, on_change="replace", **kw)) == 2
    assert (tmp_path/"r"/"last.pt.replaced-1").exists()

def test_extended_changes_run_and_are_recorded(half_run):
    out, kw = half_run
    ms = train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, on_change="extend", **dict(kw, lr=0.5, batch_size=16, seed=3))
    cfg, ckpt = json.loads((out/"config.json").read_text()), torch.load(out/"last.pt", weights_only=True)
    assert cfg["lr"] == 0.5 * 16 / 256 and cfg["seed"] == 3 and cfg["hparams"]["batch_size"] == 16 and cfg["per_step_batch"] == 16
    assert [g["initial_lr"] for g in ckpt["optimizer"]["param_groups"]] == [cfg["lr"]] * 2     # the optimizer ran at the recorded lr
    assert ms[1]["lr"] == pytest.approx(cfg["lr"]) and ms[0]["lr"] == pytest.approx(0.2 * 32 / 256)  # the torch recipe's step schedule holds the lr
    assert cfg["resumed"] == [{"at_epoch": 1, "changed": {"lr": [0.2, 0.5], "batch_size": [32, 16], "seed": [0, 3]}}]

def test_accept_changes_is_a_deprecated_alias_of_extend(half_run):
    out, kw = half_run
    with pytest.warns(FutureWarning, match="accept_changes=True is deprecated .* use on_change='extend'"):
        ms = train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, accept_changes=True, **dict(kw, lr=0.5))
    assert len(ms) == 2 and json.loads((out/"config.json").read_text())["resumed"][0]["changed"] == {"lr": [0.2, 0.5]}
    from cogsynth.cli import main
    e = io.StringIO()
    with contextlib.redirect_stderr(e), contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--data", "digits:0,1,2", "--out", str(out), "--resume", "--accept-changes", "--lr", "0.4", "--batch-size", "32",
                     "--epochs", "3", "--set", "steps_per_epoch=3", "--workers", "0", "--device", "cpu"]) == 0
    assert "--accept-changes is deprecated" in e.getvalue() and len(read_metrics(out)) == 3

def test_replace_sets_the_old_run_aside(half_run):
    out, kw = half_run
    before = (out/"last.pt").read_bytes()
    with pytest.raises(CogsynthError, match="already exists: pass resume=True"): train("digits:0,1,2", "cnn_small", "torch", out_dir=out, **kw)
    ms = train("digits:0,1,2", "cnn_small", "torch", out_dir=out, on_change="replace", **dict(kw, lr=0.3))
    assert len(ms) == 2 and (out/"last.pt.replaced-1").read_bytes() == before and (out/"metrics.jsonl.replaced-1").exists()
    # with resume, replace continues a run of the same settings and sets aside one of other settings
    assert len(train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, on_change="replace", **dict(kw, lr=0.3, epochs=3))) == 3
    ms = train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, on_change="replace", **dict(kw, lr=0.1))
    assert len(ms) == 2 and (out/"last.pt.replaced-2").exists() and json.loads((out/"config.json").read_text())["hparams"]["lr"] == 0.1

def test_truncated_checkpoint_is_named(half_run):
    out, kw = half_run
    blob = (out/"last.pt").read_bytes()
    for cut in (len(blob) // 2, 10, 0):
        (out/"last.pt").write_bytes(blob[:cut])
        with pytest.raises(CogsynthError, match=r"last.pt' is unreadable .*: it is truncated or corrupt. Put back a good copy, or move it away"):
            train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, **kw)

def _parser():
    from cogsynth.cli import build_parser
    return build_parser("train").subcommands["train"]

def test_every_cli_option_has_help_and_shows_its_default():
    p = _parser()
    help_text = p.format_help()
    for a in p._actions:
        if a.dest == "help" or a.help == argparse.SUPPRESS: continue
        assert a.help, f"{a.option_strings} has no help"
        shown = p.formatter_class("x")._get_help_string(a)
        assert "default" in shown.lower() or a.required, f"{a.option_strings} does not show its default: {shown!r}"
    assert "--on-change" in help_text and "--precision" in help_text and "--accept-changes" not in help_text   # a hidden alias
    recipe = next(a for a in p._actions if "--recipe" in a.option_strings)
    assert recipe.choices == list(RECIPES) and recipe.help == f"training recipe: {RECIPES.help()}"   # from the registry
    settings = next(a for a in p._actions if "--set" in a.option_strings).help
    assert AUGMENTATIONS.help() in settings and HEADS.help() in settings

def test_cli_errors_name_flags(tmp_path):
    from cogsynth.cli import main
    base = ["train", "--data", "digits:0,1", "--out", str(tmp_path/"c"), "--workers", "0", "--device", "cpu", "--batch-size", "16",
            "--set", "steps_per_epoch=1", "--epochs", "1"]
    with contextlib.redirect_stdout(io.StringIO()): assert main(base) == 0
    def err(*extra):
        e = io.StringIO()
        with contextlib.redirect_stderr(e): assert main(base + list(extra)) == 2
        return e.getvalue()
    again = err()
    assert "pass --resume to continue it" in again and "another --out=" in again and "resume=True" not in again
    changed = err("--resume", "--lr", "0.5", "--batch-size", "8", "--seed", "3")
    assert "--lr=0.1 -> 0.5" in changed and "--batch-size=16 -> 8" in changed and "--seed=0 -> 3" in changed and "--on-change='extend'" in changed
    assert "on_change" not in changed and "batch_size" not in changed
    shape = err("--resume", "--on-change", "extend", "--set", "head=cosine")
    assert "--set head='linear' -> 'cosine'" in shape and "--on-change='replace'" in shape
    assert "--batch-size=4096" in main_err(main, ["train", "--data", "digits", "--out", str(tmp_path/"b"), "--batch-size", "4096", "--device", "cpu"])
    from cogsynth import train as train_module
    assert not hasattr(train_module, "_cli_message")   # one place names flags: cogsynth.cli.name_flags

def main_err(main, argv):
    e = io.StringIO()
    with contextlib.redirect_stderr(e): assert main(argv) == 2
    return e.getvalue()
