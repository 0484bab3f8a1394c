"""Generation: deterministic plans, early errors on bad input, torchrun shards, and a killed run that resumes."""
import argparse, json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cogsynth.core import CogsynthError, JsonlManifest
from cogsynth.generate import SCHEDULERS, SCHEMA, generate, load_pipeline, manifest_files, read_manifest, tiny_pipeline
from cogsynth.prompts import FAMILY_NAMES, make_plan

BIN = Path(sys.executable).parent
CLASSES = "cat,dog,fox"

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("tiny")/"sd", image_size=16)

def _plan(per_class):
    return make_plan(CLASSES.split(","), per_class, prompt="a photo of a {name}", guidance="random", steps=4, size=16, seed=3)

def _torchrun(model, out, per_class, batch_size=2, **popen):
    cmd = [str(BIN/"torchrun"), "--standalone", "--nproc-per-node", "2",     # standalone: torchrun picks and holds a free port
           str(BIN/"cogsynth"), "generate", "--classes", CLASSES, "--per-class", str(per_class), "--prompt", "a photo of a {name}",
           "--guidance", "random", "--steps", "4", "--size", "16", "--seed", "3", "--model", str(model), "--out", str(out),
           "--batch-size", str(batch_size), "--device", "cpu"]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COGSYNTH_QUIET": "1", "HF_HUB_OFFLINE": "1"}

def _cli(*args):
    "Run `cogsynth generate ARGS` in this process (`main`, what the command calls): an object with returncode, stdout, stderr."
    import contextlib, io, types
    from cogsynth.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(["generate", *map(str, args)])
    return types.SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())

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
                            (dict(scheduler="warp"), "scheduler='warp' is not one of"), (dict(image_format="webp"), "image_format"),
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
    assert results["summary"]["generate_refuses_another_plan"] is True
    assert results["summary"]["generate_images"] == 6 == sum(r["images"] for r in results["table"])
    assert (out/"images"/"contact_sheet.png").exists()
    lines = [r for p in manifest_files(out/"images") for r in JsonlManifest(p, SCHEMA).read()]
    assert len(lines) == len({r["id"] for r in lines}) == 6

# --- issue 13: every prompt family and every scheduler runs; the CLI explains itself -------------------------------

@pytest.fixture(scope="module")
def tiny_pipe(tiny):
    import torch
    torch.set_num_threads(1)
    return load_pipeline(tiny, device="cpu")

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_prompt_family_generates(tmp_path, tiny_pipe, family):
    plan = make_plan(["n02086910"], 2, prompt=family, guidance=2, steps=2, size=16, seed=0)
    s = generate(plan, tiny_pipe, tmp_path, batch_size=2, summary=False)
    recs = read_manifest(tmp_path)
    assert s["generated"] == 2 and [r["family"] for r in recs] == [family] * 2
    assert all("papillon" in r["prompt"] for r in recs)

@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_scheduler_generates(tmp_path, tiny_pipe, scheduler):
    plan = make_plan(["cat"], 2, prompt="a photo of a {name}", guidance=2, steps=4, size=16, seed=0)
    generate(plan, tiny_pipe, tmp_path, scheduler=scheduler, batch_size=2, summary=False)
    recs = read_manifest(tmp_path)
    assert [r["scheduler"] for r in recs] == [scheduler] * 2
    pixels = [np.asarray(Image.open(tmp_path/r["file"]), dtype=int) for r in recs]
    assert pixels[0].shape == (16, 16, 3) and np.abs(pixels[0] - pixels[1]).max() > 0     # two seeds, two images

def test_cli_options_have_help_and_defaults():
    from cogsynth.cli import build_parser
    sub = next(a for a in build_parser("generate")._actions if a.dest == "command").choices["generate"]
    opts = [a for a in sub._actions if a.dest != "help"]
    assert len(opts) >= 20
    for a in opts:
        if a.help == argparse.SUPPRESS: continue                  # a deprecated alias (--allow-plan-change)
        assert a.help, f"{a.option_strings} has no help"
        assert a.required or "default" in a.help, f"{a.option_strings} does not show its default"

