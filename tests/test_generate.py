"""Generation: deterministic plans, early errors on bad input, torchrun shards, and a killed run that resumes."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cogsynth.core import CogsynthError, JsonlManifest
from cogsynth.generate import SCHEMA, generate, manifest_files, read_manifest, tiny_pipeline
from cogsynth.prompts import make_plan

BIN = Path(sys.executable).parent
CLASSES = "cat,dog,fox"

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("tiny")/"sd", image_size=16)

def _plan(per_class):
    return make_plan(CLASSES.split(","), per_class, prompt="a photo of a {name}", guidance="random", steps=4, size=16, seed=3)

def _torchrun(model, out, per_class, batch_size=2, **popen):
    cmd = [str(BIN/"torchrun"), "--nproc-per-node", "2", "--master-port", str(_free_port()),
           str(BIN/"cogsynth"), "generate", "--classes", CLASSES, "--per-class", str(per_class), "--prompt", "a photo of a {name}",
           "--guidance", "random", "--steps", "4", "--size", "16", "--seed", "3", "--model", str(model), "--out", str(out),
           "--batch-size", str(batch_size), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COGSYNTH_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)

def _free_port():
    import socket
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def _descendants(pid):
    "Process ids below `pid` (torchrun starts its workers in their own sessions, so killpg misses them)."
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try: fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError: continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []): out.append(c); todo.append(c)
    return out

def _kill_tree(p):
    "SIGKILL a torchrun launch and every worker it started (a crash, not a clean shutdown)."
    for pid in _descendants(p.pid)[::-1] + [p.pid]:
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass

def _all_lines(out):
    "Every record of every manifest shard (duplicates kept)."
    return [r for p in manifest_files(out) for r in JsonlManifest(p, SCHEMA).read()]

def test_plan_is_deterministic():
    a, b = _plan(6), _plan(6)
    assert a == b and len(a) == 18
    assert len({j.id for j in a}) == 18 and len({j.seed for j in a}) == 18
    assert _plan(9)[:6] == a[:6]                      # growing per_class keeps the first images
    c = make_plan(CLASSES.split(","), 6, prompt="a photo of a {name}", guidance="random", steps=4, size=16, seed=4)
    assert all(x.seed != y.seed for x, y in zip(a, c))
    # the plan is the same in another process (seeds are hashes, not python's salted hash())
    code = ("from cogsynth.prompts import make_plan; p = make_plan(['cat','dog','fox'], 6, prompt='a photo of a {name}', "
            "guidance='random', steps=4, size=16, seed=3); print([(j.id, j.seed, j.guidance, j.prompt) for j in p])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert r.stdout.strip() == str([(j.id, j.seed, j.guidance, j.prompt) for j in a])

@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=["n02086910", "n99999999"]), "unknown wnid"),
    (dict(classes=["papillon.n.09"]), "unknown class(es)"),
    (dict(prompt=[]), "empty prompt family"),
    (dict(prompt="a photo of a {label}"), "unknown field(s) ['label']"),
    (dict(prompt="c_dc"), "has no definition"),
    (dict(guidance=-1), "must be >= 0"),
    (dict(guidance="uniform:5:1"), "above HIGH"),
])
def test_bad_plans_fail_early(kwargs, message):
    args = dict(classes=["cat"], per_class=2, prompt="c", guidance=2) | kwargs
    with pytest.raises(CogsynthError, match=None) as e: make_plan(args.pop("classes"), args.pop("per_class"), **args)
    assert message in str(e.value)

def test_bad_runs_fail_before_the_first_image(tmp_path, tiny):
    plan = _plan(2)
    for kwargs, message in [(dict(model=tmp_path/"no-model"), "does not exist"), (dict(model=tmp_path), "no model_index.json"),
                            (dict(scheduler="warp"), "unknown scheduler"), (dict(image_format="webp"), "image_format"),
                            (dict(batch_size=0), "batch_size")]:
        args = dict(model=tiny) | kwargs
        with pytest.raises(CogsynthError) as e: generate(plan, args.pop("model"), tmp_path/"out", device="cpu", **args)
        assert message in str(e.value)
        assert not list((tmp_path/"out").rglob("*.png"))

def test_cli_reports_bad_input(tmp_path):
    r = subprocess.run([str(BIN/"cogsynth"), "generate", "--classes", "cat", "--per-class", "2", "--prompt", "{nam}",
                        "--model", str(tmp_path/"nope"), "--out", str(tmp_path/"o")], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown field(s) ['nam']" in r.stderr

def test_torchrun_shards_killed_and_resumed(tmp_path, tiny):
    "Two torchrun processes, killed midway; the rerun completes: shards' union = plan, nothing lost or doubled."
    out, per_class = tmp_path/"out", 12
    plan = _plan(per_class)
    p = _torchrun(tiny, out, per_class=per_class)
    t0, killed_at = time.time(), None
    while time.time() - t0 < 240 and p.poll() is None:
        if manifest_files(out) and len(_all_lines(out)) >= 6:
            _kill_tree(p); killed_at = len(_all_lines(out)); break
        time.sleep(0.02)
    p.wait(timeout=60)
    time.sleep(0.5)
    assert killed_at is not None, "the run finished before it could be killed: make it longer"
    partial = _all_lines(out)
    assert 6 <= len(partial) < len(plan)
    assert not (out/"summary.json").exists()
    p = _torchrun(tiny, out, per_class=per_class)
    log = p.communicate(timeout=300)[0]
    assert p.returncode == 0, log[-8000:]
    lines = _all_lines(out)
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)), "an image was recorded twice"
    assert sorted(ids) == sorted(j.id for j in plan), "an image was lost"
    assert {r["id"] for r in partial} <= set(ids)
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*.png") if not f.name.startswith(".") and f.name != "contact_sheet.png")
    assert files == sorted(j.file() for j in plan)
    for f in files: Image.open(out/f).verify()
    s = json.loads((out/"summary.json").read_text())
    assert s["images"] == len(plan) and s["generated"] + s["skipped"] == len(plan) and s["skipped"] >= len(partial)
    assert s["world_size"] == 2 and (out/"contact_sheet.png").exists()
    assert [f.name for f in manifest_files(out)] == ["manifest.rank0.jsonl", "manifest.rank1.jsonl"]
    shard0 = {r["id"] for r in JsonlManifest(out/"manifest.rank0.jsonl", SCHEMA).read()}
    assert shard0 == {j.id for j in plan[0::2]}                                 # rank r takes jobs r, r+2, ...
    # the same pixels as a single-process run (the seed is per image, not per batch or rank)
    j = plan[5]
    generate([j], tiny, tmp_path/"single", device="cpu")
    a = np.asarray(Image.open(out/j.file()), dtype=int); b = np.asarray(Image.open(tmp_path/"single"/j.file()), dtype=int)
    assert np.abs(a - b).max() <= 1

def test_tutorial_generates_and_resumes(run_tutorial):
    results, out = run_tutorial("generate")
    assert results["smoke"] is True
    assert results["summary"]["generate_resume_complete"] is True
    assert results["summary"]["generate_images"] == 6 == sum(r["images"] for r in results["table"])
    assert (out/"images"/"contact_sheet.png").exists()
    lines = [r for p in manifest_files(out/"images") for r in JsonlManifest(p, SCHEMA).read()]
    assert len(lines) == len({r["id"] for r in lines}) == 6
