"""Training throughput of the cogsynth.train loop, in images/s, and the share of step time spent waiting on the loader.

GPU (the goal: >= 2,000 images/s for resnet50 at 224 px on one H100):
    python benchmarks/train_speed.py --device cuda
CPU (a small model on small images; the default):
    python benchmarks/train_speed.py

It writes pre-resized synthetic JPEGs (smooth random colour fields, so decoding costs what a photo costs) into a
temporary folder, then trains the `torch` recipe with cogsynth.train.train twice in the same run: the candidate
(AMP + channels_last on CUDA; channels_last on CPU) and the baseline (the same loop in fp32, NCHW). Throughput is the
median of the epochs after the first (warm-up: cuDNN autotuning, loader start). It also times the loader alone
(train's own loader, built by cogsynth.train._train_loader: same dataset, transform, sampler and workers, no model):
`loader_headroom` = loader images/s / training images/s, above 1 when the loader keeps up. `--loader-only` runs just that, e.g. to measure the 224 px loader per CPU core:
    python benchmarks/train_speed.py --loader-only --img-size 224 --images 2048 --workers 2
Prints one JSON object.
"""
import argparse, json, os, statistics, sys, tempfile, time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

def _write_images(args):
    root, start, n, size, classes, seed = args
    from PIL import Image
    rng = np.random.default_rng(seed + start)
    for i in range(start, start + n):
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
        d = Path(root)/f"c{i % classes:03d}"; d.mkdir(parents=True, exist_ok=True)
        im.save(d/f"{i:06d}.jpg", quality=90)

def make_images(root, n, size, classes, workers):
    chunks = [(str(root), s, min(256, n - s), size, classes, 0) for s in range(0, n, 256)]
    with Pool(max(1, workers)) as p: p.map(_write_images, chunks)

def run(folder, out, args, candidate:bool):
    from cogsynth.train import train
    ms = train(str(folder), args.model, "torch", epochs=args.epochs, out_dir=out, img_size=args.img_size,
               batch_size=args.batch_size, device=args.device, workers=args.workers, check_images=False,
               amp=("auto" if args.device.startswith("cuda") else "none") if candidate else "none",
               channels_last=candidate, compile=candidate and args.compile, schedule="cosine", lr=0.1)
    later = ms[1:] or ms
    return {"images_per_s": statistics.median(m["images_per_s"] for m in later),
            "data_wait_frac": statistics.median(m["data_wait_frac"] for m in later),
            "per_epoch_images_per_s": [round(m["images_per_s"], 1) for m in ms]}

def loader_only(folder, args):
    "Images/s of the training loader alone (the loader `train` builds: same dataset, transform, sampler and workers), its 2nd pass."
    from cogsynth.data import EpochSampler
    from cogsynth.train import build_data, get_recipe, _train_loader
    ds = build_data(str(folder), r=get_recipe("torch"), img_size=args.img_size, check=False)[0]
    loader = _train_loader(ds, EpochSampler([len(ds)], drop_last=True), args.batch_size, args.workers,
                           pin_memory=args.device.startswith("cuda"))
    for epoch in range(2):                          # the first pass starts the workers
        loader.sampler.set_epoch(epoch); n = 0; t0 = time.perf_counter()
        for x, _ in loader: n += len(x)
    sec = time.perf_counter() - t0
    return {"loader_images_per_s": round(n / sec, 1), "loader_images_per_s_per_worker": round(n / sec / max(1, args.workers), 1)}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default=None, help="default resnet50 on cuda, cnn_small on cpu")
    p.add_argument("--img-size", type=int, default=None, help="default 224 on cuda, 32 on cpu")
    p.add_argument("--images", type=int, default=None, help="default 12800 on cuda, 512 on cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 on cuda, 64 on cpu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: CPU cores on cuda, 0 on cpu)")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--compile", action="store_true", help="torch.compile the candidate")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--loader-only", action="store_true", help="time the loader alone (no model): e.g. --img-size 224 --workers 2 on a CPU")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    import torch
    if cuda and not torch.cuda.is_available():
        sys.exit("benchmarks/train_speed.py: --device cuda asked for but no CUDA GPU is visible")
    args.model = args.model or ("resnet50" if cuda else "cnn_small")
    args.img_size = args.img_size or (224 if cuda else 32)
    args.images = args.images or (12800 if cuda else 512)
    args.batch_size = args.batch_size or (256 if cuda else 64)
    args.workers = (min(16, os.cpu_count() or 1) if cuda else 0) if args.workers is None else args.workers
    if cuda: torch.backends.cudnn.benchmark = True
    os.environ.setdefault("COGSYNTH_QUIET", "1")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time(); make_images(Path(tmp)/"data", args.images, args.img_size, args.classes, args.workers or 1)
        gen_s = time.time() - t0
        loader = loader_only(Path(tmp)/"data", args)
        if args.loader_only:
            res = {"benchmark": "train_speed", "mode": "loader only", "img_size": args.img_size, "batch_size": args.batch_size,
                   "images": args.images, "workers": args.workers, "cpus": os.cpu_count(), **loader, "torch": torch.__version__}
            print(json.dumps(res, indent=1))
            return res
        cand = run(Path(tmp)/"data", Path(tmp)/"cand", args, True)
        base = None if args.no_baseline else run(Path(tmp)/"data", Path(tmp)/"base", args, False)
    from cogsynth.core import environment_info
    res = {"benchmark": "train_speed", "device": args.device,
           "device_name": torch.cuda.get_device_name() if cuda else "cpu", "model": args.model, "img_size": args.img_size,
           "batch_size": args.batch_size, "images": args.images, "epochs": args.epochs, "workers": args.workers,
           "candidate": ("AMP (bf16/fp16 autocast) + channels_last" if cuda else "channels_last, fp32") + (" + torch.compile" if args.compile else ""),
           "baseline": "same loop, fp32, NCHW",
           "images_per_s": round(cand["images_per_s"], 1), "loader_wait_share": round(cand["data_wait_frac"], 3),
           **loader, "loader_headroom": round(loader["loader_images_per_s"] / cand["images_per_s"], 2),
           "per_epoch_images_per_s": cand["per_epoch_images_per_s"],
           "baseline_images_per_s": None if base is None else round(base["images_per_s"], 1),
           "baseline_loader_wait_share": None if base is None else round(base["data_wait_frac"], 3),
           "ratio_vs_baseline": None if base is None else round(cand["images_per_s"] / base["images_per_s"], 3),
           "goal_images_per_s": 2000 if cuda and args.model == "resnet50" else None,
           "image_generation_s": round(gen_s, 1), "torch": torch.__version__, "cpus": os.cpu_count(),
           "environment": {k: v for k, v in environment_info().items() if k in ("python", "platform", "packages")}}
    print(json.dumps(res, indent=1))
    return res

if __name__ == "__main__":
    main()
