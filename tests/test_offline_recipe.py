"""The offline base recipe: painted shapes, branch labels, zero-started coupling, EMA weights."""

from __future__ import annotations

import pytest
import torch

from anobench.generation.dualanodiff import offline_base as ob
from anobench.generation.dualanodiff.components import build_offline_components
from anobench.generation.dualanodiff.config import OFFLINE_MASK_LOSS_WEIGHT, DualAnoDiffConfig
from anobench.generation.dualanodiff.dual_unet import DualAnoDiffModel, branch_labels
from anobench.generation.dualanodiff.generator import DualAnoDiff

#: The generator's smoke-size options, one step of each base stage at 16 px.
TINY_BASE = {**DualAnoDiff.smoke_options, "resolution": 16, "base_vae_steps": 1, "base_unet_steps": 1}


def test_painted_shapes_are_reproducible_small_and_opaque():
    colour, alpha = ob.paint_shapes(64, 50, torch.Generator().manual_seed(0))
    again = ob.paint_shapes(64, 50, torch.Generator().manual_seed(0))
    assert torch.equal(colour, again[0]) and torch.equal(alpha, again[1])
    assert colour.shape == (50, 3, 64, 64) and alpha.shape == (50, 1, 64, 64)
    assert set(alpha.unique().tolist()) == {0.0, 1.0}
    area = alpha.mean(dim=(1, 2, 3))
    assert (area > 0).all() and area.max() < 0.15, "one to three defect-sized shapes per layer"
    assert colour.abs().max() <= 1 and (colour * (1 - alpha)).abs().max() == 0
    values = colour.permute(0, 2, 3, 1)[alpha[:, 0] > 0]
    black_or_white = (values.abs() == 1).all(dim=1)
    assert 0.1 < black_or_white.float().mean() < 0.9, "some shapes black or white, the rest coloured"


def test_augment_paints_shapes_and_makes_the_second_half_part_like():
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    x, part, weight = ob._augment(images, torch.Generator().manual_seed(1), flips=False, shapes=True)
    assert part.tolist() == [False] * 4 + [True] * 4
    shape = (weight > 1).expand(-1, 3, -1, -1)
    assert torch.equal(x[:2], images[:2]) and not shape[:2].any(), "the first quarter stays normal"
    assert shape[2:].flatten(1).any(dim=1).all()
    assert torch.equal(x[2:4][~shape[2:4]], images[2:4][~shape[2:4]])
    assert (x[4:][~shape[4:]] == 0).all(), "part-like: mid-grey outside the shapes"
    assert set(weight.unique().tolist()) == {1.0, 10.0}
    x, part, weight = ob._augment(images, torch.Generator().manual_seed(1), flips=False, shapes=False)
    assert weight is None and torch.equal(x[:4], images[:4])
    kept = x[4:] != 0
    assert torch.equal(x[4:][kept], images[4:][kept]), "blobs of the image itself on mid-grey"


def _tiny_model(branch_labels_on: bool) -> DualAnoDiffModel:
    parts = build_offline_components(16, (8, 16), (8, 16), 16, 1, seed=0, branch_labels=branch_labels_on)
    torch.manual_seed(0)
    return DualAnoDiffModel(parts, rank=2).eval()


def test_the_dual_model_gives_each_branch_its_class_label():
    model = _tiny_model(True)
    assert branch_labels(model.unet, 6).tolist() == [0, 1, 0, 1, 0, 1]
    assert branch_labels(_tiny_model(False).unet, 6) is None
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((4,), 300)
    with torch.no_grad():
        embeds = model.encode_prompts(["a vfx with sks", "sks"] * 2)
        out = model(latents, t, embeds)
        labelled = model.unet(latents, t, embeds, class_labels=torch.tensor([0, 1, 0, 1])).sample
        swapped = model.unet(latents, t, embeds, class_labels=torch.tensor([1, 0, 1, 0])).sample
    torch.testing.assert_close(out, labelled, rtol=0, atol=0)
    assert (out - swapped).abs().max() > 1e-4, "the label changes the prediction"


def test_zero_coupling_starts_the_branches_independent_and_still_learns():
    model = _tiny_model(True)
    model.zero_coupling()
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((4,), 300)
    embeds = model.encode_prompts(["a vfx with sks", "sks"] * 2).detach()
    changed = latents.clone()
    changed[1::2] += 1.0
    with torch.no_grad():
        a, b = model(latents, t, embeds), model(changed, t, embeds)
    assert torch.equal(a[0::2], b[0::2]), "a zero cross-branch output: the part cannot reach the whole"
    model.train()
    model(latents, t, embeds)[0::2].pow(2).mean().backward()
    from anobench.generation.dualanodiff.attention import dual_processors

    grads = [p.saim.proj_out.weight.grad for p in dual_processors(model.unet)]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("labels", [True, False])
