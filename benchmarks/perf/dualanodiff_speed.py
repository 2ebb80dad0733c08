"""DualAnoDiff speed: training seconds/step and sampling seconds/pair.

(a) CPU, the offline small model at the quick-preset size;
(b) the real Stable Diffusion 1.5 architecture built from its config with random weights (speed does
    not need the weights): on CUDA at 512 px, batch 4 pairs, bf16, SDPA, with and without
    torch.compile, with peak GPU memory; on CPU one dual step at a small batch/resolution.

    python -m anobench.benchmarks.perf.dualanodiff_speed            # everything that fits the machine
    python -m anobench.benchmarks.perf.dualanodiff_speed --only sd15-cuda
    python -m anobench.benchmarks.perf.dualanodiff_speed --only sd15-overhead

``sd15-overhead`` measures the method's cost over plain DreamBooth-LoRA at SD-1.5 size, side by side
in one process (repetitions interleaved, min and median): a dual training step on P pairs against a
plain diffusers ``UNet2DConditionModel`` + LoRA step on the same 2P latents (the whole and part
targets), LoRA as ``train_dreambooth_lora.py --train_text_encoder`` adds it (peft, rank 32 on
``to_q/k/v/out.0`` and the text encoder's ``q/k/v/out_proj``, its default AdamW); and sampling one
pair against a plain ``StableDiffusionPipeline`` with that LoRA drawing the two images (whole and
part prompt) with the same steps and guidance, the dual pipeline with its cross-branch modules as
trained (``dual``) and fused as the generator samples (``dual fused``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from anobench.benchmarks.config import load_config
from anobench.generation.dualanodiff.components import (
    Components,
    build_offline_components,
    build_tokenizer,
    sampling_scheduler,
    sd15_configs,
)
from anobench.generation.dualanodiff.config import DualAnoDiffConfig
from anobench.generation.dualanodiff.data import PairData
from anobench.generation.dualanodiff.dual_unet import (
    DualAnoDiffModel,
    DualBranchUNet2DConditionModel,
    LoRACLIPTextModel,
    encode_prompts,
)
from anobench.generation.dualanodiff.pipeline import DualAnoDiffPipeline
from anobench.generation.dualanodiff.trainer import dual_loss, make_adamw, step_generator

PROMPTS = ("a vfx with sks", "sks")


def sd15_components(dtype: torch.dtype) -> Components:
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig

    cfg = sd15_configs()
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    return Components(
        vae=AutoencoderKL(**cfg["vae"]).to(dtype),
        unet=DualBranchUNet2DConditionModel(**cfg["unet"]).to(dtype),
        text_encoder=LoRACLIPTextModel(CLIPTextConfig(**cfg["text"])).to(dtype),
        tokenizer=build_tokenizer(list(PROMPTS)),
        scheduler_config=dict(scheduler.config),
    )


def random_pairs(n: int, resolution: int) -> PairData:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, resolution, resolution, generator=g) * 2 - 1
    masks = (torch.rand(n, 1, resolution, resolution, generator=g) > 0.7).float()
    return PairData(images=images, masks=masks, prompts=[PROMPTS] * n)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(
    parts: Components,
    pairs: int,
    resolution: int,
    device: torch.device,
    dtype: torch.dtype,
    compile_unet: bool = False,
    steps: int = 5,
    warmup: int = 2,
    rank: int = 32,
) -> float:
    """Seconds per dual fine-tune step (AdamW on LoRA + SAIM + text LoRA), after ``warmup`` steps."""
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    model = DualAnoDiffModel(parts, rank=rank).to(device)
    for p in model.parameters():
        p.data = p.data.to(dtype if not p.requires_grad else torch.float32)
    vae = parts.vae.to(device, dtype)
    if compile_unet:
        model.unet = torch.compile(model.unet)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_adamw(params, 2e-5, 1e-2)
    noise_scheduler = DDPMScheduler.from_config(parts.scheduler_config)
    data = random_pairs(pairs, resolution)
    model.train()
    times = []
    for step in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        g = step_generator(0, step)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = dual_loss(model, model, vae, noise_scheduler, data.batch(list(range(pairs)), g, True), g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - t0)
    del opt
    return sum(times[warmup:]) / steps


def time_sampling(
    parts: Components,
    pairs: int,
    resolution: int,
    steps: int,
    device: torch.device,
    dtype: torch.dtype,
    scheduler: str = "pndm",
    compile_unet: bool = False,
    rank: int = 32,
    repeats: int = 1,
) -> float:
    """Seconds per generated pair (CFG 2.5, ``steps`` denoising steps, ``pairs`` per batch)."""
    torch.manual_seed(0)
    model = DualAnoDiffModel(parts, rank=rank).to(device, dtype).eval()
    if compile_unet:
        model.unet = torch.compile(model.unet)
    pipe = DualAnoDiffPipeline.from_model(
        model, parts.vae.to(device, dtype), sampling_scheduler(scheduler, parts.scheduler_config)
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.fuse_cross_branch()  # as the generator samples
    size = {"height": resolution, "width": resolution, "num_images_per_prompt": pairs, "output_type": "pt"}
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        pipe(*PROMPTS, num_inference_steps=2, **size)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for r in range(repeats):
            gens = [torch.Generator().manual_seed(s) for s in range(r, r + pairs)]
            pipe(*PROMPTS, num_inference_steps=steps, generator=gens, **size)
        sync(device)
    return (time.perf_counter() - t0) / (pairs * repeats)


def cpu_small() -> None:
    quick = DualAnoDiffConfig(**load_config("quick").generation.options["dualanodiff"])
    parts = build_offline_components(
        quick.resolution,
        quick.offline_unet_channels,
        quick.offline_vae_channels,
        quick.offline_text_width,
        quick.offline_text_layers,
    )
    cpu = torch.device("cpu")
    train = time_training(
        parts, quick.train_batch_size, quick.resolution, cpu, torch.float32, rank=quick.rank
    )
    parts = build_offline_components(
        quick.resolution,
        quick.offline_unet_channels,
        quick.offline_vae_channels,
        quick.offline_text_width,
        quick.offline_text_layers,
    )
    sample = time_sampling(
        parts,
        quick.sample_batch_size,
        quick.resolution,
        quick.num_inference_steps,
        cpu,
        torch.float32,
        quick.scheduler,
        rank=quick.rank,
    )
    print(
        f"cpu offline-small ({quick.resolution}px, {torch.get_num_threads()} threads): train "
        f"{train:.3f} s/step (batch {quick.train_batch_size} pairs), sample {sample:.3f} s/pair "
        f"({quick.num_inference_steps} {quick.scheduler} steps, CFG, {quick.sample_batch_size} pairs/batch)"
    )


def sd15_cpu() -> None:
    cpu = torch.device("cpu")
    train = time_training(sd15_components(torch.float32), 1, 128, cpu, torch.float32, steps=1, warmup=1)
    print(f"cpu sd15-arch (128px, 1 pair, fp32, {torch.get_num_threads()} threads): train {train:.2f} s/step")


def sd15_cuda() -> None:
    if not torch.cuda.is_available():
        print("sd15-cuda: skipped (no CUDA device on this machine)")
        return
    dev, bf16 = torch.device("cuda"), torch.bfloat16
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    for compiled in (False, True):
        tag = "compile" if compiled else "eager"
        torch.cuda.reset_peak_memory_stats()
        train = time_training(
            sd15_components(bf16),
            4,
            512,
            dev,
            bf16,
            compile_unet=compiled,
            steps=10,
            warmup=3 if compiled else 2,
        )
        mem_train = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        sample = time_sampling(sd15_components(bf16), 4, 512, 100, dev, bf16, "pndm", compile_unet=compiled)
        mem_sample = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.empty_cache()
        print(
            f"sd15-arch cuda {tag}: train {train:.3f} s/step (4 pairs, 512px, bf16, "
            f"peak {mem_train:.1f} GiB); "
            f"sample {sample:.3f} s/pair (100 PNDM steps, CFG 2.5, 4 pairs/batch, "
            f"peak {mem_sample:.1f} GiB)"
        )


class PlainLoRA:
    """DreamBooth-LoRA on the dual model's own frozen UNet: peft LoRA as ``train_dreambooth_lora.py`` adds it.

    The plain and the dual steps share the UNet's frozen weights (the same tensors in memory, so the
    comparison sees the same convolutions); :meth:`use` switches the UNet between the two: the
    dual processors with the peft layers off, or diffusers' SDPA processor with them on. The text
    encoder is a separate copy with its own peft LoRA (the dual model's carries its own LoRA).
    It quacks like a plain :class:`DualAnoDiffModel` (``encode_prompts``, a call predicting the
    noise), so :func:`dual_loss` trains both on the same latents, noise and timesteps.
    """

    bcm = False

    def __init__(self, model: DualAnoDiffModel, rank: int = 32) -> None:
        from peft import LoraConfig, inject_adapter_in_model
        from transformers import CLIPTextModel

        self.unet = model.unet
        self.tokenizer = model.tokenizer
        self.dual_processors = dict(self.unet.attn_processors)
        self.text = CLIPTextModel(model.text_encoder.config)
        self.text.requires_grad_(False)
        before = {id(p) for p in self.unet.parameters()}
        # what UNet2DConditionModel.add_adapter / CLIPTextModel.add_adapter do (the latter's
        # transformers wrapper asks for a newer peft than the one pinned here)
        for module, targets in (
            (self.unet, ["to_k", "to_q", "to_v", "to_out.0"]),
            (self.text, ["q_proj", "k_proj", "v_proj", "out_proj"]),
        ):
            config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)
            inject_adapter_in_model(config, module)
        unet_lora = [p for p in self.unet.parameters() if id(p) not in before]
        self.params = unet_lora + [p for p in self.text.parameters() if p.requires_grad]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """The plain text encoder's hidden states (B, L, D)."""
        return encode_prompts(self.tokenizer, self.text, prompts)

    def __call__(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, prompt_embeds: torch.Tensor, _=None
    ):
        """The UNet's noise prediction (in whichever mode :meth:`use` set)."""
        return self.unet(noisy_latents, timesteps, prompt_embeds).sample

    def use(self, plain: bool) -> None:
        """Put the UNet in plain-LoRA (True) or dual (False) mode."""
        from diffusers.models.attention_processor import AttnProcessor2_0
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.unet.set_attn_processor(AttnProcessor2_0() if plain else dict(self.dual_processors))
        for module in self.unet.modules():
            if isinstance(module, BaseTunerLayer):
                module.enable_adapters(plain)


def sd15_overhead(pairs: int = 1, resolution: int = 128, repeats: int = 5, sample_steps: int = 10) -> None:
    """Dual step / plain LoRA step and dual pair / plain SD pipeline pair, side by side (CPU, fp32)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    parts = sd15_components(torch.float32)
    model = DualAnoDiffModel(parts, rank=32)  # installs the adapters in parts' UNet / text encoder
    dual_params = [p for p in model.parameters() if p.requires_grad]
    plain = PlainLoRA(model)
    noise_scheduler = DDPMScheduler.from_config(parts.scheduler_config)
    data = random_pairs(pairs, resolution)
    dual_opt = make_adamw(dual_params, 2e-5, 1e-2)
    plain_opt = torch.optim.AdamW(plain.params, lr=2e-5, weight_decay=1e-2)  # the script's default

    def training_step(forward: Any, params: list[torch.nn.Parameter], optimizer: Any) -> Any:
        def step(i: int) -> None:
            plain.use(forward is plain)
            g = step_generator(0, i)
            batch = data.batch(list(range(pairs)), g, True)
            dual_loss(forward, forward, parts.vae, noise_scheduler, batch, g).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    train = interleaved(
        {
            "dual": training_step(model, dual_params, dual_opt),
            "plain": training_step(plain, plain.params, plain_opt),
        },
        repeats,
    )
    report("train step", train, f"{pairs} pair(s), {resolution}px, fp32")

    model.eval()
    scheduler = sampling_scheduler("pndm", parts.scheduler_config)
    dual_pipe = DualAnoDiffPipeline.from_model(model, parts.vae, scheduler)
    plain_pipe = StableDiffusionPipeline(
        parts.vae,
        plain.text,
        parts.tokenizer,
        plain.unet,
        scheduler,
        None,
        None,
        requires_safety_checker=False,
    )
    for pipe in (dual_pipe, plain_pipe):
        pipe.set_progress_bar_config(disable=True)
    size = {
        "height": resolution,
        "width": resolution,
        "num_inference_steps": sample_steps,
        "output_type": "pt",
    }

    modes = sampling_modes(plain)

    def pair(name: str) -> Any:
        def run(r: int) -> None:
            modes[name]()
            generator = torch.Generator().manual_seed(r)
            if name == "plain":
                plain_pipe(list(PROMPTS), generator=generator, guidance_scale=2.5, **size)
            else:
                dual_pipe(*PROMPTS, generator=generator, guidance_scale=2.5, **size)

        return run

    with torch.no_grad():
        sample = interleaved({name: pair(name) for name in modes}, max(2, repeats // 2))
        flops = unet_call_flops(plain.unet, modes, resolution)
    report("sample pair", sample, f"{sample_steps} PNDM steps, CFG 2.5, {resolution}px, fp32")
    print(
        "sd15-arch UNet call FLOPs (one pair with CFG; torch.utils.flop_counter, no SDPA on CPU): "
        + ", ".join(f"{name} {n / 1e9:.1f} G ({n / flops['plain']:.3f}x)" for name, n in flops.items())
    )


def sampling_modes(plain: PlainLoRA) -> dict[str, Any]:
    """Setters of the shared UNet's sampling modes: ``dual`` (SAIM as trained), ``dual fused`` (as
    the generator samples, :meth:`DualAnoDiffPipeline.fuse_cross_branch`) and ``plain`` LoRA."""
    saims = [p.saim for p in plain.dual_processors.values()]  # (the UNet may be in plain mode now)
    composed = [m.fuse() for m in saims]

    def dual_mode(fused: bool) -> Any:
        def setup() -> None:
            plain.use(False)
            for module, weights in zip(saims, composed, strict=True):
                module.fused = weights if fused else None

        return setup

    return {"dual": dual_mode(False), "dual fused": dual_mode(True), "plain": lambda: plain.use(True)}


def unet_call_flops(unet: torch.nn.Module, modes: dict[str, Any], resolution: int) -> dict[str, int]:
    """FLOPs of one sampling UNet call (a pair, or two images, with CFG) in each of ``modes``.

    The machine-independent floor of the measured sampling ratios.
    """
    from torch.utils.flop_counter import FlopCounterMode

    latents = torch.zeros(4, unet.config.in_channels, resolution // 8, resolution // 8)
    context = torch.zeros(4, 77, unet.config.cross_attention_dim)
    counts = {}
    for name, setup in modes.items():
        setup()
        with FlopCounterMode(display=False) as counter:
            unet(latents, torch.full((4,), 500), context)
        counts[name] = counter.get_total_flops()
    return counts


def interleaved(runs: dict[str, Any], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each ``runs[name](i)`` call, the names alternating; ``warmup`` rounds not timed."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run(i)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def report(what: str, times: dict[str, list[float]], setting: str) -> None:
    """One line per dual variant: its min / median against plain LoRA's, and their ratios."""
    plain = times["plain"]
    for name, dual in times.items():
        if name == "plain":
            continue
        print(
            f"sd15-arch {what} ({setting}, {torch.get_num_threads()} threads, {len(dual)} repeats): "
            f"{name} min {min(dual):.2f} s (median {statistics.median(dual):.2f}), "
            f"plain LoRA min {min(plain):.2f} s "
            f"(median {statistics.median(plain):.2f}); {name}/plain {min(dual) / min(plain):.2f}x by min, "
            f"{statistics.median(dual) / statistics.median(plain):.2f}x by median"
        )


