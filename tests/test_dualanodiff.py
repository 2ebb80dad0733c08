"""DualAnoDiff on tiny models built from configs (CPU, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anobench.generation.dualanodiff.config import DualAnoDiffConfig

GOLDEN = Path(__file__).parent / "data" / "dualanodiff_golden.npz"  # pre-refactor samples (BCM: re-recorded
# when the condition latent became a sample with independent noise per CFG half, as released)

TINY = {
    "pretrained_model_name_or_path": None,
    "resolution": 16,
    "rank": 2,
    "train_batch_size": 2,
    "learning_rate": 1e-2,
    "offline_unet_channels": (8, 16),
    "offline_vae_channels": (8, 16),
    "offline_text_width": 16,
    "offline_text_layers": 1,
    "bcm_hidden": 8,
    "checkpointing_steps": 0,
    "device": "cpu",
    "seed": 3,
}


def tiny_config(**overrides) -> DualAnoDiffConfig:
    return DualAnoDiffConfig(**{**TINY, **overrides})


def tiny_components():
    from anobench.generation.dualanodiff.components import build_offline_components

    c = tiny_config()
    return build_offline_components(16, c.offline_unet_channels, c.offline_vae_channels, 16, 1, seed=0)


def tiny_model(coupling: bool = True, bcm: bool = False, seed: int = 0):
    from anobench.generation.dualanodiff.dual_unet import DualAnoDiffModel

    parts = tiny_components()
    torch.manual_seed(seed)
    return DualAnoDiffModel(parts, rank=2, coupling=coupling, bcm=bcm, bcm_hidden=8).eval(), parts


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    """Three 16x16 anomaly images with square masks."""
    from PIL import Image

    from anobench.generation.dualanodiff.data import load_pair_data

    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        mask = np.zeros((16, 16), np.uint8)
        mask[4 + i : 9 + i, 3:10] = 255
        Image.fromarray(image).save(root / f"{i}.png")
        Image.fromarray(mask).save(root / f"{i}_mask.png")
        samples.append((root / f"{i}.png", root / f"{i}_mask.png", ("a vfx with sks", "sks")))
    return load_pair_data(samples, 16), load_pair_data(samples, 16, np.array([0.0, 0.0, 0.0]), bcm=True)


def _inputs(pairs: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2 * pairs, 4, 8, 8, generator=g)
    t = torch.full((2 * pairs,), 500)
    return latents, t


def _embeds(model, pairs: int = 2):
    with torch.no_grad():
        return model.encode_prompts(["a vfx with sks", "sks"] * pairs)


def test_part_target_is_grey_outside_mask(pair_data):
    data, _ = pair_data
    batch = data.batch([0, 1], torch.Generator().manual_seed(0), flips=True)
    # the batch's masks carry the same flips as the images: the part is the whole inside them and
    # zero (mid-grey) outside
    assert torch.equal(batch.parts, batch.wholes * batch.masks)
    assert ((batch.masks == 0) | (batch.masks == 1)).all()
    assert all(0 < m.mean() < 1 for m in batch.masks)
    for k, i in enumerate([0, 1]):
        assert any(torch.equal(batch.masks[k], data.masks[i].flip(d) if d else data.masks[i])
                   for d in ([], [1], [2], [1, 2]))  # fmt: skip
    assert batch.prompts == [("a vfx with sks", "sks")] * 2


class _RecordingScheduler:
    """A noise scheduler that records the noise of the latents (``add_noise`` returns it as is)."""

    config = type("Config", (), {"num_train_timesteps": 1000})

    def add_noise(self, latents, noise, t):
        self.noise = noise
        return latents


def test_mask_loss_weight_counts_the_masked_latents_more(pair_data):
    from anobench.generation.dualanodiff.trainer import dual_loss

    data, _ = pair_data
    model, parts = tiny_model()
    batch = data.batch([0, 2], torch.Generator().manual_seed(0), flips=False)
    pred = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def loss(weight: float, batch=batch) -> tuple[float, torch.Tensor]:
        scheduler = _RecordingScheduler()
        g = torch.Generator().manual_seed(5)
        value = dual_loss(lambda *_: pred, model, parts.vae, scheduler, batch, g, mask_loss_weight=weight)
        return value.item(), scheduler.noise

    plain, noise = loss(0.0)
    se = (pred - noise) ** 2
    assert plain == pytest.approx(se.mean().item(), rel=1e-6)
    # by hand: a latent pixel (2 x 2 image pixels) is masked when any of its image pixels is; both
    # members of a pair share their sample's mask
    masked = torch.zeros(4, 1, 8, 8)
    for k in range(2):
        for i in range(8):
            for j in range(8):
                masked[2 * k : 2 * k + 2, 0, i, j] = float(
                    batch.masks[k, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].any()
                )
    assert 0 < masked.mean() < 1
    weight = 1 + 3.0 * masked.expand_as(se)
    weighted, _ = loss(3.0)
    assert weighted == pytest.approx(((weight * se).sum() / weight.sum()).item(), rel=1e-6)
    assert weighted != pytest.approx(plain, rel=1e-3)
    # no anomaly pixels: the weighted loss is the plain one
    empty = batch._replace(masks=torch.zeros_like(batch.masks))
    assert loss(3.0, empty)[0] == pytest.approx(plain, rel=1e-6)


def test_branches_interact_only_with_coupling():
    for coupling in (True, False):
        model, _ = tiny_model(coupling=coupling)
        latents, t = _inputs()
        embeds = _embeds(model)
        changed = latents.clone()
        changed[1::2] += 1.0  # every part-branch input
        with torch.no_grad():
            a, b = model(latents, t, embeds), model(changed, t, embeds)
        whole_diff = (a[0::2] - b[0::2]).abs().max().item()
        assert (a[1::2] - b[1::2]).abs().max().item() > 1e-3
        if coupling:
            assert whole_diff > 1e-4, "the part branch must influence the whole branch"
        else:
            assert whole_diff == 0.0, "without coupling the branches are independent"


def test_lora_sets_are_per_branch():
    from anobench.generation.dualanodiff.attention import dual_processors

    for coupling in (False, True):
        model, _ = tiny_model(coupling=coupling)
        model.train()
        latents, t = _inputs()
        out = model(latents, t, _embeds(model))
        out[1::2].pow(2).mean().backward()  # a loss on the part branch only
        procs = dual_processors(model.unet)
        grad0 = sum(
            p.lora[0].q.up.weight.grad.abs().sum().item()
            for p in procs
            if p.lora[0].q.up.weight.grad is not None
        )
        grad1 = sum(p.lora[1].q.up.weight.grad.abs().sum().item() for p in procs)
        assert grad1 > 0
        if coupling:
            assert grad0 > 0  # reaches the whole branch's LoRA through SAIM
        else:
            assert grad0 == 0.0


def test_fused_cross_branch_module_equals_the_five_projections():
    from anobench.generation.dualanodiff.attention import CrossBranchAttention

    torch.manual_seed(0)
    module = CrossBranchAttention(24).double()
    for param in module.parameters():  # biases and LayerNorm affine non-trivial too
        param.data.normal_(0, 0.3)
    x = torch.randn(6, 5, 24, dtype=torch.float64)
    with torch.no_grad():
        explicit = module(x)
        module.fused = module.fuse()
        fused = module(x)
    assert explicit.abs().max() > 0.1
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-12)
    # (a pair's tokens interact: changing one token of pair 0 moves both, not pair 1)
    changed = x.clone()
    changed[1] += torch.randn(5, 24, dtype=torch.float64)  # (not a constant: LayerNorm removes it)
    with torch.no_grad():
        moved = module(changed) - fused
    assert moved[0].abs().max() > 1e-3 and moved[2:].abs().max() == 0.0
    with pytest.raises(RuntimeError, match="fused for inference"):
        module(x)


def test_fused_cross_branch_module_runs_three_products_per_pair():
    """Hand count: five C x C products per token unfused; per pair A d, B d, B n_part and g . d fused."""
    from torch.utils.flop_counter import FlopCounterMode

    from anobench.generation.dualanodiff.attention import CrossBranchAttention

    pairs, tokens, width = 3, 5, 24
    module = CrossBranchAttention(width)
    x = torch.randn(2 * pairs, tokens, width)

    def flops() -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
        return counter.get_total_flops()

    unfused = flops()
    module.fused = module.fuse()
    fused = flops()
    positions = pairs * tokens
    assert unfused == 5 * 2 * (2 * positions) * width**2
    assert fused == 3 * 2 * positions * width**2 + 2 * positions * width


def test_sampling_lora_products_equal_the_training_ones():
    """Without gradients the two branches' LoRA run as batched products; the values are the
    per-branch products' (the training path), up to float32 summation order."""
    model, _, _ = golden_model(False)
    for name, param in model.named_parameters():
        if ".up." in name:  # LoRA up starts at zero: make the updates count
            param.data.normal_(0, 0.3)
    latents, t = _inputs()
    embeds = _embeds(model)
    trained = model(latents, t, embeds).detach()
    with torch.no_grad():
        sampled = model(latents, t, embeds)
    assert trained.abs().max() > 0.1
    torch.testing.assert_close(sampled, trained, rtol=0, atol=1e-5)


