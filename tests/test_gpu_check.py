"""tools/gpu_check.sh on CPU: the dry run prints the plan in the issue's order, within the budget, and writes the
summary JSON; without wheels or a GPU a real run stops before running anything (issue 15)."""
import json, os, re, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT/"tools"/"gpu_check.sh"
ORDER = ["nbdev_test_slow_cuda", "cogsynth_run_smoke", "synthetic_digits", "probe_speed", "train_speed", "generate_speed"]


def _run(tmp_path, *args, **env_extra):
    env = dict(os.environ, GPU_CHECK_WORK=str(tmp_path/"work"), **env_extra)
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_dry_run_plan(tmp_path):
    r = _run(tmp_path, "--dry-run", "--out", str(tmp_path/"out"))
    assert r.returncode == 0, r.stderr
    steps = re.findall(r"^\s+[ -] (\d)\. (\w+)\s+(\d+) s  (.+)$", r.stdout, re.M)
    assert [s[1] for s in steps] == ORDER
    cmds = {s[1]: s[3] for s in steps}
    assert "nbdev-test --flags 'slow cuda'" in cmds["nbdev_test_slow_cuda"] and "07_train" in cmds["nbdev_test_slow_cuda"]
    assert cmds["cogsynth_run_smoke"].startswith("cogsynth run --device cuda --smoke")
    assert "--only synthetic_digits" in cmds["synthetic_digits"] and "--smoke" not in cmds["synthetic_digits"]
    assert all("--device cuda" in cmds[n] for n in ORDER[1:])
    assert "--scale" not in cmds["probe_speed"]                                  # full CoG scale
    assert sum(int(s[2]) for s in steps) <= 480                                  # about 8 minutes, so a rerun fits
    summary = json.loads((tmp_path/"out"/"gpu_check.json").read_text())
    assert summary["dry_run"] and summary["all_ok"]
    assert [s["name"] for s in summary["steps"]] == ORDER and {s["status"] for s in summary["steps"]} == {"planned"}


def test_only_marks_the_rest_skipped(tmp_path):
    r = _run(tmp_path, "--dry-run", "--only", "4,6", "--out", str(tmp_path/"out"))
    assert r.returncode == 0, r.stderr
    st = {s["step"]: s["status"] for s in json.loads((tmp_path/"out"/"gpu_check.json").read_text())["steps"]}
    assert st == {1: "skipped", 2: "skipped", 3: "skipped", 4: "planned", 5: "skipped", 6: "planned"}


def test_real_run_needs_wheels_and_gpu(tmp_path):
    # a python without the packages (the bare GPU image's situation) and no wheels: stop, saying how to build them
    bare = tmp_path/"bin"/"python3"; bare.parent.mkdir()
    bare.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in *"import diffusers"*) exit 1;; esac; done\nexec python3 "$@"\n')
    bare.chmod(0o755)
    r = _run(tmp_path, "--wheels", str(tmp_path/"no-wheels"), "--out", str(tmp_path/"out"), PYTHON=str(bare))
    assert r.returncode == 1 and "no wheels in" in r.stderr and "--prepare" in r.stderr, r.stderr
    assert not (tmp_path/"out"/"gpu_check.json").exists()
    import torch
    if not torch.cuda.is_available():                  # packages present, no GPU: stop before running any step
        r = _run(tmp_path, "--out", str(tmp_path/"out"))
        assert r.returncode == 1 and "needs a CUDA GPU" in r.stderr and not (tmp_path/"out"/"gpu_check.json").exists()


def test_steps_machinery_on_cpu(tmp_path):
    "A real (non-dry) run of one step on CPU: it fails (no GPU), and the JSON and the log tarball record that."
    import tarfile
    r = subprocess.run(["bash", str(SCRIPT), "--only", "4", "--out", str(tmp_path/"out")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, GPU_CHECK_WORK=str(tmp_path/"work"), GPU_CHECK_ALLOW_CPU="1"))
    assert r.returncode == 1, r.stdout + r.stderr                                # the summary says not all_ok
    s = json.loads((tmp_path/"out"/"gpu_check.json").read_text())
    st = {x["name"]: x for x in s["steps"]}
    assert not s["all_ok"] and st["probe_speed"]["status"] == "failed" and st["probe_speed"]["rc"] not in (0, None)
    assert "no CUDA GPU" in st["probe_speed"]["log_tail"]
    assert all(st[n]["status"] == "skipped" for n in ORDER if n != "probe_speed")
    with tarfile.open(tmp_path/"out"/"gpu_check_logs.tar.gz") as t:
        assert "logs/04_probe_speed.log" in t.getnames()
    assert len(list((tmp_path/"out").iterdir())) <= 8                            # what the device tool brings back


def test_unknown_option(tmp_path):
    r = _run(tmp_path, "--dryrun")
    assert r.returncode == 2 and "unknown option '--dryrun'" in r.stderr


def test_benchmarks_accept_the_planned_flags():
    "Every flag the plan passes to a benchmark exists in that benchmark's --help."
    plan = SCRIPT.read_text()
    for bench in ("probe_speed", "train_speed", "generate_speed"):
        line = next(l for l in plan.splitlines() if f"benchmarks/{bench}.py" in l and l.startswith("add "))
        flags = set(re.findall(r"(--[a-z][a-z-]+)", line.split(f"{bench}.py", 1)[1]))
        helptext = subprocess.run(["python", str(ROOT/"benchmarks"/f"{bench}.py"), "--help"], capture_output=True, text=True,
                                  timeout=120).stdout
        missing = [f for f in flags if f not in helptext]
        assert not missing, f"benchmarks/{bench}.py lacks {missing}"


def test_gpu_augment_is_a_crop_and_flip():
    "benchmarks/train_speed.py's batched GPU augmentation: at scale 1 and ratio 1 it returns each image or its mirror."
    import sys, torch
    sys.path.insert(0, str(ROOT/"benchmarks"))
    from train_speed import gpu_augment
    x = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    y = gpu_augment(x, 20, scale=(1, 1), ratio=(1, 1), generator=torch.Generator().manual_seed(0))
    assert y.shape == (6, 3, 20, 20) and y.is_contiguous(memory_format=torch.channels_last)
    m = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1) * 255; s = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1) * 255
    back = y * s + m
    same = [torch.allclose(back[i], x[i].float(), atol=1e-3) for i in range(6)]
    mirrored = [torch.allclose(back[i], x[i].float().flip(-1), atol=1e-3) for i in range(6)]
    assert all(a or b for a, b in zip(same, mirrored)) and any(same) and any(mirrored)
    small = gpu_augment(x, 8, scale=(0.1, 0.3))
    assert small.shape == (6, 3, 8, 8) and not torch.allclose(small[0], small[1])