def test_offline_fine_tune_zeroes_the_coupling_only_with_branch_labels(tmp_path, labels):
    from anobench.generation.dualanodiff.attention import dual_processors
    from anobench.generation.dualanodiff.data import PairData
    from anobench.generation.dualanodiff.trainer import train_dual

    config = DualAnoDiffConfig(**TINY_BASE, offline_branch_labels=labels)
    data = PairData(torch.zeros(2, 3, 16, 16), torch.zeros(2, 1, 16, 16), [("a vfx with sks", "sks")] * 2)
    model = train_dual(ob.untrained_base(config), data, config, tmp_path, progress=False, stop_after=0)
    weights = [p.saim.proj_out.weight for p in dual_processors(model.unet)]
    assert all((w == 0).all() for w in weights) == labels


def test_base_with_branch_labels_learns_two_classes_and_saves_ema_weights(normal_images):
    config = DualAnoDiffConfig(**TINY_BASE)
    with_ema = ob.train_base(config, normal_images, progress=False)
    assert with_ema.unet.config.num_class_embeds == 2
    plain = ob.train_base(DualAnoDiffConfig(**TINY_BASE, offline_ema=False), normal_images, progress=False)
    init = ob.untrained_base(config).unet.state_dict()
    # one step: the EMA's warmed-up decay is (1 + 0) / (10 + 0) = 0.1, so EMA = 0.1 init + 0.9 trained
    for name, value in with_ema.unet.state_dict().items():
        torch.testing.assert_close(value, 0.1 * init[name] + 0.9 * plain.unet.state_dict()[name])
    assert any(not torch.equal(init[n], v) for n, v in plain.unet.state_dict().items())


def test_earlier_recipe_has_no_class_embeddings_and_its_own_cache_key(normal_images):
    earlier = DualAnoDiffConfig(**TINY_BASE, offline_branch_labels=False, offline_ema=False)
    assert ob.train_base(earlier, normal_images, progress=False).unet.config.num_class_embeds is None
    keys = {
        ob.base_key(DualAnoDiffConfig(**TINY_BASE, **flags), "nut", normal_images)
        for flags in ({}, {"offline_ema": False}, {"offline_branch_labels": False})
    }
    assert len(keys) == 3


def test_mask_loss_weight_is_on_for_the_offline_recipe_only(tmp_path, monkeypatch):
    from anobench.generation.dualanodiff import trainer
    from anobench.generation.dualanodiff.data import PairData

    assert DualAnoDiffConfig(**TINY_BASE).mask_loss_weight == OFFLINE_MASK_LOSS_WEIGHT
    assert DualAnoDiffConfig(**TINY_BASE, offline_branch_labels=False).mask_loss_weight == 0.0  # quick's
    assert DualAnoDiffConfig(pretrained_model_name_or_path="sd15").mask_loss_weight == 0.0  # as released
    assert DualAnoDiffConfig(**TINY_BASE, mask_loss_weight=3.0).mask_loss_weight == 3.0
    # the fine-tune's loss gets it
    seen = []
    loss = trainer.dual_loss
    monkeypatch.setattr(trainer, "dual_loss", lambda *a, **kw: seen.append(kw) or loss(*a, **kw))
    config = DualAnoDiffConfig(**TINY_BASE)
    data = PairData(torch.zeros(2, 3, 16, 16), torch.ones(2, 1, 16, 16), [("a vfx with sks", "sks")] * 2)
    trainer.train_dual(ob.untrained_base(config), data, config, tmp_path, progress=False, stop_after=1)
    assert seen == [{"mask_loss_weight": OFFLINE_MASK_LOSS_WEIGHT}]


def test_attention_heads_shape_every_attention_layer_and_the_base_key(normal_images):
    """Fewer heads (quick's speed setting): every UNet attention layer has them, the dual model runs."""
    from diffusers.models.attention_processor import Attention

    config = DualAnoDiffConfig(**TINY_BASE, offline_attention_heads=2)
    parts = ob.untrained_base(config)
    heads = {m.heads for m in parts.unet.modules() if isinstance(m, Attention)}
    assert heads == {2}
    default_parts = ob.untrained_base(DualAnoDiffConfig(**TINY_BASE))
    assert {m.heads for m in default_parts.unet.modules() if isinstance(m, Attention)} == {8}
    model = DualAnoDiffModel(parts, rank=2).eval()
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(latents, torch.full((2,), 300), model.encode_prompts(["a vfx with sks", "sks"]))
    assert out.shape == latents.shape and torch.isfinite(out).all()
    keys = {ob.base_key(c, "nut", normal_images) for c in (config, DualAnoDiffConfig(**TINY_BASE))}
    assert len(keys) == 2


@pytest.mark.parametrize(
    ("heads", "message"),
    [(0, "offline_attention_heads=0: must be at least 1"), (3, r"must divide every .* \[16, 32\]")],
)
def test_attention_heads_that_cannot_work_are_config_errors(heads, message):
    from anobench.generation.errors import GenerationInputError

    with pytest.raises(GenerationInputError, match=message):
        DualAnoDiffConfig(**TINY_BASE, offline_attention_heads=heads)
