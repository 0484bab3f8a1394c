"""`cogsynth probe --protocol transfer` (issue 25.3, 25.4): fake Aircraft, DTD and iNaturalist 2018 end to end from the
command line, naver/trex's probe per dataset kind, seeds averaged, results reused without reading an image or fitting
a probe again, a baseline beside, and bad input refused before any feature is extracted."""
import contextlib, io, json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import cogsynth.testsets as ts
from cogsynth.core import CogsynthError
from cogsynth.testsets import fake_layout
from cogsynth.transfer import read_transfer_baseline, transfer_probes, transfer_settings, transfer_table


def _cli(*args):
    "`cogsynth ARGS` in this process: (return code, stdout, stderr)."
    from cogsynth.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([*map(str, args)])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    d = tmp_path_factory.mktemp("fakes")
    return {n: fake_layout(n, d/n, per_class=3, classes=3) for n in ("aircraft", "dtd", "inat2018")}


def probe_args(fakes, out, model="cnn_tiny", *extra):
    "The command: every fake as a repeated --data item, its counts told with --expected."
    return ["probe", "--protocol", "transfer", "--model", model, "--random-init", "--out", out, "--device", "cpu", "--trials", "2",
            "--seeds", "22", "37", *[x for n, f in fakes.items() for x in ("--data", f"{n}={f.root}")],
            "--expected", *[f"{n}=trainval:{f.expected['trainval']},test:{f.expected['test']}" for n, f in fakes.items()], *extra]


def test_cli_transfer_end_to_end(tmp_path, fakes):
    rc, out, err = _cli(*probe_args(fakes, tmp_path/"run"))
    assert rc == 0, err
    res = json.loads((tmp_path/"run"/"transfer.json").read_text())["results"][0]
    ds = res["datasets"]
    assert {n: (e["probe"], e["settings"]["normalize"], e["settings"]["multivariate"]) for n, e in ds.items()} == \
           {"aircraft": ("lbfgs", False, False), "dtd": ("lbfgs", False, False), "inat2018": ("sgd", True, True)}
    assert ds["aircraft"]["settings"]["options"]["max_iter"] == 2000 and ds["aircraft"]["settings"]["trials"] == 2
    for n, e in ds.items():                                                   # the same seeds, averaged
        assert [r["seed"] for r in e["runs"]] == [22, 37]
        assert e["top1_mean"] == pytest.approx(np.mean([r["top1"] for r in e["runs"]]))
        assert e["n_trainval"] == fakes[n].expected["trainval"] and e["n_test"] == fakes[n].expected["test"]
    assert res["average"] == pytest.approx(np.mean([e["top1_mean"] for e in ds.values()]))
    assert ds["aircraft"]["top1_mean"] > 60                                    # colour classes: chance is 33%
    seed = json.loads((tmp_path/"run"/"cnn_tiny"/"aircraft"/"seed22.json").read_text())
    assert len(seed["trials"]) == 2 and seed["n_train"] == fakes["aircraft"].expected["trainval"] and seed["params"]["dataset"] == "aircraft"
    assert "| model | Aircraft | DTD | iNat18 | Avg. |" in out and (tmp_path/"run"/"transfer.md").read_text().startswith("| model | Aircraft")
    assert (tmp_path/"run"/"transfer.png").stat().st_size > 1000 and (tmp_path/"run"/"transfer.csv").exists()
    # the same command again: every feature and every probe is stored, so no image is opened and no probe is fitted
    with mock.patch("cogsynth.testsets.open_image", side_effect=AssertionError("an image was opened")), \
         mock.patch("cogsynth.transfer.linear_probe", side_effect=AssertionError("a probe was fitted")):
        rc, out2, err = _cli(*probe_args(fakes, tmp_path/"run"))
    assert rc == 0, err
    assert json.loads((tmp_path/"run"/"transfer.json").read_text())["results"][0]["datasets"] == ds
    # more trials: the stored probes are refused, naming the difference; the features are still not read again
    with mock.patch("cogsynth.testsets.open_image", side_effect=AssertionError("an image was opened")):
        rc, _, err = _cli(*[a if a != "2" else "3" for a in probe_args(fakes, tmp_path/"run")])
        assert rc == 2 and "probe.trials=2 -> 3" in err and "--on-change" in err, err


