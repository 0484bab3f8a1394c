"""Training throughput of the cogsynth.train loop, in images/s, and the share of step time spent waiting on the loader.

GPU (the goal, issue 15: >= 3,000 images/s for resnet50 at 224 px on one H100/H200, data wait < 10% of step time):
    python benchmarks/train_speed.py --device cuda                         # cogsynth.train: AMP + channels_last vs fp32
    python benchmarks/train_speed.py --device cuda --data-path gpu-aug     # + the GPU-side input pipelines, same run
--data-path gpu-aug / nvjpeg time a plain training step (the same model, SGD, bf16 autocast, channels_last) fed two
ways that take the augmentation off the CPU: `gpu-aug` decodes JPEGs to uint8 in the loader workers
(torchvision.io.decode_jpeg, no PIL, no float work) and does random-resized-crop + flip + normalize for the whole
batch on the GPU (one affine grid_sample); `nvjpeg` has the workers only read the files and decodes the batch on the
GPU (torchvision.io.decode_jpeg(device="cuda")), then the same GPU augmentation. Both are compared with the
cogsynth.train candidate measured in the same run (`ratio_vs_train_loop`); on CPU they run with CPU decoding.
CPU (a small model on small images; the default):
    python benchmarks/train_speed.py

It writes pre-resized synthetic JPEGs (smooth random colour fields, so decoding costs what a photo costs) into a
temporary folder, then trains the `torch` recipe with cogsynth.train.train twice in the same run: the candidate
(AMP + channels_last on CUDA; channels_last on CPU) and the baseline (the same loop in fp32, NCHW). Throughput is the
median of the epochs after the first (warm-up: cuDNN autotuning, loader start). It also times the loader alone
(train's own loader, built by cogsynth.train.train_loader: same dataset, transform, sampler and workers, no model):
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
    "`n` JPEGs of `size` px in `classes` class folders (pre-resized: `size` = the training size x 256/224 on GPU)."
    chunks = [(str(root), s, min(256, n - s), size, classes, 0) for s in range(0, n, 256)]
    with Pool(max(1, workers)) as p: p.map(_write_images, chunks)

def run(folder, out, args, candidate:bool):
    from cogsynth.train import train
    ms = train(str(folder), args.model, "torch", epochs=args.epochs, out_dir=out, img_size=args.img_size,
               batch_size=args.batch_size, device=args.device, workers=args.workers, check_images=False,
               precision="auto" if candidate else "fp32",
               channels_last=candidate, compile=candidate and args.compile, schedule="cosine", lr=0.1)
    later = ms[1:] or ms
    return {"images_per_s": statistics.median(m["images_per_s"] for m in later),
            "data_wait_frac": statistics.median(m["data_wait_frac"] for m in later),
            "per_epoch_images_per_s": [round(m["images_per_s"], 1) for m in ms]}

def loader_only(folder, args):
    "Images/s of the training loader alone (the loader `train` builds: same dataset, transform, sampler and workers), its 2nd pass."
    from cogsynth.data import EpochSampler
    from cogsynth.train import build_data, get_recipe, train_loader
    ds = build_data(str(folder), r=get_recipe("torch"), img_size=args.img_size, check=False)[0]
    loader = train_loader(ds, EpochSampler([len(ds)], drop_last=True), args.batch_size, args.workers,
                           pin_memory=args.device.startswith("cuda"))
    for epoch in range(2):                          # the first pass starts the workers
        loader.sampler.set_epoch(epoch); n = 0; t0 = time.perf_counter()
        for x, _ in loader: n += len(x)
    sec = time.perf_counter() - t0
    return {"loader_images_per_s": round(n / sec, 1), "loader_images_per_s_per_worker": round(n / sec / max(1, args.workers), 1)}


# ---------------------------------------------------------------- GPU-side input pipelines (--data-path gpu-aug / nvjpeg)

class JpegFiles:
    "The JPEG files of a class-folder tree: item = (uint8 CHW decoded in the worker, label) or (raw bytes, label)."
    def __init__(self, root, decode:bool):
        self.files = sorted(Path(root).glob("*/*.jpg")); self.decode = decode
        names = sorted({p.parent.name for p in self.files}); self.idx = {n: i for i, n in enumerate(names)}
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        import torchvision.io as io
        data = io.read_file(str(self.files[i]))
        return (io.decode_jpeg(data, mode=io.ImageReadMode.RGB) if self.decode else data), self.idx[self.files[i].parent.name]

def _collate_raw(batch):
    import torch
    return [b[0] for b in batch], torch.tensor([b[1] for b in batch])

def gpu_augment(x, size:int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=None):
    "Random-resized-crop + horizontal flip + ImageNet normalization of a uint8 batch [B, 3, H, W], on its device, in one grid_sample."
    import math, torch, torch.nn.functional as F
    B, dev = x.shape[0], x.device
    U = lambda lo, hi: torch.rand(B, device=dev, generator=generator) * (hi - lo) + lo
    area, ar = U(*scale), torch.exp(U(math.log(ratio[0]), math.log(ratio[1])))
    w = torch.sqrt(area * ar).clamp(max=1.0); h = torch.sqrt(area / ar).clamp(max=1.0)     # crop size, fraction of the side
    cx, cy = U(-1, 1) * (1 - w), U(-1, 1) * (1 - h)
    flip = torch.where(U(0, 1) < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev)
    theta[:, 0, 0] = w * flip; theta[:, 0, 2] = cx; theta[:, 1, 1] = h; theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (B, 3, size, size), align_corners=False)
    out = F.grid_sample(x.float(), grid.to(torch.float32), mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = torch.tensor((0.485, 0.456, 0.406), device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor((0.229, 0.224, 0.225), device=dev).view(1, 3, 1, 1) * 255
    return ((out - mean) / std).contiguous(memory_format=torch.channels_last)

def gpu_pipeline(folder, args, mode:str) -> dict:
    "A plain training loop (model, SGD, bf16 autocast on CUDA, channels_last) fed by `mode`: 'gpu-aug' or 'nvjpeg'."
    import torch, torch.nn as nn, torchvision.io as io
    from cogsynth.models import create_encoder
    cuda = args.device.startswith("cuda"); dev = torch.device(args.device)
    ds = JpegFiles(folder, decode=(mode == "gpu-aug"))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                                         pin_memory=cuda, persistent_workers=args.workers > 0, collate_fn=_collate_raw,
                                         prefetch_factor=4 if args.workers > 0 else None)
    enc = create_encoder(args.model, num_classes=0)
    net = nn.Sequential(enc, nn.Linear(enc.num_features, len(ds.idx))).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    amp = torch.autocast("cuda", torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    loss_fn = nn.CrossEntropyLoss()
    step = torch.compile(lambda x, y: loss_fn(net(x), y)) if args.compile else (lambda x, y: loss_fn(net(x), y))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    per_epoch = []
    for epoch in range(args.epochs):
        n, wait, decode = 0, 0.0, 0.0
        sync(); t0 = tick = time.perf_counter()
        for imgs, y in loader:
            wait += time.perf_counter() - tick
            t1 = time.perf_counter()
            if mode == "nvjpeg":
                x = torch.stack(io.decode_jpeg(imgs, mode=io.ImageReadMode.RGB, device=dev if cuda else "cpu")).to(dev)
            else:
                x = torch.stack(imgs).to(dev, non_blocking=True)
            decode += time.perf_counter() - t1
            x = gpu_augment(x, args.img_size, scale=(0.08, 1.0) if args.img_size >= 64 else (0.35, 1.0))
            y = y.to(dev, non_blocking=True)
            with amp: loss = step(x, y)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            n += len(y); tick = time.perf_counter()
        sync(); sec = time.perf_counter() - t0
        per_epoch.append({"images_per_s": n / sec, "data_wait_frac": wait / sec, "decode_frac": decode / sec})
    later = per_epoch[1:] or per_epoch
    return {"images_per_s": round(statistics.median(e["images_per_s"] for e in later), 1),
            "data_wait_share": round(statistics.median(e["data_wait_frac"] for e in later), 3),
            "host_decode_and_copy_share": round(statistics.median(e["decode_frac"] for e in later), 3),
            "per_epoch_images_per_s": [round(e["images_per_s"], 1) for e in per_epoch]}

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
    p.add_argument("--data-path", default="loader", choices=["loader", "gpu-aug", "nvjpeg", "all"],
                   help="loader: cogsynth.train only; gpu-aug / nvjpeg / all: also the GPU-side input pipelines, same run")
    p.add_argument("--json-out", default=None, help="also write the JSON to this file")
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
    stored = int(round(args.img_size * 256 / 224)) if args.img_size >= 64 else args.img_size   # pre-resized shards
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time(); make_images(Path(tmp)/"data", args.images, stored, args.classes, args.workers or 1)
        gen_s = time.time() - t0
        loader = loader_only(Path(tmp)/"data", args)
        if args.loader_only:
            res = {"benchmark": "train_speed", "mode": "loader only", "img_size": args.img_size, "batch_size": args.batch_size,
                   "images": args.images, "workers": args.workers, "cpus": os.cpu_count(), **loader, "torch": torch.__version__}
            print(json.dumps(res, indent=1))
            return res
        cand = run(Path(tmp)/"data", Path(tmp)/"cand", args, True)
        base = None if args.no_baseline else run(Path(tmp)/"data", Path(tmp)/"base", args, False)
        modes = {"loader": [], "all": ["gpu-aug", "nvjpeg"]}.get(args.data_path, [args.data_path])
        gpu_paths = {m: gpu_pipeline(Path(tmp)/"data", args, m) for m in modes}
        for m, g in gpu_paths.items(): g["ratio_vs_train_loop"] = round(g["images_per_s"] / cand["images_per_s"], 3)
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
           "gpu_input_pipelines": gpu_paths or None,
           "goal": ">= 3000 images/s, data wait < 10% of step time (resnet50, 224 px, one H100/H200)" if cuda and args.model == "resnet50" else None,
           "goal_met": (any(g["images_per_s"] >= 3000 and g["data_wait_share"] < 0.1 for g in [*gpu_paths.values(),
                        {"images_per_s": cand["images_per_s"], "data_wait_share": cand["data_wait_frac"]}])
                        if cuda and args.model == "resnet50" else None),
           "stored_image_px": stored,
           "image_generation_s": round(gen_s, 1), "torch": torch.__version__, "cpus": os.cpu_count(),
           "environment": {k: v for k, v in environment_info().items() if k in ("python", "platform", "packages")}}
    print(json.dumps(res, indent=1))
    if args.json_out: Path(args.json_out).write_text(json.dumps(res, indent=1))
    return res

if __name__ == "__main__":
    main()