def test_cli_errors_name_the_flag(tmp_path, tiny):
    base = ["--classes", "cat", "--model", tiny, "--out", tmp_path/"o"]
    for args, message in [(["--per-class", "0"], "--per-class=0"), (["--per-class", "1", "--precision", "half"], "--precision='half'"),
                          (["--per-class", "1", "--size", "big"], "--size='big'"), (["--per-class", "1", "--resize", "x"], "--resize='x'"),
                          (["--per-class", "1", "--scheduler", "warp"], "--scheduler='warp'"), (["--per-class", "1", "--batch-size", "0"], "--batch-size=0")]:
        r = _cli(*base, *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    assert not list(tmp_path.rglob("*.png"))

def test_cli_generates_at_the_native_size(tmp_path, tiny):
    "Without --size: the UNet sample size x the VAE scale factor (16 px for this tiny model, not 512x384)."
    r = _cli("--classes", "cat", "--per-class", "1", "--steps", "2", "--model", tiny, "--out", tmp_path/"o")
    assert r.returncode == 0, r.stderr
    assert [(rec["generated_size"], rec["size"]) for rec in read_manifest(tmp_path/"o")] == [([16, 16], [16, 16])]
    r = _cli("--classes", "cat", "--per-class", "1", "--size", "thesis", "--model", tiny, "--out", tmp_path/"t", "--dry-run")
    assert r.returncode == 0 and "512x384" in r.stdout

# --- issue 17: concurrent writers, plan identity, wnid typos -------------------------------------------------------

def _gen_args(model, out, per_class, **flags):
    args = ["--classes", CLASSES, "--per-class", per_class, "--prompt", "a photo of a {name}", "--guidance", "7.5",
            "--steps", "4", "--size", "16", "--seed", "3", "--model", model, "--out", out, "--batch-size", "2", "--device", "cpu"]
    for k, v in flags.items():
        i = args.index("--" + k.replace("_", "-")) if "--" + k.replace("_", "-") in args else None
        if v is True: args.append("--" + k.replace("_", "-"))
        elif i is None: args += ["--" + k.replace("_", "-"), v]
        else: args[i + 1] = v
    return args

def test_two_writers_on_one_folder_split_the_work(tmp_path, tiny):
    "Two plain `cogsynth generate` processes on one --out: every image generated and recorded exactly once."
    out, per_class = tmp_path/"out", 10
    cmd = [str(BIN/"cogsynth"), "generate", *map(str, _gen_args(tiny, out, per_class))]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for _, e in results]
    lines = _all_lines(out)
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)) == 3 * per_class, f"{len(ids)} records for {len(set(ids))} images"
    runs = [json.loads(o.strip().splitlines()[-1]) for o, _ in results]
    assert sum(r["generated"] for r in runs) == 3 * per_class, runs          # nobody generated an image twice
    print("generated by each writer:", [r["generated"] for r in runs], "taken by the other:", [r["by_other_writers"] for r in runs])
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*.png") if f.name != "contact_sheet.png")
    assert files == sorted(r["file"] for r in lines)
    assert not (out/".claims").exists()

def test_rerun_with_another_plan_is_refused(tmp_path, tiny):
    out = tmp_path/"out"
    assert _cli(*_gen_args(tiny, out, 2)).returncode == 0
    before = (out/"manifest.jsonl").read_bytes()
    for flags, message in [(dict(guidance="2"), "holds 6 images (e.g. cat_000000) of other settings: --guidance=7.5 -> 2.0"),
                           (dict(seed="4"), "image_seed="), (dict(steps="3"), "--steps=4 -> 3"),
                           (dict(prompt="{name}"), "--prompt='a photo of a cat' -> 'cat'"),
                           (dict(resize="8"), "--resize=[16, 16] -> [8, 8]"),
                           (dict(scheduler="euler"), "--scheduler='DDIMScheduler' -> 'euler'")]:
        r = _cli(*_gen_args(tiny, out, 3, **flags))
        assert r.returncode == 2 and message in r.stderr and "--on-change='extend'" in r.stderr, (flags, r.stderr)
    r = _cli(*_gen_args(tiny, out, 3, format="jpg", on_change="extend"))                 # a folder holds one format
    assert r.returncode == 2 and "--format='png' -> 'jpg'. These cannot change in one folder" in r.stderr, r.stderr
    assert (out/"manifest.jsonl").read_bytes() == before and not list(out.rglob("*.jpg"))
    r = _cli(*_gen_args(tiny, out, 3))                                       # the same plan, grown: only the new images
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["generated"] == 3, r.stderr
    r = _cli(*_gen_args(tiny, out, 4, guidance="2", on_change="extend"))     # explicit: keep the old, add the new
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["generated"] == 3, r.stderr
    assert sorted({(rec["index"] < 3, rec["guidance"]) for rec in read_manifest(out)}) == [(False, 2.0), (True, 7.5)]
    meta = JsonlManifest(out/"manifest.jsonl", SCHEMA).meta
    assert meta["plan"]["image_format"] == "png" and not {"jobs", "digest"} & set(meta["plan"])   # nothing a grown plan leaves stale
    r = _cli(*_gen_args(tiny, out, 5, guidance="3", allow_plan_change=True))  # the old switch: a deprecated alias of extend
    assert r.returncode == 0 and "--allow-plan-change is deprecated" in r.stderr and json.loads(r.stdout.splitlines()[-1])["generated"] == 3
    with pytest.warns(FutureWarning, match="allow_plan_change=True is deprecated"):
        generate(_plan(5), tiny, tmp_path/"py", device="cpu", allow_plan_change=True, summary=False, max_images=1)

