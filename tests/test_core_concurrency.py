"""Concurrent writers and killed writers (issue 17, items 1 and 8): real processes, started with `spawn`."""
import json, multiprocessing as mp, os, signal, socket, time

import pytest

from cogsynth.core import CogsynthError, FileLock, JsonlManifest, atomic_write, clean_stale_temps

SCHEMA = "cogsynth.test/1"
ctx = mp.get_context("spawn")

def _appender(path, tag, n, ready, go):
    "A writer: open the manifest, say it is ready, wait for `go`, append `n` records one call at a time."
    m = JsonlManifest(path, SCHEMA)
    ready.release(); go.wait()
    for i in range(n): m.append({"id": f"{tag}{i}", "pad": "x" * 40})

def _start_all(targets):
    "Start one spawned process per (function, args) and release them together; return the processes."
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=f, args=(*args, ready, go)) for f, args in targets]
    for p in procs: p.start()
    for _ in procs: assert ready.acquire(timeout=120), "a worker did not start"
    go.set()
    return procs

def test_two_processes_append_to_one_manifest(tmp_path):
    "2 x 1,500 appends at the same moment: 3,000 records, each once, each on a line of its own."
    path = tmp_path/"manifest.jsonl"
    JsonlManifest(path, SCHEMA, meta={"run": 1})
    procs = _start_all([(_appender, (path, tag, 1500)) for tag in "ab"])
    for p in procs: p.join(300); assert p.exitcode == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3002                 # the header, 3,000 records, the final newline
    records = [json.loads(l) for l in lines[1:-1]]                 # every line is one JSON record: none glued
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(f"{t}{i}" for t in "ab" for i in range(1500))
    assert [r["id"] for r in JsonlManifest(path, SCHEMA).read()] == ids
    assert JsonlManifest(path, SCHEMA).meta == {"run": 1}

def _creator(path, tag, ready, go):
    ready.release(); go.wait()
    m = JsonlManifest(path, SCHEMA, meta={"by": tag})
    m.extend([{"id": f"{tag}{i}"} for i in range(50)])

def test_racing_creators_write_one_header(tmp_path):
    "Processes that create the same new manifest at once: one header, every record kept."
    path = tmp_path/"manifest.jsonl"
    procs = _start_all([(_creator, (path, tag)) for tag in "abc"])
    for p in procs: p.join(300); assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert sum('"schema"' in l for l in lines) == 1 and len(lines) == 151
    assert len(JsonlManifest(path, SCHEMA).done()) == 150

def test_torn_last_line_is_still_tolerated(tmp_path, capfd):
    "A crash mid-line: reading skips the torn line with a warning; the next append cuts it off."
    m = JsonlManifest(tmp_path/"m.jsonl", SCHEMA)
    m.extend([{"id": "a"}, {"id": "b"}])
    with open(m.path, "ab") as f: f.write(b'{"id": "c", "fi')
    assert [r["id"] for r in m.read()] == ["a", "b"]
    assert "skipping a torn last line (15 bytes)" in capfd.readouterr().err
    m.append({"id": "c"})
    assert m.path.read_text().splitlines()[1:] == ['{"id": "a"}', '{"id": "b"}', '{"id": "c"}']

def test_torn_header_is_rewritten(tmp_path):
    "A crash while the header itself was written leaves a file without a complete line: it is started afresh."
    p = tmp_path/"m.jsonl"; p.write_text('{"schema": "cogsynth.te')
    m = JsonlManifest(p, SCHEMA, meta={"k": 1})
    assert m.meta == {"k": 1} and m.read() == []

def _writer(path, ready, go):
    "Start an atomic write of `path`, say so, then hang inside it (until killed)."
    with atomic_write(path, "wb") as f:
        f.write(b"partial checkpoint" * 100); f.flush()
        ready.release(); go.wait(); time.sleep(600)

def test_killed_writer_leaves_an_orphan_that_a_rerun_cleans(tmp_path):
    "SIGKILL inside `atomic_write` leaves `.<name>.<host>-<pid>.*.tmp`; cleaning removes it, not a live writer's."
    killed, live = _start_all([(_writer, (tmp_path/"last.pt",)), (_writer, (tmp_path/"best.pt",))])
    (orphan,) = tmp_path.glob(".last.pt.*.tmp")
    assert f"-{killed.pid}." in orphan.name
    os.kill(killed.pid, signal.SIGKILL); killed.join(30)
    try:
        assert clean_stale_temps(tmp_path) == [orphan]
        assert not orphan.exists() and len(list(tmp_path.glob(".best.pt.*.tmp"))) == 1
        assert clean_stale_temps(tmp_path) == []
    finally:
        live.kill(); live.join(30)
    assert len(clean_stale_temps(tmp_path)) == 1                    # now dead too
    assert sorted(p.name for p in tmp_path.iterdir()) == []

def test_dead_pid_temp_in_subfolder(tmp_path):
    "A temp file carrying a dead pid in a class sub-folder: removed with recursive=True only."
    p = ctx.Process(target=time.sleep, args=(0,)); p.start(); p.join()
    from cogsynth.core import _host
    t = tmp_path/"dog"/f".dog_0001.png.{_host()}-{p.pid}.abcd1234.tmp"; t.parent.mkdir(); t.write_bytes(b"x")
    assert clean_stale_temps(tmp_path) == [] and clean_stale_temps(tmp_path, recursive=True) == [t]

def _holder(path, ready, go):
    with FileLock(path):
        ready.release(); go.wait(); time.sleep(2.0)

def test_file_lock_between_processes(tmp_path):
    "A second process waits for the holder; a short timeout fails naming the holder's pid."
    (holder,) = _start_all([(_holder, (tmp_path/".lock",))])
    with pytest.raises(CogsynthError, match=f"still locked after 0.2 s, by process {holder.pid} on"):
        with FileLock(tmp_path/".lock", timeout=0.2): pass
    t0 = time.monotonic()
    with FileLock(tmp_path/".lock", timeout=60): waited = time.monotonic() - t0
    holder.join(30)
    assert holder.exitcode == 0 and 0.5 < waited < 30

def _rank(rank, port, out, ready, go):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from cogsynth.core import barrier, dist_info, init_distributed, is_main_process
    ready.release(); go.wait()
    info = init_distributed("cpu")
    import torch.distributed as dist
    barrier()
    out.put((tuple(info), dist.get_backend(), is_main_process(), tuple(dist_info())))
    dist.destroy_process_group()

def test_init_distributed_two_gloo_ranks():
    "Two processes launched as torchrun would: both join one gloo group, see their ranks and pass a barrier."
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    out = ctx.Queue()
    procs = _start_all([(_rank, (r, port, out)) for r in (0, 1)])
    got = sorted(out.get(timeout=240) for _ in procs)
    for p in procs: p.join(60); assert p.exitcode == 0
    assert got == [((0, 2, 0), "gloo", True, (0, 2, 0)), ((1, 2, 1), "gloo", False, (1, 2, 1))]