def test_baseline_beside_a_second_model(tmp_path, fakes):
    two = {n: fakes[n] for n in ("aircraft", "inat2018")}
    assert _cli(*probe_args(two, tmp_path/"base"))[0] == 0
    rc, out, err = _cli(*probe_args(two, tmp_path/"new", "cnn_small", "--baseline", tmp_path/"base"))
    assert rc == 0, err
    rows = [l for l in out.splitlines() if l.startswith("| cnn")]
    assert [r.split("|")[1].strip() for r in rows] == ["cnn_small", "cnn_tiny"]
    assert (tmp_path/"new"/"transfer.png").exists()
    # a baseline lacking a dataset is refused before any feature is extracted
    rc, _, err = _cli(*probe_args(fakes, tmp_path/"new2", "cnn_small", "--baseline", tmp_path/"base"))
    assert rc == 2 and "lacks results for ['dtd']" in err and not (tmp_path/"new2"/"features").exists(), err


@pytest.mark.parametrize("case", ["unknown name", "wrong layout", "missing split file", "image count", "expected elsewhere"])
def test_bad_input_refused_before_any_feature(tmp_path, fakes, case):
    air, dtd = fakes["aircraft"], fakes["dtd"]
    exp = lambda n, f: f"{n}=trainval:{f.expected['trainval']},test:{f.expected['test']}"
    data, want = {"unknown name": (["--data", f"cifar10={air.root}"], "'cifar10' is no transfer dataset"),
                  "wrong layout": (["--data", f"dtd={air.root}", "--expected", "None"], "dtd: the folder"),
                  "missing split file": (["--data", f"aircraft={tmp_path/'air'}", "--expected", exp("aircraft", air)], "images_variant_test.txt' is missing"),
                  "image count": (["--data", f"dtd={dtd.root}"], "found 18 images, expected 3,760"),
                  "expected elsewhere": (["--data", f"dtd={dtd.root}", "--expected", "None", "--protocol", "cog"], "--expected is for protocols")}[case]
    if case == "missing split file":
        import shutil
        shutil.copytree(air.root, tmp_path/"air"); (tmp_path/"air"/"data"/"images_variant_test.txt").unlink()
    args = ["probe", "--protocol", "transfer", "--model", "cnn_tiny", "--random-init", "--out", tmp_path/"out", "--device", "cpu", *data]
    with mock.patch("cogsynth.testsets.open_image", side_effect=AssertionError("an image was opened")):
        rc, _, err = _cli(*args)
    assert rc == 2 and want in err, err
    assert not (tmp_path/"out"/"features").exists()


def test_probes_from_python_and_the_table():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 20, (3, 6))                                       # far from the unit sphere: normalising would change them
    part = lambda m: (centres[np.repeat(np.arange(3), m)] + rng.normal(0, 2, (3 * m, 6)), np.repeat(["a", "b", "c"], m))
    res = transfer_probes({"pets": (part(10), part(4)), "inat2019": (part(10), part(4))}, model="m", seeds=(1, 2), trials=2, device="cpu")
    assert (res["datasets"]["pets"]["probe"], res["datasets"]["inat2019"]["probe"]) == ("lbfgs", "sgd")
    assert transfer_table([res]) == [{"model": "m", "Pets": round(res["datasets"]["pets"]["top1_mean"], 2),
                                      "iNat19": round(res["datasets"]["inat2019"]["top1_mean"], 2), "Avg.": round(res["average"], 2)}]
    assert transfer_settings("lbfgs").record()["search_space"] == {"C": [1e-5, 1e6]}
    with pytest.raises(CogsynthError, match="'cifar' is no transfer dataset"): transfer_probes({"cifar": (part(4), part(2))})
    with pytest.raises(CogsynthError, match="no baseline results at"): read_transfer_baseline("/nonexistent", ["pets"])