def adamw(repeats: int = 5) -> None:
    """AdamW over the SD-1.5 dual model's trainable tensors: the for-loop default, foreach, fused.

    Interleaved repetitions in one process; the updates are compared with the default's.
    """
    parts = sd15_components(torch.float32)
    shapes = [p.shape for p in DualAnoDiffModel(parts, rank=32).parameters() if p.requires_grad]
    del parts
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(shape, generator=g) for shape in shapes]
    grads = [torch.randn(shape, generator=g) for shape in shapes]
    variants = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    params, opts = {}, {}
    for name, kwargs in variants.items():
        params[name] = [torch.nn.Parameter(t.clone()) for t in start]
        for p, grad in zip(params[name], grads, strict=True):
            p.grad = grad
        opts[name] = torch.optim.AdamW(params[name], lr=1e-4, weight_decay=1e-2, eps=1e-8, **kwargs)
    times = interleaved(
        {name: lambda _, opt=opt: opt.step() for name, opt in opts.items()}, repeats, warmup=0
    )
    n = sum(t.numel() for t in start)
    base = statistics.median(times["default"])
    for name in variants:
        diff = max(float((a - b).abs().max()) for a, b in zip(params[name], params["default"], strict=True))
        median = statistics.median(times[name])
        print(
            f"adamw {name:8s} over {len(shapes)} tensors, {n / 1e6:.0f} M params: "
            f"min {min(times[name]):.3f} s, median {median:.3f} s, default/this {base / median:.2f}x, "
            f"max |param - default| after {repeats} steps {diff:.1e}"
        )


