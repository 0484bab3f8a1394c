"""Training fails clearly and leaves its folder as it was (issues 24 and 27): one writer a folder, a diverging loss, a full disk,
and bad values from the command line refused before any data is read."""
import contextlib, errno, io, os, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from cogsynth.cli import main
from cogsynth.core import CogsynthError
from cogsynth.models import HEADS, HeadEntry
from cogsynth.train import load_checkpoint, read_metrics, train

torch.set_num_threads(1)
QUICK = ["--data", "digits:0,1,2", "--epochs", "2", "--workers", "0", "--device", "cpu", "--batch-size", "16", "--set", "steps_per_epoch=2"]

def cli(*argv):
    "(exit status, stderr) of `cogsynth train ARGV`."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): rc = main(["train", *argv])
    return rc, err.getvalue()

def test_second_writer_into_one_folder_is_refused_at_once_naming_the_holder(tmp_path):
    "Issue 24.3: two `cogsynth train` into one --out both succeeded and mixed their files."
    out = tmp_path/"run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cogsynth.runs import folder_lock\n"
                               f"with folder_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(120)\n"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.time()
        rc, err = cli(*QUICK, "--out", str(out))
        assert rc == 2 and time.time() - t0 < 60
        assert f"by process {holder.pid}" in err and "another process is writing the training run" in err, err
        assert not (out/"config.json").exists() and not (out/"last.pt").exists()
    finally:
        holder.kill(); holder.wait()
    assert cli(*QUICK, "--out", str(out))[0] == 0      # free again once the holder is gone

def test_diverging_loss_from_the_cli_stops_naming_epoch_and_step(tmp_path):
    "Issue 24.7: --lr 1e6 ran to the end with rc 0, NaN metrics and a non-finite encoder.pt."
    rc, err = cli("--data", "digits:0,1,2", "--epochs", "3", "--workers", "0", "--device", "cpu", "--out", str(tmp_path/"nan"),
                  "--lr", "1e6", "--set", "steps_per_epoch=8")
    assert rc == 2 and "training diverged" in err and "at epoch 1, step" in err, err
    assert "--lr=1000000.0 now, try --lr=100000" in err and "No checkpoint was written" in err
    assert not (tmp_path/"nan"/"encoder.pt").exists() and not (tmp_path/"nan"/"last.pt").exists()

@pytest.fixture
def nan_head():
    "A registered head whose loss turns NaN from its 3rd call: a run whose 2nd epoch diverges."
    import torch.nn as nn, torch.nn.functional as F
    calls = [0]
    def loss(z, t, s):
        calls[0] += 1
        return F.cross_entropy(z.float(), t) * (float("nan") if calls[0] >= 3 else 1.0)
    HEADS.register("test-nan", HeadEntry(lambda d, c, s: nn.Linear(d, c), loss=loss), doc="diverges at its 3rd step", replace=True)
    yield "test-nan"
    HEADS._entries.pop("test-nan", None)

def test_diverging_run_keeps_the_last_finite_checkpoint(tmp_path, nan_head):
    rc, err = cli(*QUICK, "--out", str(tmp_path/"r"), "--set", f"head={nan_head}")
    assert rc == 2 and "the loss is nan at epoch 2, step 1" in err, err
    assert "keeps epoch 1, the last finite state" in err and "--resume, --on-change='extend'" in err
    ckpt = load_checkpoint(tmp_path/"r"/"last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len(read_metrics(tmp_path/"r")) == 1 and not (tmp_path/"r"/"encoder.pt").exists()

@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4054")])
def test_full_disk_during_a_checkpoint_says_so_and_keeps_last_pt(tmp_path, monkeypatch, failure):
    "Issue 24.8: a full disk gave torch's 'unexpected pos' RuntimeError, which never says the disk is full."
    save = torch.save
    def full_disk(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("epoch") == 2: raise failure
        return save(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path/"r"
    kw = dict(epochs=3, steps_per_epoch=2, batch_size=16, device="cpu")
    with pytest.raises(CogsynthError) as e: train("digits:0,1,2", "cnn_small", "torch", out_dir=out, **kw)
    msg = str(e.value)
    assert msg.startswith(f"the disk is full: writing last.pt into {str(out)!r} failed") and "The previous last.pt there is intact" in msg, msg
    assert load_checkpoint(out/"last.pt")["epoch"] == 1 and not list(out.glob(".last.pt*.tmp"))   # intact, no partial file left
    monkeypatch.setattr(torch, "save", save)
    assert len(train("digits:0,1,2", "cnn_small", "torch", out_dir=out, resume=True, **kw)) == 3   # and it resumes

@pytest.mark.parametrize("flags, named", [(["--lr", "-0.1"], "--lr=-0.1 is not valid: pass a number above 0"),
                                          (["--lr", "0"], "--lr=0.0 is not valid"),
                                          (["--batch-size", "0"], "--batch-size=0 is not valid"),
                                          (["--epochs", "0"], "--epochs=0 is not valid"),
                                          (["--stop-after", "0"], "--stop-after=0 is not valid"),
                                          (["--set", "steps_per_epoch=0"], "--set steps_per_epoch=0 is not valid"),
                                          (["--set", "momentum=2"], "--set momentum=2 is not valid: pass a fraction"),
                                          (["--resume"], "--resume, but")])
def test_bad_values_fail_before_any_data_is_read(tmp_path, flags, named):
    "Issue 27.2: --lr -0.1 gave a raw ValueError with a scaled value; --batch-size 0 was ignored; --resume of nothing started afresh."
    missing = tmp_path/"no_such_data"                        # reading the data would fail with another message
    rc, err = cli("--data", str(missing), "--out", str(tmp_path/"out"), "--device", "cpu", *flags)
    assert rc == 2 and named in err and "no_such_data" not in err, err
    assert not (tmp_path/"out").exists()
    if flags == ["--resume"]: assert f"{str(tmp_path/'out')!r} holds no last.pt to continue" in err and "without --resume" in err