def test_the_plan_is_checked_again_only_when_loading_tells_something_new(tmp_path, tiny, monkeypatch):
    import cogsynth.generate as G
    calls, check = [], G.check_plan
    monkeypatch.setattr(G, "check_plan", lambda *a, **k: calls.append(k["scheduler"]) or check(*a, **k))
    generate(_plan(1), tiny, tmp_path/"a", device="cpu", summary=False)                   # a folder: its scheduler is known unloaded
    generate(_plan(1), tiny, tmp_path/"b", device="cpu", scheduler="euler", summary=False)
    assert calls == ["DDIMScheduler", "euler"]

def test_wnid_typos_are_refused(tmp_path, tiny):
    r = _cli("--classes", "n02086910,n0208691", "--per-class", "1", "--model", tiny, "--out", tmp_path/"o")
    assert r.returncode == 2 and "['n0208691'] look like WordNet ids but are not" in r.stderr, r.stderr
    assert not (tmp_path/"o").exists()
    r = _cli("--classes", "n99999999", "--per-class", "1", "--model", tiny, "--out", tmp_path/"o")
    assert r.returncode == 2 and "unknown wnid" in r.stderr

def test_classes_from_a_level(tmp_path, tiny):
    from cogsynth.levels import levels_path, resolve_level_spec
    r = _cli("--classes", "imagenet-cog:L1", "--per-class", "1", "--model", tiny, "--out", tmp_path/"o", "--dry-run")
    assert r.returncode == 0 and r.stdout.strip().endswith("1000 jobs"), r.stderr
    path = levels_path("imagenet-cog")
    r = _cli("--classes", f"{path}:L3", "--per-class", "2", "--prompt", "c_dc", "--model", tiny, "--out", tmp_path/"o", "--dry-run")
    first = resolve_level_spec(f"{path}:L3")[0][0]
    assert r.returncode == 0 and r.stdout.strip().endswith("2000 jobs") and f"{first}_000000" in r.stdout, r.stderr
    r = _cli("--classes", "imagenet-cog:L9", "--per-class", "1", "--model", tiny, "--out", tmp_path/"o", "--dry-run")
    assert r.returncode == 2 and "L9" in r.stderr


# --- issue 24.9: manifest lines that are no records, paths out of their folder ------------------------------------

def _bad_folder(root, line):
    "A generation folder of one real image and a manifest whose second record is `line` (raw JSON text)."
    (root/"cat").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(root/"cat"/"cat_000000.png")
    header = json.dumps({"schema": SCHEMA, "meta": {}})
    good = json.dumps({"id": "cat_000000", "class": "cat", "file": "cat/cat_000000.png"})
    (root/"manifest.jsonl").write_text(f"{header}\n{good}\n{line}\n")
    return root