MEMORY_WORK = """
import resource, tempfile, torch
from anobench.benchmarks.perf.dualanodiff_speed import random_pairs, sd15_components
from anobench.generation.dualanodiff.config import DualAnoDiffConfig
from anobench.generation.dualanodiff.trainer import train_dual
fields = {fields!r}
config = DualAnoDiffConfig(resolution=128, rank=32, max_train_steps=2, checkpointing_steps=0, device="cpu",
                           offline_branch_labels=False, **fields)
with tempfile.TemporaryDirectory() as out:
    train_dual(sd15_components(torch.float32), random_pairs(4, 128), config, out, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

MEMORY_VARIANTS: dict[str, dict[str, object]] = {
    "batch 4": {"train_batch_size": 4},
    "batch 1 x accumulation 4": {"train_batch_size": 1, "gradient_accumulation_steps": 4},
    "batch 4 + gradient checkpointing": {"train_batch_size": 4, "gradient_checkpointing": True},
    "batch 1 x accumulation 4 + checkpointing": {
        "train_batch_size": 1,
        "gradient_accumulation_steps": 4,
        "gradient_checkpointing": True,
    },
}


def sd15_memory() -> None:
    """Peak RSS of two dual training steps (SD-1.5 architecture, 128 px, fp32, CPU) per memory knob.

    Each variant is a fresh subprocess running :func:`train_dual` with those config fields; the
    same 4 pairs per optimiser step either as one batch or as accumulated micro-batches.
    """
    import subprocess
    import sys

    for name, fields in MEMORY_VARIANTS.items():
        code = MEMORY_WORK.format(fields=fields)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-2000:]}")
        print(f"sd15-arch train peak RSS ({name}): {float(out.stdout.split()[-1]):.0f} MB", flush=True)


PARTS = {
    "cpu-small": cpu_small,
    "sd15-cpu": sd15_cpu,
    "sd15-overhead": sd15_overhead,
    "sd15-cuda": sd15_cuda,
    "sd15-memory": sd15_memory,
    "adamw": adamw,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(PARTS), action="append", help="run only these parts")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="sd15-overhead: timed training steps (sampled pairs: half, at least 2)",
    )
    args = parser.parse_args()
    for name in args.only or PARTS:
        PARTS[name](**({"repeats": args.repeats} if name == "sd15-overhead" else {}))


if __name__ == "__main__":
    main()