def test_fused_sampling_matches_the_unfused_pipeline_and_guards_its_weights():
    from anobench.generation.dualanodiff.attention import dual_processors

    pipe, _ = golden_pipeline(bcm=False)
    explicit = sample(pipe, [5, 6], num_inference_steps=2, output_type="pt")
    pipe.fuse_cross_branch()
    saims = [p.saim for p in dual_processors(pipe.unet)]
    assert saims and all(m.fused is not None for m in saims)
    fused = sample(pipe, [5, 6], num_inference_steps=2, output_type="pt")
    for a, b in zip(fused.to_tuple(), explicit.to_tuple(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)  # measured 6e-7; 0.1 % off SAIM: 3e-6
    # a weight changed after fusing (an optimizer step, load_state_dict) is an error, not stale samples
    with torch.no_grad():
        saims[0].to_v.weight.mul_(1.01)
    with pytest.raises(RuntimeError, match="changed since they were fused"):
        sample(pipe, [5], num_inference_steps=1)
    pipe.unfuse_cross_branch()
    assert all(m.fused is None for m in saims)
    sample(pipe, [5], num_inference_steps=1)


def test_bcm_starts_as_identity_of_the_plain_model():
    from anobench.generation.dualanodiff.attention import dual_processors

    plain, _ = tiny_model(bcm=False)
    bcm, _ = tiny_model(bcm=True)
    alphas = [p.bcm.alpha.item() for p in dual_processors(bcm.unet) if p.bcm is not None]
    assert alphas and all(a == 0.0 for a in alphas)
    # same LoRA/SAIM/text weights: the BCM model then equals the plain one (a = 0)
    missing = bcm.load_state_dict(plain.trainable_state_dict(), strict=False).missing_keys
    assert all(".bcm." in k for k in missing if ".processor." in k and k in dict(bcm.named_parameters()))
    latents, t = _inputs()
    background = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        a = plain(latents, t, _embeds(plain))
        b = bcm(latents, t, _embeds(bcm), background)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # and the background matters once a != 0
    for p in dual_processors(bcm.unet):
        if p.bcm is not None:
            p.bcm.alpha.data.fill_(0.5)
    with torch.no_grad():
        c = bcm(latents, t, _embeds(bcm), background)
    assert (c[0::2] - a[0::2]).abs().max() > 1e-4


def sample(pipe, seeds: list[int], **kwargs):
    """Pairs as H x W x 3 uint8 arrays (pair i seeded by ``seeds[i]``), 3 DDIM/PNDM steps at 16 px."""
    kwargs = {"num_inference_steps": 3, "height": 16, "width": 16, "output_type": "pil", **kwargs}
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    out = pipe("a vfx with sks", "sks", num_images_per_prompt=len(seeds), generator=gens, **kwargs)
    return type(out)(*(np.stack([np.asarray(im) for im in ims]) for ims in out.to_tuple()))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_two_steps_change_weights_and_write_loadable_checkpoints(pair_data, tmp_path):
    from anobench.generation.dualanodiff.trainer import train_dual

    data, _ = pair_data
    init, _ = tiny_model(seed=3)  # train_dual seeds the adapters with config.seed = 3
    before = init.trainable_state_dict()
    config = tiny_config(max_train_steps=2, checkpointing_steps=1)
    model = train_dual(tiny_components(), data, config, tmp_path, progress=False)
    assert (tmp_path / "checkpoint-1" / "weights.safetensors").exists()
    state = json.loads((tmp_path / "checkpoint-2" / "state.json").read_text())
    assert state["step"] == 2
    after = _weights(tmp_path / "weights.safetensors")
    assert set(after) == set(before)
    ups = [k for k in after if k.endswith("up.weight") and ".processor." in k]
    assert ups and all(before[k].abs().sum() == 0 for k in ups)
    assert all(after[k].abs().sum() > 0 for k in ups), "every LoRA up-projection must have moved"
    saim = [k for k in after if ".saim." in k]
    assert saim and any(not torch.equal(after[k], before[k]) for k in saim)
    assert any(not torch.equal(after[k], before[k]) for k in after if "text_encoder" in k and "lora" in k)
    assert all(torch.isfinite(v).all() for v in after.values())
    # the checkpoint loads into a fresh model (safetensors, no pickle)
    fresh, _ = tiny_model(seed=99)
    fresh.load_trainable(tmp_path / "checkpoint-2" / "weights.safetensors")
    for k, v in fresh.trainable_state_dict().items():
        torch.testing.assert_close(v, model.trainable_state_dict()[k])


def test_gradient_accumulation_steps_on_the_mean_gradient_of_its_micro_batches(
    pair_data, tmp_path, monkeypatch
):
    from anobench.generation.dualanodiff import trainer

    data, _ = pair_data
    micro_grads, stepped = [], []
    real_loss = trainer.dual_loss

    def recording_loss(model, raw, *args, **kwargs):
        loss = real_loss(model, raw, *args, **kwargs)
        params = [p for p in raw.parameters() if p.requires_grad]
        micro_grads.append(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))
        return loss

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            stepped.append(
                [p.grad.clone() if p.grad is not None else None for p in self.param_groups[0]["params"]]
            )
            return super().step(closure)

    monkeypatch.setattr(trainer, "dual_loss", recording_loss)
    monkeypatch.setattr(
        trainer, "make_adamw", lambda params, lr, wd, eight_bit: RecordingAdamW(params, lr=lr)
    )
    config = tiny_config(max_train_steps=2, gradient_accumulation_steps=3, max_grad_norm=0.0)
    trainer.train_dual(tiny_components(), data, config, tmp_path, progress=False)
    assert len(micro_grads) == 6 and len(stepped) == 2  # three micro-batches per optimiser step
    for step, grads in enumerate(stepped):
        micros = micro_grads[3 * step : 3 * step + 3]
        for i, grad in enumerate(grads):
            parts = [m[i] for m in micros if m[i] is not None]
            if grad is None:
                assert not parts
                continue
            torch.testing.assert_close(grad, sum(parts) / 3, rtol=1e-5, atol=1e-8)
    assert any(
        not torch.equal(micro_grads[0][i], micro_grads[1][i])
        for i in range(len(micro_grads[0]))
        if micro_grads[0][i] is not None
    )


