"""Images/s of three ways to generate with the same pipeline, measured in one run, and the share of the FLOP limit.

GPU (the issue's setting): the Stable Diffusion 1.5 architecture (UNet, VAE and CLIP text encoder built from the
SD 1.5 configs below, random weights: speed does not depend on weight values), 512x384, 50 steps, guidance 7.5,
bf16. Measured, in this order:
- `plain` (the baseline): `pipe(prompt, ...)` one image at a time, as most scripts do (diffusers' default SDPA).
- `runner`: `cogsynth.generate.load_pipeline` + `generate` in batches, writing PNGs and the manifest.
- `fast`: what diffusers' fast-inference guide does, in a denoising loop of its own: SDPA with fused QKV projections
  (`fuse_qkv_projections`), channels_last UNet and VAE, torch.compile (`--compile`, default max-autotune on CUDA,
  fullgraph) of the UNet, and of the VAE decoder in default mode, with the guide's inductor flags, prompts encoded once per batch,
  timesteps kept on the device so no step waits on the host (counted: `host_syncs_per_step`, with
  torch.cuda.set_sync_debug_mode), and the VAE decode of the whole batch at once (`--decode-batch`); images stay
  uint8 on the GPU (no PNG writing: that is the runner's job).
The FLOPs of one image are counted with torch's FlopCounterMode; `share_of_flop_limit` = achieved FLOP/s over the
GPU's dense bf16 rate (`--peak-tflops`, default 790 on an H100/H200; the issue's goal: >= 0.40 for `fast`).

CPU: the same three with the tiny pipeline (`tiny_pipeline`), small defaults, no compile unless asked.

    python benchmarks/generate_speed.py                                          # CPU, tiny pipeline
    python benchmarks/generate_speed.py --device cuda                            # H100/H200: SD 1.5 architecture
    python benchmarks/generate_speed.py --device cuda --batch-size 16 --compile max-autotune
Prints one JSON object (and writes it to --json-out).
"""
import argparse, json, os, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
                 down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                 block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
                 act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, act_fn="silu", norm_num_groups=32,
                block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, sample_size=512, scaling_factor=0.18215)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, layer_norm_eps=1e-5)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)

def sd15_pipeline(folder, dtype):
    "Save a random-weight pipeline with the SD 1.5 architecture into `folder` (byte-level CLIP tokenizer)."
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from cogsynth.generate import write_byte_tokenizer
    tok = CLIPTokenizer.from_pretrained(write_byte_tokenizer(Path(folder)/".tok"))
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(**SD15_UNET), vae=AutoencoderKL(**SD15_VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT, bos_token_id=eos - 1, eos_token_id=eos, pad_token_id=eos)),
        tokenizer=tok, scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.to(dtype).save_pretrained(folder)
    return Path(folder)

