"""Images/s of the cogsynth generation runner against a plain diffusers pipeline call at batch size 1, same run.

GPU (the issue's setting): the Stable Diffusion 1.5 architecture (UNet, VAE and CLIP text encoder built from the
SD 1.5 configs below, random weights: speed does not depend on weight values), 512x384, 50 steps, guidance 7.5,
fp16. The runner loads the saved pipeline through `cogsynth.generate.load_pipeline` (SDPA attention, channels_last,
optional torch.compile) and runs `generate` in batches, writing PNGs and the manifest; the baseline is
`pipe(prompt, ...)` one image at a time, as most scripts do. Also reported: the FLOPs of one image (counted with
torch's FlopCounterMode) and the share of the GPU's dense fp16/bf16 rate the runner reaches (DESIGN.md: ~790
TFLOP/s on an H100/H200).

CPU: the same comparison with the tiny pipeline (`tiny_pipeline`), small defaults.

    python benchmarks/generate_speed.py                                  # CPU, tiny pipeline
    python benchmarks/generate_speed.py --device cuda                    # H100: SD 1.5 architecture
    python benchmarks/generate_speed.py --device cuda --compile          # + torch.compile on the UNet
Prints one JSON object.
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

def sync(device):
    import torch
    if device.type == "cuda": torch.cuda.synchronize()

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (tiny pipeline) or cuda (SD 1.5 architecture)")
    ap.add_argument("--model", default=None, help="a pipeline folder or hub id instead of the built one")
    ap.add_argument("--width", type=int, default=None); ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None); ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--images", type=int, default=None, help="images timed per method")
    ap.add_argument("--batch-size", type=int, default=None, help="runner batch size")
    ap.add_argument("--dtype", default=None, help="fp16 (cuda default), bf16, fp32 (cpu default)")
    ap.add_argument("--compile", default=None, nargs="?", const="default", help="torch.compile the runner's UNet (mode)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense fp16/bf16 TFLOP/s of the GPU (default: 790 on H100/H200)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    args = ap.parse_args()

    import torch
    from diffusers import DiffusionPipeline
    from cogsynth.core import environment_info, get_device
    from cogsynth.generate import generate, load_pipeline, tiny_pipeline, _dtype, _DTYPE_KW
    from cogsynth.prompts import make_plan
    device = get_device(args.device)                      # a cuda request without a GPU fails loudly
    if args.threads: torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    width = args.width or (512 if gpu else 32); height = args.height or (384 if gpu else 32)
    steps = args.steps or (50 if gpu else 10)
    n = args.images or 16
    bs = args.batch_size or 8
    dtype = _dtype(args.dtype or ("fp16" if gpu else "fp32"), device)
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

    # baseline: a plain pipeline call per image (SDPA is diffusers' default attention)
    plain = DiffusionPipeline.from_pretrained(model, **{_DTYPE_KW(): dtype}).to(device)
    plain.set_progress_bar_config(disable=True)
    call = lambda j: plain(j.prompt, num_inference_steps=j.steps, guidance_scale=j.guidance, width=j.width, height=j.height,
                           generator=torch.Generator("cpu").manual_seed(j.seed))
    call(warm[0]); sync(device)
    t = time.time()
    for j in timed: call(j).images[0]
    sync(device); plain_s = time.time() - t
    flops = flops_per_image(plain, width, height, steps, args.guidance, device, dtype)
    del plain
    if gpu: torch.cuda.empty_cache()

    # the runner: load_pipeline (channels_last on cuda, optional compile) + generate in batches, PNGs and manifest written
    pipe = load_pipeline(model, device=device, dtype=args.dtype or ("fp16" if gpu else "fp32"), compile=args.compile or False)
    t = time.time()
    generate(warm, pipe, work/"warm", batch_size=bs, summary=False); sync(device)
    warm_s = time.time() - t
    t = time.time()
    s = generate(timed, pipe, work/"out", batch_size=bs, summary=False); sync(device)
    runner_s = time.time() - t
    assert s["generated"] == n

    plain_ips, runner_ips = n / plain_s, n / runner_s
    peak = args.peak_tflops or (790.0 if gpu and any(k in torch.cuda.get_device_name(0) for k in ("H100", "H200")) else None)
    res = {"benchmark": "generate_speed", "device": str(device), "gpu": torch.cuda.get_device_name(0) if gpu else None,
           "model": "sd15-architecture-random" if gpu and not args.model else str(args.model or "tiny"),
           "dtype": str(dtype).replace("torch.", ""), "width": width, "height": height, "steps": steps, "guidance": args.guidance,
           "images": n, "runner_batch_size": bs, "compile": args.compile,
           "plain_images_per_s": round(plain_ips, 4), "runner_images_per_s": round(runner_ips, 4),
           "ratio_runner_over_plain": round(runner_ips / plain_ips, 3),
           "gflop_per_image": round(flops["image"] / 1e9, 3), "gflop_unet_step": round(flops["unet_step"] / 1e9, 3),
           "runner_tflops": round(runner_ips * flops["image"] / 1e12, 1), "peak_tflops": peak,
           "limit_images_per_s": round(peak * 1e12 / flops["image"], 3) if peak else None,
           "share_of_flop_limit": round(runner_ips * flops["image"] / (peak * 1e12), 4) if peak else None,
           "runner_warmup_s": round(warm_s, 1), "build_s": round(build_s, 1),
           "environment": {k: v for k, v in environment_info().items() if k in ("python", "packages", "cuda")}}
    print(json.dumps(res, indent=1))

if __name__ == "__main__":
    main()
