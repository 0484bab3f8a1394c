"""Training on digits: learning, exact resume, mixing ratios, 2-process DDP, bad input (cogsynth.train/data/models)."""
import json, math, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cogsynth.core import CogsynthError
from cogsynth.data import EpochSampler, ImageFolderDataset, MixedDataset, make_dataset, parse_mix, write_digits_folder
from cogsynth.models import load_encoder
from cogsynth.train import build_data, read_metrics, train

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = {"epoch", "loss", "lr", "val_top1", "images_per_s"}
torch.set_num_threads(1)

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")/"torch"
    ms = train("digits", "cnn_small", "torch", epochs=3, out_dir=out, classes="seen", batch_size=64, lr=0.2, schedule="cosine", device="cpu")
    return ms, out

def test_loss_falls_and_accuracy_well_above_chance(digits_run):
    ms, out = digits_run
    assert ms[-1]["loss"] < 0.6 * ms[0]["loss"]
    assert ms[-1]["val_top1"] > 60, "5 classes: chance is 20%"
    assert [json.loads(l) for l in (out/"metrics.jsonl").read_text().splitlines()] == ms
    assert LAYOUT <= set(ms[0])

def test_encoder_file_is_the_models_contract(digits_run):
    _, out = digits_run
    obj = torch.load(out/"encoder.pt", weights_only=True)
    assert {"model_name", "state_dict", "feature_dim", "layers", "in_chans", "img_size", "classes"} <= set(obj)
    enc, meta = load_encoder(out/"encoder.pt")
    assert enc(torch.zeros(2, 3, 16, 16)).shape == (2, meta["feature_dim"])
    assert (out/"curves.png").stat().st_size > 1000

def test_resume_reproduces_uninterrupted_run(tmp_path):
    kw = dict(epochs=3, classes="seen", batch_size=32, steps_per_epoch=4, lr=1e-3, weight_decay=0.05, device="cpu")
    full = train("digits", "cnn_small", "mazsc", out_dir=tmp_path/"full", **kw)
    train("digits", "cnn_small", "mazsc", out_dir=tmp_path/"cut", stop_after=2, **kw)
    assert len(read_metrics(tmp_path/"cut")) == 2 and not (tmp_path/"cut"/"encoder.pt").exists()
    resumed = train("digits", "cnn_small", "mazsc", out_dir=tmp_path/"cut", resume=True, **kw)
    keys = ("epoch", "loss", "lr", "val_top1", "train_top1", "step")
    assert [{k: m[k] for k in keys} for m in resumed] == [{k: m[k] for k in keys} for m in full]
    a, b = (torch.load(tmp_path/d/"last.pt", weights_only=True)["model"] for d in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)

def test_mix_respects_ratio(tmp_path):
    a = write_digits_folder(tmp_path/"real", "train", "seen")
    b = write_digits_folder(tmp_path/"syn", "test", [2, 3, 4])   # fewer images and classes than `real`, not its first ones
    ds, shares = make_dataset(f"{a},{b}:0.3")
    assert shares == [0.7, 0.3] and ds.classes == ["0", "1", "2", "3", "4"]
    real, syn = ImageFolderDataset(a), ImageFolderDataset(b)
    names = [real.classes[t] for t in real.targets] + [syn.classes[t] for t in syn.targets]   # each image's class name
    for epoch in range(3):
        s = EpochSampler(ds.sizes, shares, num_samples=1000, seed=5); s.set_epoch(epoch)
        idx = np.array(list(s))
        assert (idx >= ds.offsets[1]).mean() == pytest.approx(0.3, abs=1e-9)
        # every drawn image keeps its class: syn's label 0 ("2") must become the union's label 2, not 0
        assert [ds.classes[ds.targets[i]] for i in idx] == [names[i] for i in idx]
        assert {names[i] for i in idx[idx >= ds.offsets[1]]} == {"2", "3", "4"}
    # __getitem__ agrees with .targets on the second folder
    assert [ds.classes[ds[ds.offsets[1] + j][1]] for j in range(len(syn))] == [syn.classes[t] for t in syn.targets]
    # the validation folder's labels index the training classes too
    _, val, train_names, _ = build_data(f"{a},{b}:0.3", val_data=str(b), img_size=16)
    assert train_names == val.classes == ds.classes
    assert [val.classes[val[j][1]] for j in range(0, len(syn), 10)] == [syn.classes[t] for t in syn.targets[::10]]
    ms = train(f"{a},{b}:0.3", "cnn_small", "torch", epochs=1, out_dir=tmp_path/"mix", img_size=16, batch_size=32,
               steps_per_epoch=2, device="cpu", val_data=str(b))
    cfg = json.loads((tmp_path/"mix"/"config.json").read_text())
    assert cfg["shares"] == [0.7, 0.3] and ms[0]["val_top1"] is not None