def flops_per_image(pipe, width, height, steps, guidance, device, dtype):
    "FLOPs of one image: `steps` UNet calls (batch 2 with guidance), one VAE decode, the text encoder twice."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    lat = torch.randn(2 if guidance > 1 else 1, 4, height // 8, width // 8, device=device, dtype=dtype)
    ctx = torch.randn(lat.shape[0], 77, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype)
    ids = torch.zeros(lat.shape[0], 77, dtype=torch.long, device=device)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as f: pipe.unet(lat, 10, encoder_hidden_states=ctx)
        unet = f.get_total_flops()
        with FlopCounterMode(display=False) as f: pipe.vae.decode(lat[:1] / pipe.vae.config.scaling_factor)
        vae = f.get_total_flops()
        with FlopCounterMode(display=False) as f: pipe.text_encoder(ids)
        text = f.get_total_flops()
    return {"unet_step": unet, "vae_decode": vae, "text": text, "image": steps * unet + vae + text}

def fast_setup(pipe, compile_mode, device):
    "The fast-inference guide's settings on a loaded pipeline: fused QKV + SDPA, channels_last, compiled UNet and VAE decoder."
    import torch
    notes = []
    try:
        pipe.fuse_qkv_projections(); notes.append("fused qkv")
    except Exception as e:                         # an architecture without attention blocks to fuse
        notes.append(f"fused qkv unavailable ({type(e).__name__})")
    pipe.unet.to(memory_format=torch.channels_last); pipe.vae.to(memory_format=torch.channels_last)
    if compile_mode:
        import torch._inductor.config as ic
        ic.conv_1x1_as_mm = True; ic.coordinate_descent_tuning = True; ic.epilogue_fusion = False
        ic.coordinate_descent_check_all_directions = True
        pipe.unet = torch.compile(pipe.unet, mode=compile_mode, fullgraph=True)
        pipe.vae.decode = torch.compile(pipe.vae.decode, fullgraph=True)   # once per batch: default mode, less compile time
        notes.append(f"torch.compile UNet {compile_mode}, VAE decode default")
    pipe.set_progress_bar_config(disable=True)
    return notes

def fast_generate(pipe, prompts, *, steps, guidance, width, height, seed, decode_batch, count_syncs=False):
    "One batch through the fast loop: uint8 images [B, 3, H, W] on the device, and the host syncs seen in the loop."
    import torch, warnings
    dev, dtype = pipe.unet.device, pipe.unet.dtype
    cuda = dev.type == "cuda"
    with torch.inference_mode():
        cond, uncond = pipe.encode_prompt(prompts, dev, 1, guidance > 1, negative_prompt=[""] * len(prompts))
        ctx = torch.cat([uncond, cond]) if guidance > 1 else cond
        sch = pipe.scheduler
        sch.set_timesteps(steps)                                   # on the host: the scheduler's arithmetic stays there
        t_dev = sch.timesteps.to(dev)                              # the UNet's copy, moved once
        g = torch.Generator(dev).manual_seed(seed)
        f = getattr(pipe, "vae_scale_factor", 8)                  # 8 for SD; the tiny pipeline's VAE halves
        lat = torch.randn((len(prompts), pipe.unet.config.in_channels, height // f, width // f), generator=g, device=dev,
                          dtype=dtype) * sch.init_noise_sigma
        lat = lat.contiguous(memory_format=torch.channels_last)
        syncs = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda and count_syncs: torch.cuda.set_sync_debug_mode("warn")
            try:
                for i, t in enumerate(sch.timesteps):
                    x = torch.cat([lat, lat]) if guidance > 1 else lat
                    x = sch.scale_model_input(x, t)
                    eps = pipe.unet(x, t_dev[i], encoder_hidden_states=ctx, return_dict=False)[0]
                    if guidance > 1:
                        u, c = eps.chunk(2); eps = u + guidance * (c - u)
                    lat = sch.step(eps, t, lat, return_dict=False)[0]
            finally:
                if cuda and count_syncs: torch.cuda.set_sync_debug_mode(0)
            syncs = sum("synchroniz" in str(w.message) for w in caught)
        sf = pipe.vae.config.scaling_factor
        imgs = torch.cat([pipe.vae.decode(lat[k:k + decode_batch] / sf, return_dict=False)[0] for k in range(0, len(lat), decode_batch)])
        imgs = ((imgs.float() / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
    return imgs, syncs

def sync(device):
    import torch
    if device.type == "cuda": torch.cuda.synchronize()

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (tiny pipeline) or cuda (SD 1.5 architecture)")
    ap.add_argument("--model", default=None, help="a pipeline folder or hub id instead of the built one")
    ap.add_argument("--width", type=int, default=None, help="image width (default 512 on cuda, 32 on cpu)")
    ap.add_argument("--height", type=int, default=None, help="image height (default 384 on cuda, 32 on cpu)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 50 on cuda, 10 on cpu)")
    ap.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    ap.add_argument("--images", type=int, default=None, help="images timed per method (default 16)")
    ap.add_argument("--batch-size", type=int, default=None, help="runner and fast batch size (default 8)")
    ap.add_argument("--decode-batch", type=int, default=None, help="fast: VAE decode batch (default: the whole batch)")
    ap.add_argument("--precision", default=None, help="bf16 (cuda default), fp16, fp32 (cpu default)")
    ap.add_argument("--compile", default=None, help="fast: torch.compile mode (default max-autotune on cuda, none on cpu; 'none' to disable)")
    ap.add_argument("--runner-compile", default=None, help="runner: torch.compile mode of load_pipeline (default none)")
    ap.add_argument("--skip-runner", action="store_true", help="measure only plain and fast")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 TFLOP/s of the GPU (default: 790 on H100/H200)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    ap.add_argument("--json-out", default=None, help="also write the JSON to this file")
    args = ap.parse_args()

    import torch
    from diffusers import DiffusionPipeline
    from cogsynth.core import environment_info, get_device
    from cogsynth.generate import dtype_kwarg, generate, load_pipeline, pipeline_dtype, tiny_pipeline
    from cogsynth.prompts import make_plan
    device = get_device(args.device)                      # a cuda request without a GPU fails loudly
    if args.threads: torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    width = args.width or (512 if gpu else 32); height = args.height or (384 if gpu else 32)
    steps = args.steps or (50 if gpu else 10)
    n = args.images or 16
    bs = args.batch_size or 8
    precision = args.precision or ("bf16" if gpu else "fp32")
    dtype = pipeline_dtype(precision, device)
    compile_mode = args.compile or ("max-autotune" if gpu else None)
    compile_mode = None if compile_mode == "none" else compile_mode
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    work = Path(tempfile.mkdtemp(prefix="cogsynth-bench-"))
    t = time.time()
    model = args.model or (sd15_pipeline(work/"sd15", dtype) if gpu else tiny_pipeline(work/"tiny", image_size=max(width, height)))
    build_s = time.time() - t

    prompts = ["papillon, small slender toy spaniel with erect ears and a black-spotted brown to white coat",
               "pirate, pirate ship, ship inside hockey arena"]
    plan = make_plan({"papillon": prompts[0][:8], "pirate": prompts[1][:6]}, per_class=(n + 1) // 2 + bs,
                     prompt="{name}, a photo", guidance=args.guidance, steps=steps, size=(width, height), seed=0)
    warm, timed = plan[:bs], plan[bs:bs + n]
    res = {}

    # 1. baseline: a plain pipeline call per image (SDPA is diffusers' default attention)
    plain = DiffusionPipeline.from_pretrained(model, **{dtype_kwarg(): dtype}).to(device)
    plain.set_progress_bar_config(disable=True)
    call = lambda j: plain(j.prompt, num_inference_steps=j.steps, guidance_scale=j.guidance, width=j.width, height=j.height,
                           generator=torch.Generator("cpu").manual_seed(j.seed))
    call(warm[0]); sync(device)
    t = time.time()
    for j in timed: call(j).images[0]
    sync(device); res["plain"] = {"images_per_s": n / (time.time() - t), "batch_size": 1}
    flops = flops_per_image(plain, width, height, steps, args.guidance, device, dtype)

    # 2. the runner: load_pipeline (channels_last on cuda, optional compile) + generate in batches, PNGs and manifest written
    if not args.skip_runner:
        pipe = load_pipeline(model, device=device, precision=precision, compile=args.runner_compile or False)
        t = time.time(); generate(warm, pipe, work/"warm", batch_size=bs, summary=False); sync(device); warm_s = time.time() - t
        t = time.time(); s = generate(timed, pipe, work/"out", batch_size=bs, summary=False); sync(device)
        assert s["generated"] == n
        res["runner"] = {"images_per_s": n / (time.time() - t), "batch_size": bs, "warmup_s": round(warm_s, 1),
                         "compile": args.runner_compile}
        del pipe

    # 3. fast: fused QKV + SDPA, channels_last, compiled UNet and VAE decode, no host syncs, batched VAE decode
    fast = plain; del plain
    notes = fast_setup(fast, compile_mode, device)
    kw = dict(steps=steps, guidance=args.guidance, width=width, height=height, decode_batch=args.decode_batch or bs)
    batches = [[j.prompt for j in timed[k:k + bs]] for k in range(0, n, bs)]
    t = time.time(); fast_generate(fast, [j.prompt for j in warm], seed=0, **kw); sync(device); fast_warm = time.time() - t
    _, syncs = fast_generate(fast, batches[0], seed=1, count_syncs=True, **kw); sync(device)
    t = time.time()
    for k, b in enumerate(batches): imgs, _ = fast_generate(fast, b, seed=2 + k, **kw)
    sync(device)
    res["fast"] = {"images_per_s": n / (time.time() - t), "batch_size": bs, "decode_batch": kw["decode_batch"], "settings": notes,
                   "warmup_and_compile_s": round(fast_warm, 1), "host_syncs_per_step": round(syncs / steps, 2) if gpu else None,
                   "image_shape": list(imgs.shape[1:])}

    peak = args.peak_tflops or (790.0 if gpu and any(k in torch.cuda.get_device_name(0) for k in ("H100", "H200")) else None)
    for m in res.values():
        m["tflops"] = round(m["images_per_s"] * flops["image"] / 1e12, 2)
        m["share_of_flop_limit"] = round(m["images_per_s"] * flops["image"] / (peak * 1e12), 4) if peak else None
        m["ratio_vs_plain"] = round(m["images_per_s"] / res["plain"]["images_per_s"], 3)
        m["images_per_s"] = round(m["images_per_s"], 4)
    out = {"benchmark": "generate_speed", "device": str(device), "gpu": torch.cuda.get_device_name(0) if gpu else None,
           "model": "sd15-architecture-random" if gpu and not args.model else str(args.model or "tiny"),
           "precision": precision, "width": width, "height": height, "steps": steps, "guidance": args.guidance, "images": n,
           "methods": res, "gflop_per_image": round(flops["image"] / 1e9, 3), "gflop_unet_step": round(flops["unet_step"] / 1e9, 3),
           "peak_tflops": peak, "limit_images_per_s": round(peak * 1e12 / flops["image"], 3) if peak else None,
           "goal": "fast share_of_flop_limit >= 0.40 (512x384, 50 steps, CFG, bf16)" if gpu else None,
           "goal_met": bool(res["fast"]["share_of_flop_limit"] >= 0.40) if gpu and peak else None, "build_s": round(build_s, 1),
           "environment": {k: v for k, v in environment_info().items() if k in ("python", "packages", "cuda")}}
    print(json.dumps(out, indent=1))
    if args.json_out: Path(args.json_out).write_text(json.dumps(out, indent=1))

if __name__ == "__main__":
    main()