@pytest.mark.parametrize("line, message", [('{"foo": 1}', "is not a generation record: it lacks ['id', 'class', 'file']"),
                                           ("[1, 2]", "is not a generation record but a JSON list [1, 2]"),
                                           ('{"id": "x", "class": "cat", "file": "../../etc/passwd"}', "is not a path inside the folder"),
                                           ('{"id": "x", "class": "cat", "file": "/etc/passwd"}', "is not a path inside the folder"),
                                           ('{"id": "x", "class": "cat", "file": "../x.png"}', "is not a path inside the folder")])
def test_a_bad_manifest_line_is_named_before_any_work(tmp_path, tiny, line, message):
    "Generate (resuming) and the data reader (training) both stop at the line, naming the file and line; nothing is generated."
    from cogsynth.data import ImageFolderDataset
    out = _bad_folder(tmp_path/"o", line)
    where = f"{out/'manifest.jsonl'}: line 3"
    with pytest.raises(CogsynthError) as e: generate(_plan(1), tiny, out, device="cpu")
    assert where in str(e.value) and message in str(e.value)
    with pytest.raises(CogsynthError) as e: ImageFolderDataset(out)
    assert where in str(e.value) and message in str(e.value)
    assert [p.name for p in out.rglob("*.png")] == ["cat_000000.png"] and not (out/".claims").exists()

# --- issue 27: class names are checked, class sets are names, hub ids offline answer fast --------------------------

def test_class_typos_are_refused_and_class_sets_are_names(tmp_path, tiny):
    r = _cli("--classes", "papilon", "--per-class", "1", "--model", tiny, "--out", tmp_path/"o")
    assert r.returncode == 2 and "--classes='papilon': 'papilon' (did you mean 'papillon'?)" in r.stderr, r.stderr
    assert not (tmp_path/"o").exists()
    r = _cli("--classes", "imagenet-10", "--per-class", "1", "--model", tiny, "--out", tmp_path/"o")
    assert r.returncode == 2 and "did you mean 'imagenet-100'?" in r.stderr
    r = _cli("--classes", "imagenet-100", "--per-class", "1", "--model", tiny, "--out", tmp_path/"o", "--dry-run")
    from cogsynth.data import class_set
    assert r.returncode == 0 and r.stdout.strip().endswith("100 jobs") and f"{class_set('imagenet-100')[0]}_000000" in r.stdout, r.stderr
    r = _cli("--classes", "cat,papillon dog,7", "--per-class", "1", "--model", tiny, "--out", tmp_path/"o", "--dry-run")
    assert r.returncode == 0, r.stderr                                       # nouns, a phrase, a numeral

def test_prompt_help_lists_the_registered_families():
    from cogsynth.cli import build_parser
    from cogsynth.generate import _family_names
    sub = build_parser("generate").subcommands["generate"]
    help_text = next(a.help for a in sub._actions if a.dest == "prompt")
    assert all(name in help_text for name in _family_names()) and len(_family_names()) >= 9

def test_a_hub_id_offline_fails_in_seconds_with_the_way_out(tmp_path, monkeypatch):
    from cogsynth.generate import hub_offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1"); hub_offline.cache_clear()
    t0 = time.time()
    r = _cli("--classes", "cat", "--per-class", "1", "--model", "cogsynth-test/no-such-pipeline", "--out", tmp_path/"o")
    assert time.time() - t0 < 10, time.time() - t0
    assert r.returncode == 2 and "--model='cogsynth-test/no-such-pipeline' is a hub id, but the hub cannot be reached (HF_HUB_OFFLINE=1 is set)" in r.stderr
    assert "hf download cogsynth-test/no-such-pipeline --local-dir no-such-pipeline" in r.stderr and "--size" not in r.stderr
    r = _cli("--classes", "cat", "--per-class", "1", "--size", "16", "--model", "cogsynth-test/no-such-pipeline", "--out", tmp_path/"o")
    assert r.returncode == 2 and "is a hub id" in r.stderr and not (tmp_path/"o").exists()
    monkeypatch.delenv("HF_HUB_OFFLINE"); monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9"); hub_offline.cache_clear()
    t0 = time.time()                                                         # no flag: one failed connection says it
    r = _cli("--classes", "cat", "--per-class", "1", "--model", "cogsynth-test/no-such-pipeline", "--out", tmp_path/"o")
    assert time.time() - t0 < 10 and r.returncode == 2 and "127.0.0.1:9 cannot be reached" in r.stderr, r.stderr
    hub_offline.cache_clear()
