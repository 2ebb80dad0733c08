"""The dual fine-tune loop (:func:`train_dual`, driven by ``accelerate``), its loss and checkpoints.

Its ``step_generator`` also seeds the offline base training
(:mod:`anobench.generation.dualanodiff.offline_base`); the command line is
:mod:`anobench.generation.dualanodiff.train`.

Every step is a pure function of ``(seed, step)``: the batch order, flips, timesteps and noise come
from generators seeded with both, so a run resumed from a checkpoint continues exactly where the
killed one was (tested: N steps straight == k steps + resume). Checkpoints are
``<output_dir>/checkpoint-<step>/`` with ``weights.safetensors`` (the trainable tensors),
``optimizer.safetensors`` (AdamW moments) and ``state.json`` (step, scheduler, config); loading
never unpickles. The final weights are ``<output_dir>/weights.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from anobench.generation.dualanodiff.components import Components
from anobench.generation.dualanodiff.config import DualAnoDiffConfig
from anobench.generation.dualanodiff.data import PairBatch, PairData
from anobench.generation.dualanodiff.dual_unet import DualAnoDiffModel

WEIGHTS, OPTIMIZER, STATE, CONFIG = (
    "weights.safetensors",
    "optimizer.safetensors",
    "state.json",
    "config.json",
)


def step_generator(
    seed: int, step: int, rank: int = 0, device: str | torch.device = "cpu"
) -> torch.Generator:
    """The random stream of one training step (and process)."""
    return torch.Generator(device).manual_seed((seed * 1_000_003 + step * 131 + rank) % (2**63))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Sample indices of ``step``: epochs are seeded permutations, walked ``batch_size`` at a time."""
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        out.append(int(perm[offset]))
    return out


def encode_latents(
    vae: Any, images: torch.Tensor, generator: torch.Generator | None, scale: bool = True
) -> torch.Tensor:
    """VAE latents: ``.sample()`` of the latent distribution (noise from ``generator``).

    Times the scaling factor unless ``scale`` is False (BCM's quirk).
    """
    dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    device = generator.device if generator is not None else "cpu"
    noise = torch.randn(dist.mean.shape, generator=generator, device=device).to(dist.mean)
    latents = dist.mean + dist.std * noise
    return latents * vae.config.scaling_factor if scale else latents


def dual_loss(
    forward: Any,
    model: DualAnoDiffModel,
    vae: Any,
    noise_scheduler: Any,
    batch: PairBatch,
    g: torch.Generator,
    mask_loss_weight: float = 0.0,
) -> torch.Tensor:
    """Epsilon-MSE of one batch over both branches (``forward``: the model, possibly DDP-wrapped).

    Pairs are interleaved ``[whole_0, part_0, whole_1, part_1, ...]``, both members of a pair share
    the timestep and get independent noise; BCM backgrounds are encoded without the scaling
    factor (as the released code) and noised to the pair's timestep. With ``mask_loss_weight`` w > 0
    (not in the release) the squared error of latent pixels under the anomaly mask (max-pooled to
    the latent grid) counts 1 + w times, in both branches, and the mean is over the weights.
    """
    device = vae.device
    with torch.no_grad():
        targets = torch.stack([batch.wholes, batch.parts], dim=1).flatten(0, 1)
        latents = encode_latents(vae, targets, g)
        noise = torch.randn(latents.shape, generator=g).to(device, latents.dtype)
        n_train = noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, n_train, (len(batch.wholes),), generator=g).repeat_interleave(2).to(device)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        noisy_bg = None
        if model.bcm:
            bg = encode_latents(vae, batch.backgrounds, g, scale=False)  # unscaled, as the released code
            bg_noise = torch.randn(bg.shape, generator=g).to(device, bg.dtype)
            noisy_bg = noise_scheduler.add_noise(bg, bg_noise, t[::2])
    embeds = model.encode_prompts([p for pair in batch.prompts for p in pair])
    pred = forward(noisy, t, embeds, noisy_bg)
    if not mask_loss_weight:
        return F.mse_loss(pred.float(), noise.float())
    factor = batch.masks.shape[-1] // latents.shape[-1]
    weight = 1 + mask_loss_weight * F.max_pool2d(batch.masks.float(), factor).repeat_interleave(2, dim=0)
    weight = weight.to(device)
    return (weight * (pred.float() - noise.float()) ** 2).mean() / weight.mean()


def _atomic_dir(final: Path) -> Path:
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(
    output_dir: Path,
    step: int,
    model: DualAnoDiffModel,
    optimizer: torch.optim.Optimizer,
    lr_sched: Any,
    config: DualAnoDiffConfig,
) -> Path:
    """Write ``checkpoint-<step>`` atomically (temporary folder, then rename)."""
    from safetensors.torch import save_file

    final = output_dir / f"checkpoint-{step}"
    tmp = _atomic_dir(final)
    save_file(model.trainable_state_dict(), str(tmp / WEIGHTS))
    opt_state = optimizer.state_dict()
    tensors = {
        f"{idx}.{key}": value.detach().contiguous()
        for idx, state in opt_state["state"].items()
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
    }
    save_file(tensors, str(tmp / OPTIMIZER))
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
        for g in opt_state["param_groups"]
    ]
    state = {
        "step": step,
        "param_groups": groups,
        "lr_scheduler": lr_sched.state_dict(),
        "config": dataclasses.asdict(config),
    }
    (tmp / STATE).write_text(json.dumps(state, indent=2, default=str))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = []
    for path in output_dir.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / STATE).exists():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def load_checkpoint(
    path: Path, model: DualAnoDiffModel, optimizer: torch.optim.Optimizer, lr_sched: Any
) -> int:
    """Restore weights, optimiser moments and scheduler from ``path``; returns its step."""
    from safetensors.torch import load_file

    model.load_trainable(path / WEIGHTS)
    state = json.loads((path / STATE).read_text())
    tensors = load_file(str(path / OPTIMIZER))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        per_param.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    lr_sched.load_state_dict(state["lr_scheduler"])
    return int(state["step"])