def test_8bit_adam_is_bitsandbytes_adamw8bit_or_a_clear_error(monkeypatch):
    import importlib.util
    import sys
    import types

    from anobench.generation.dualanodiff.trainer import make_adamw
    from anobench.generation.errors import GenerationInputError

    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else True
    )
    with pytest.raises(
        GenerationInputError, match=r"use_8bit_adam=True needs bitsandbytes \(pip install bitsandbytes\)"
    ):
        tiny_config(use_8bit_adam=True)
    made = []

    class AdamW8bit:
        def __init__(self, params, **kwargs):
            made.append(kwargs)

    fake = types.SimpleNamespace(optim=types.SimpleNamespace(AdamW8bit=AdamW8bit))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    assert isinstance(make_adamw([torch.nn.Parameter(torch.zeros(2))], 1e-4, 1e-2, eight_bit=True), AdamW8bit)
    assert made == [{"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 1e-2, "eps": 1e-8}]


def test_resume_continues_exactly(pair_data, tmp_path):
    from anobench.generation.dualanodiff.trainer import train_dual

    data, _ = pair_data
    config = tiny_config(max_train_steps=4, checkpointing_steps=2)
    train_dual(tiny_components(), data, config, tmp_path / "straight", progress=False)
    train_dual(tiny_components(), data, config, tmp_path / "killed", progress=False, stop_after=2)
    assert not (tmp_path / "killed" / "weights.safetensors").exists()
    assert json.loads((tmp_path / "killed" / "checkpoint-2" / "state.json").read_text())["step"] == 2
    train_dual(tiny_components(), data, config, tmp_path / "killed", progress=False)  # resume latest
    assert json.loads((tmp_path / "killed" / "checkpoint-4" / "state.json").read_text())["step"] == 4
    a, b = (
        _weights(tmp_path / "straight" / "weights.safetensors"),
        _weights(tmp_path / "killed" / "weights.safetensors"),
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_bcm_training_moves_alpha(pair_data, tmp_path):
    from anobench.generation.dualanodiff.trainer import train_dual

    _, bcm_data = pair_data
    train_dual(
        tiny_components(), bcm_data, tiny_config(max_train_steps=2, bcm=True), tmp_path, progress=False
    )
    alphas = {k: v for k, v in _weights(tmp_path / "weights.safetensors").items() if k.endswith("bcm.alpha")}
    assert alphas and any(v.item() != 0 for v in alphas.values())


def test_checkpoint_round_trip_gives_identical_samples(pair_data, tmp_path):
    from anobench.generation.dualanodiff.components import sampling_scheduler
    from anobench.generation.dualanodiff.dual_unet import DualAnoDiffModel
    from anobench.generation.dualanodiff.pipeline import DualAnoDiffPipeline
    from anobench.generation.dualanodiff.trainer import train_dual

    data, _ = pair_data
    model = train_dual(tiny_components(), data, tiny_config(max_train_steps=2), tmp_path, progress=False)
    parts = tiny_components()
    pipe = DualAnoDiffPipeline.from_model(
        model, parts.vae, sampling_scheduler("ddim", parts.scheduler_config)
    )
    first = sample(pipe, [5, 6])
    assert first.images.shape == (2, 16, 16, 3) and first.part_images.shape == (2, 16, 16, 3)
    again_parts = tiny_components()
    reloaded = DualAnoDiffModel(again_parts, rank=2, bcm_hidden=8).eval()
    reloaded.load_trainable(tmp_path / "weights.safetensors")
    pipe2 = DualAnoDiffPipeline.from_model(
        reloaded, again_parts.vae, sampling_scheduler("pndm", parts.scheduler_config)
    )
    pipe2.scheduler = sampling_scheduler("ddim", parts.scheduler_config)
    second = sample(pipe2, [5, 6])
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.part_images, second.part_images)
    other = sample(pipe2, [7, 6])
    assert not np.array_equal(other.images[0], first.images[0])


def test_mismatched_weights_are_a_clear_error(pair_data, tmp_path):
    from anobench.generation.dualanodiff.trainer import save_final
    from anobench.generation.errors import GenerationInputError

    model, _ = tiny_model()
    save_final(tmp_path, model, tiny_config())
    other, _ = tiny_model(coupling=False)
    with pytest.raises(GenerationInputError, match="coupling"):
        other.load_trainable(tmp_path / "weights.safetensors")


def test_threshold_mask_and_u2net_error(tmp_path):
    from anobench.generation.dualanodiff.masks import mask_extractor, threshold_mask
    from anobench.generation.errors import GenerationInputError

    part = np.full((32, 32, 3), 128, np.uint8)
    part[4:12, 6:20] = (200, 60, 128)  # the anomaly
    part[25, 25] = 255  # a speckle
    mask = threshold_mask(part, threshold=0.2)
    expected = np.zeros((32, 32), bool)
    expected[4:12, 6:20] = True
    assert np.array_equal(mask, expected)
    assert not threshold_mask(np.full((8, 8, 3), 140, np.uint8)).any()  # within the threshold of grey
    with pytest.raises(GenerationInputError, match="not found"):
        mask_extractor("u2net", 0.2, 0.0, str(tmp_path / "missing.pth"))
    (tmp_path / "u2net.pth").write_bytes(b"x")
    with pytest.raises(GenerationInputError, match="cannot read"):
        mask_extractor("u2net", 0.2, 0.0, str(tmp_path / "u2net.pth"))


def test_config_errors_name_the_field():
    from anobench.generation.errors import GenerationInputError

    with pytest.raises(GenerationInputError) as err:
        DualAnoDiffConfig(scheduler="euler", resolution=30, mask_extractor="u2net", mask_loss_weight=-1)
    text = str(err.value)
    assert "scheduler='euler'" in text and "resolution=30" in text and "u2net_weights" in text
    assert "mask_loss_weight=-1" in text


def golden_model(bcm: bool):
    """A tiny dual model, every trainable tensor randomised (LoRA, SAIM, text LoRA, BCM a ~ 0.3)."""
    model, parts = tiny_model(bcm=bcm, seed=1)
    g = torch.Generator().manual_seed(11)
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            p.data = torch.randn(p.shape, generator=g) * 0.05 + (0.3 if name.endswith("bcm.alpha") else 0.0)
    background = torch.rand(3, 16, 16, generator=g) * 2 - 1 if bcm else None
    return model, parts, background


@pytest.mark.parametrize("bcm", [False, True])
def test_samples_equal_the_recorded_pre_refactor_outputs(bcm):
    from anobench.generation.dualanodiff.components import sampling_scheduler
    from anobench.generation.dualanodiff.pipeline import DualAnoDiffPipeline

    golden = np.load(GOLDEN)
    model, parts, background = golden_model(bcm)
    for sched in ("ddim", "pndm"):
        pipe = DualAnoDiffPipeline.from_model(
            model, parts.vae, sampling_scheduler(sched, parts.scheduler_config)
        )
        for cfg in (2.5, 1.0):
            out = sample(pipe, [5, 6], guidance_scale=cfg, background=background)
            key = f"{'bcm' if bcm else 'plain'}_{sched}_{cfg}"
            np.testing.assert_array_equal(out.images, golden[f"{key}_images"], err_msg=key)
            np.testing.assert_array_equal(out.part_images, golden[f"{key}_parts"], err_msg=key)


def golden_pipeline(bcm: bool):
    from anobench.generation.dualanodiff.components import sampling_scheduler
    from anobench.generation.dualanodiff.pipeline import DualAnoDiffPipeline

    model, parts, background = golden_model(bcm)
    scheduler = sampling_scheduler("ddim", parts.scheduler_config)
    pipe = DualAnoDiffPipeline.from_model(model, parts.vae, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, background


def test_pipeline_save_pretrained_round_trip_gives_identical_samples(tmp_path):
    from safetensors.torch import load_file

    from anobench.generation.dualanodiff.pipeline import DualAnoDiffPipeline

    pipe, background = golden_pipeline(bcm=True)
    before = sample(pipe, [5, 6], num_inference_steps=2, background=background)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["unet"] == ["anobench.generation.dualanodiff.dual_unet", "DualBranchUNet2DConditionModel"]
    assert index["text_encoder"][1] == "LoRACLIPTextModel"
    saved = load_file(str(tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(k.endswith("bcm.alpha") for k in saved)  # the adapters travel with the base weights

    loaded = DualAnoDiffPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is type(pipe.scheduler) and loaded.unet.has_bcm
    assert loaded.unet.config.dual_rank == 2 and loaded.text_encoder.config.lora_rank == 2
    after = sample(loaded, [5, 6], num_inference_steps=2, background=background)
    assert np.array_equal(before.images, after.images)
    assert np.array_equal(before.part_images, after.part_images)
    # and the BCM condition is used: another background gives other whole images
    other = sample(loaded, [5, 6], num_inference_steps=2, background=-background)
    assert not np.array_equal(other.images, after.images)


def test_pipeline_output_types_tuple_and_errors():
    from PIL import Image

    from anobench.generation.dualanodiff.pipeline import DualAnoDiffPipelineOutput

    pipe, _ = golden_pipeline(bcm=False)
    kwargs = {"part_prompt": "sks", "num_inference_steps": 2, "num_images_per_prompt": 2}

    def gens():
        return [torch.Generator().manual_seed(s) for s in (5, 6)]

    pil = pipe("a vfx with sks", generator=gens(), **kwargs)
    assert isinstance(pil, DualAnoDiffPipelineOutput) and len(pil.images) == len(pil.part_images) == 2
    assert all(isinstance(im, Image.Image) and im.size == (16, 16) for im in pil.images + pil.part_images)
    arrays = pipe("a vfx with sks", generator=gens(), output_type="np", **kwargs)
    assert arrays.images.shape == (2, 16, 16, 3) and arrays.images.dtype == np.float32
    assert arrays.part_images.min() >= 0 and arrays.part_images.max() <= 1
    # the same pairs: "np" is the unrounded [0, 1] version of the PIL pixels
    assert np.abs(arrays.images * 255 - np.stack([np.asarray(i) for i in pil.images])).max() <= 0.5 + 1e-3
    images, parts = pipe("a vfx with sks", generator=gens(), output_type="pt", return_dict=False, **kwargs)
    assert images.shape == parts.shape == (2, 3, 16, 16)
    torch.testing.assert_close(images.permute(0, 2, 3, 1).numpy(), arrays.images)
    assert not torch.equal(images, parts)
    with pytest.raises(ValueError, match="output_type"):
        pipe("a vfx with sks", output_type="latent", **kwargs)
    with pytest.raises(ValueError, match="3 generators"):
        pipe("a vfx with sks", generator=[*gens(), torch.Generator()], **kwargs)
    bcm_pipe, _ = golden_pipeline(bcm=True)
    with pytest.raises(ValueError, match="background"):
        bcm_pipe("a vfx with sks", **kwargs)


def test_overhead_benchmark_switches_one_unet_between_dual_and_plain_lora():
    """``dualanodiff_speed --only sd15-overhead`` compares what it says: with the plain mode off the
    dual model computes exactly what it computed before the peft layers were added, and the plain
    mode runs the frozen UNet with diffusers' processor plus the peft LoRA only."""
    from anobench.benchmarks.perf.dualanodiff_speed import PlainLoRA, sampling_modes, unet_call_flops

    model, _, _ = golden_model(False)
    latents, t = _inputs()
    embeds = _embeds(model)
    with torch.no_grad():
        dual = model(latents, t, embeds)
        plain = PlainLoRA(model, rank=2)
        assert plain.params and all(p.requires_grad for p in plain.params)
        names = {n for n, p in model.unet.named_parameters() if any(p is q for q in plain.params)}
        assert names and all(".lora_" in n for n in names)
        plain.use(True)
        base = plain.unet(latents, t, embeds).sample  # LoRA B starts at 0: the frozen UNet alone
        for name, p in model.unet.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.05)
        lora = plain.unet(latents, t, embeds).sample
        plain.use(False)
        again = model(latents, t, embeds)
    assert not torch.allclose(base, dual) and not torch.allclose(lora, base)
    torch.testing.assert_close(again, dual, rtol=0, atol=0)
    # the FLOP floor it prints: the cross-branch module's products on top of the plain call, fewer fused
    flops = unet_call_flops(model.unet, sampling_modes(plain), 32)
    assert flops["plain"] < flops["dual fused"] < flops["dual"]


def test_memory_benchmark_variants_are_valid_configs_of_four_pairs_per_step():
    from anobench.benchmarks.perf.dualanodiff_speed import MEMORY_VARIANTS

    for name, fields in MEMORY_VARIANTS.items():
        config = DualAnoDiffConfig(resolution=128, **fields)
        assert config.train_batch_size * config.gradient_accumulation_steps == 4, name