def test_ddp_two_processes_same_metrics_layout(tmp_path, digits_run):
    script = tmp_path/"run.py"
    script.write_text("import sys\nfrom cogsynth.cli import main\nsys.exit(main())\n")
    torchrun = Path(sys.executable).parent/"torchrun"
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-port", str(29500 + os.getpid() % 1000), str(script), "train",
           "--data", "digits", "--classes", "seen", "--epochs", "2", "--out", str(tmp_path/"ddp"), "--workers", "0",
           "--batch-size", "64", "--device", "cpu", "--recipe", "trex", "--set", "steps_per_epoch=3",
           "--set", "memory_size=128", "--set", "projector_hidden=32", "--set", "projector_out=16", "--set", "n_local=1",
           "--set", "ema_momentum=0.9", "--set", "warmup_epochs=0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "COGSYNTH_QUIET": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    ms = read_metrics(tmp_path/"ddp")
    assert len(ms) == 2 and set(ms[0]) == set(digits_run[0][0])
    # both ranks trained: 3 steps of the global batch of 64 (32 a rank, summed over ranks) an epoch
    assert [m["epoch"] for m in ms] == [1, 2] and [m["step"] for m in ms] == [3, 6]
    assert [round(m["images_per_s"] * m["time_s"]) for m in ms] == [3 * 64, 3 * 64]
    assert all(math.isfinite(m["loss"]) and m["val_top1"] is not None for m in ms)
    assert json.loads((tmp_path/"ddp"/"config.json").read_text())["world_size"] == 2
    assert (tmp_path/"ddp"/"encoder.pt").exists() and (tmp_path/"ddp"/"classifier.pt").exists()
    # OCM gathers both ranks' embeddings before each update (naver/trex Memory.update): 64 rows a step into a memory of 128,
    # so the pointer is back at 0 after 6 steps (without the gather it would be at 6 x 32 % 128 = 64)
    assert int(torch.load(tmp_path/"ddp"/"last.pt", weights_only=True)["model"]["head.ptr"]) == 0

def test_unseen_digits_train_with_their_own_labels(tmp_path):
    ms = train("digits", "cnn_small", "torch", epochs=2, out_dir=tmp_path/"u", classes="unseen", batch_size=32, lr=0.2,
               schedule="cosine", device="cpu")
    assert json.loads((tmp_path/"u"/"config.json").read_text())["classes"] == ["5", "6", "7", "8", "9"]
    # labels 0-4 stand for digits 5-9 in training and validation alike: about 94% here (seeds 0-2), chance is 20%
    assert ms[-1]["val_top1"] > 60

def test_bad_input_fails_before_training(tmp_path, digits_run):
    _, out = digits_run
    (tmp_path/"empty"/"cat").mkdir(parents=True)
    with pytest.raises(CogsynthError, match="no images found"): train(str(tmp_path/"empty"), "cnn_small", out_dir=tmp_path/"o1")
    tr = write_digits_folder(tmp_path/"tr", "train", [0, 1]); te = write_digits_folder(tmp_path/"te", "test", [0, 1, 2])
    with pytest.raises(CogsynthError, match="not among the 2 given classes"): train(str(tr), "cnn_small", val_data=str(te), img_size=16, out_dir=tmp_path/"o2")
    for spec, msg in [(f"{tr}:0.7,{te}:0.7", "sum to 1.4"), (f"{tr},{te}:1.5", r"not in \(0, 1\]"), (f"{tr},{te}:abc", "bad share")]:
        with pytest.raises(CogsynthError, match=msg): parse_mix(spec)
    with pytest.raises(CogsynthError, match="unknown model"): train("digits", "resnet_5O", out_dir=tmp_path/"o3")
    with pytest.raises(CogsynthError, match="recipe='simclr' is not one of"): train("digits", "cnn_small", "simclr", out_dir=tmp_path/"o4")
    with pytest.raises(CogsynthError, match="model='cnn_small' -> 'cnn_base'. These cannot change in one folder"):
        train("digits", "cnn_base", "torch", epochs=3, out_dir=out, resume=True)
    with pytest.raises(CogsynthError, match="another architecture"): train("digits", "resnet18", "finetune", weights=out/"encoder.pt", out_dir=tmp_path/"o5")
    assert not any((tmp_path/d).exists() and any((tmp_path/d).glob("*.pt")) for d in ("o1", "o2", "o3", "o4", "o5"))

def test_tutorial_trains_and_resumes(run_tutorial):
    res, out = run_tutorial("train")
    assert res["smoke"] is True and res["resume_exact"] is True
    assert [r["recipe"] for r in res["table"]] == ["torch", "mazsc", "trex"]
    assert all(Path(p).exists() for p in res["encoders"].values())
    assert (out/"curves.png").exists()