def make_adamw(
    params: list[torch.nn.Parameter], lr: float, weight_decay: float, eight_bit: bool = False
) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.999, eps 1e-8) with the fused kernel: one pass over all tensors.

    The default on CPU loops over the ~700 adapter tensors one at a time; the fused kernel (CPU
    and CUDA) computes the same update within float32 rounding, several times faster
    (``python -m anobench.benchmarks.perf.dualanodiff_speed --only adamw``). ``eight_bit``:
    bitsandbytes' ``AdamW8bit`` with the same hyper-parameters (its states in 8 bits), as
    ``train_dreambooth_lora.py --use_8bit_adam``.
    """
    kwargs = {"lr": lr, "betas": (0.9, 0.999), "weight_decay": weight_decay, "eps": 1e-8}
    if eight_bit:
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, fused=True, **kwargs)


def train_dual(
    components: Components,
    data: PairData,
    config: DualAnoDiffConfig,
    output_dir: str | Path,
    resume: str | None = "latest",
    progress: bool = True,
    stop_after: int | None = None,
    category: str = "",
) -> DualAnoDiffModel:
    """Dual fine-tune on ``data``; writes checkpoints and the final ``weights.safetensors``.

    Args:
        components: the frozen base (modified in place: adapters are installed).
        data: the few-shot pairs (and backgrounds for BCM).
        config: optimiser, model and checkpoint settings.
        output_dir: checkpoints and final weights go here.
        resume: ``"latest"`` continues from the newest checkpoint in ``output_dir`` (if any),
            a path resumes from that checkpoint, None starts over.
        progress: show a tqdm bar.
        stop_after: stop (without final weights) after this many steps: simulates a killed run.
        category: fills the config's unset fields as released for it (``for_category``).

    Returns:
        The trained model (on the accelerator's device).
    """
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    config = config.for_category(category)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cpu = config.device == "cpu" or (config.device is None and not torch.cuda.is_available())
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu)
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )

    torch.manual_seed(config.seed)  # the adapters' initialisation
    model = DualAnoDiffModel(
        components,
        rank=config.rank,
        coupling=config.coupling,
        bcm=config.bcm,
        train_text_encoder=config.train_text_encoder,
        bcm_hidden=config.bcm_hidden,
    )
    if config.offline and config.offline_branch_labels:
        model.zero_coupling()
    vae = components.vae.to(device)
    if weight_dtype != torch.float32:
        vae.to(dtype=weight_dtype)
    # frozen base weights in the compute dtype, trainable tensors in fp32 (diffusers' recipe)
    model.to(device)
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(weight_dtype)
    if config.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_adamw(params, config.learning_rate, config.adam_weight_decay, config.use_8bit_adam)
    lr_sched = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps,
        num_training_steps=config.max_train_steps,
    )
    noise_scheduler = DDPMScheduler.from_config(components.scheduler_config)

    step = 0
    checkpoint = latest_checkpoint(output_dir) if resume == "latest" else (Path(resume) if resume else None)
    if checkpoint is not None:
        step = load_checkpoint(checkpoint, model, optimizer, lr_sched)
    wrapped, optimizer, lr_sched = accelerator.prepare(model, optimizer, lr_sched)
    model.train()

    last = config.max_train_steps if stop_after is None else min(config.max_train_steps, stop_after)
    bar = tqdm(
        total=config.max_train_steps,
        initial=step,
        desc="dual fine-tune",
        unit="step",
        disable=not progress or not accelerator.is_main_process,
        leave=False,
    )
    rank, accum = accelerator.process_index, config.gradient_accumulation_steps
    while step < last:
        losses = []
        for micro in range(step * accum, (step + 1) * accum):  # micro == step without accumulation
            g = step_generator(config.seed, micro, rank)
            indices = batch_indices(
                len(data), config.train_batch_size, micro * accelerator.num_processes + rank, config.seed
            )
            batch = data.batch(indices, g, config.flips)
            with accelerator.autocast():
                loss = dual_loss(
                    wrapped,
                    accelerator.unwrap_model(wrapped),
                    vae,
                    noise_scheduler,
                    batch,
                    g,
                    mask_loss_weight=config.mask_loss_weight,
                )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"dual fine-tune: loss is {loss.item()} at step {step}")
            accelerator.backward(loss / accum)  # (exact for accum 1: x / 1 == x)
            losses.append(loss.item())
        loss = sum(losses) / accum
        if accelerator.sync_gradients and config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{loss:.4f}")
        if (
            accelerator.is_main_process
            and config.checkpointing_steps
            and step % config.checkpointing_steps == 0
        ):
            save_checkpoint(output_dir, step, accelerator.unwrap_model(wrapped), optimizer, lr_sched, config)
    bar.close()
    model = accelerator.unwrap_model(wrapped)
    model.eval()
    if step >= config.max_train_steps and accelerator.is_main_process:
        save_final(output_dir, model, config)
    accelerator.wait_for_everyone()
    return model


def save_final(output_dir: Path, model: DualAnoDiffModel, config: DualAnoDiffConfig) -> None:
    """The final adapters (``weights.safetensors``) and the config that made them (``config.json``)."""
    from safetensors.torch import save_file

    tmp = output_dir / f".{WEIGHTS}.tmp"
    save_file(model.trainable_state_dict(), str(tmp))
    (output_dir / CONFIG).write_text(json.dumps(dataclasses.asdict(config), indent=2, default=str))
    os.replace(tmp, output_dir / WEIGHTS)
