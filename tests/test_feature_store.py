"""Issue 24 point 2 (the feature store belongs to its model: keyed by identity, locked, published whole) and issue 27
point 2 (a timm name without weights is refused unless a random initialization is asked for). Each test failed on the
tree before: one folder per data item and split, no lock, the .npy and its sidecar written separately, random init
silently."""
import json, os, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest

from cogsynth.core import CogsynthError
from cogsynth.extract import extract_features
from cogsynth.features import feature_entries, load_features

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def encoder(tmp_path, seed, name):
    import torch
    from cogsynth.models import create_encoder, save_encoder
    torch.manual_seed(seed)
    return save_encoder(tmp_path/name/"encoder.pt", create_encoder("cnn_small"), "cnn_small", img_size=16)


def fresh(ckpt, store):
    "The features of `ckpt` on the test digits 5-7, extracted alone into their own store."
    return np.asarray(extract_features(str(ckpt), "digits:5,6,7", split="test", out=store, device="cpu")["pre_logits"].X)


def test_two_models_probed_into_one_out_at_once_each_get_their_own_features(tmp_path):
    a, b = encoder(tmp_path, 0, "A"), encoder(tmp_path, 1, "B")
    out = tmp_path/"out"
    cmd = lambda ckpt: [sys.executable, "-c", "import sys; from cogsynth.cli import main; sys.exit(main())", "probe", "--model", str(ckpt), "--data", "L1=digits:5,6,7",
                        "--trials", "0", "--seeds", "22", "--device", "cpu", "--out", str(out)]
    procs = [subprocess.Popen(cmd(c), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in (a, b)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    for split in ("train", "test"): assert len(feature_entries(out/"features"/"L1"/split)) == 2          # one entry per model
    stored = {load_features(e, "pre_logits").meta["weights_sha256"]: e for e in feature_entries(out/"features"/"L1"/"test")}
    for name, ckpt in (("A", a), ("B", b)):
        ref = fresh(ckpt, tmp_path/f"ref{name}")
        sha = load_features(feature_entries(tmp_path/f"ref{name}")[0], "pre_logits").meta["weights_sha256"]
        assert np.array_equal(np.asarray(load_features(stored[sha], "pre_logits").X), ref)              # its own features
        res = json.loads((out/name/"cog.json").read_text())["levels"]["L1"]
        assert res["top1_mean"] > 80, (name, res["top1_mean"])      # 33% if the other model's features had been used


def test_a_crash_between_the_npy_and_its_sidecar_never_hands_another_models_features(tmp_path, monkeypatch):
    import cogsynth.features as F
    a, b = encoder(tmp_path, 0, "A"), encoder(tmp_path, 1, "B")
    store = tmp_path/"store"
    ref_a = fresh(a, store)
    def killed(*args, **kw): raise RuntimeError("killed between the .npy and its sidecar")
    monkeypatch.setattr(F, "write_sidecar", killed)
    with pytest.raises(RuntimeError, match="killed"): fresh(b, store)
    monkeypatch.undo()
    assert len(feature_entries(store)) == 1                          # nothing of B is visible
    assert np.array_equal(fresh(a, store), ref_a)                    # A is still A
    assert not np.array_equal(fresh(b, store), ref_a) and len(feature_entries(store)) == 2


WAITER = textwrap.dedent("""
    import sys
    from cogsynth.extract import extract_features
    f = extract_features(sys.argv[1], "digits:5,6,7", split="test", out=sys.argv[2], device="cpu")["pre_logits"]
    print("entry", f.path.parent.name, float(abs(f.X.astype("float64")).sum()))
""")


def test_a_second_process_waits_for_the_entry_being_filled_then_reuses_it(tmp_path):
    from cogsynth import runs
    a = encoder(tmp_path, 0, "A")
    store = tmp_path/"store"
    entry = extract_features(str(a), "digits:5,6,7", split="test", out=store, device="cpu")["pre_logits"].path.parent
    import shutil; shutil.rmtree(entry)                              # the entry's name is known; now it is empty again
    script = tmp_path/"w.py"; script.write_text(WAITER)
    env = {k: v for k, v in ENV.items() if k not in ("COGSYNTH_QUIET", "IN_TEST")}   # the "extracting" log line is counted
    with runs.folder_lock(store/".locks"/entry.name):                # as if another process were filling it
        procs = [subprocess.Popen([sys.executable, str(script), str(a), str(store)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(8)
        assert all(p.poll() is None for p in procs) and not entry.exists()      # both wait, nothing half-written
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    assert sum(e.count("extracting") for _, e in outs) == 1           # one filled it, the other re-checked and reused it
    assert len({o.strip() for o, _ in outs}) == 1


def test_a_timm_name_without_weights_is_refused_unless_asked_for(tmp_path, capsys):
    from cogsynth.cli import main
    t0 = time.time()
    assert main(["probe", "--model", "resnet18", "--data", "seen=digits:seen", "--out", str(tmp_path/"run")]) == 2
    err = capsys.readouterr().err
    assert time.time() - t0 < 5 and "--model='resnet18' has no weights" in err and "--weights=FILE" in err and "--random-init" in err
    assert not (tmp_path/"run").exists()                              # refused before any work
    with pytest.raises(CogsynthError, match="random_init=True"):
        extract_features("cnn_small", "digits:5,6", split="test", out=tmp_path/"s", device="cpu")
    f = extract_features("cnn_small", "digits:5,6", split="test", out=tmp_path/"s", device="cpu", random_init=True)["pre_logits"]
    assert f.meta["model"] == "cnn_small"
