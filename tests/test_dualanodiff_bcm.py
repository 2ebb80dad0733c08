"""BCM as released (checkpointing, per-category defaults, condition sampling) and the released checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_dualanodiff import _embeds, _inputs, golden_model, golden_pipeline, tiny_model

from anobench.generation.dualanodiff.config import DualAnoDiffBCMConfig, DualAnoDiffConfig


def _grads(model, bcm: bool, checkpointing: bool) -> dict[str, torch.Tensor]:
    unet = model.unet
    unet.enable_gradient_checkpointing() if checkpointing else unet.disable_gradient_checkpointing()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    latents, t = _inputs()
    background = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4)) if bcm else None
    loss = model(latents, t, model.encode_prompts(["a vfx with sks", "sks"] * 2), background).square().mean()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


@pytest.mark.parametrize("bcm", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(bcm):
    model, _, _ = golden_model(bcm)  # every trainable tensor non-zero, BCM a ~ 0.3
    model.train()
    plain = _grads(model, bcm, checkpointing=False)
    checked = _grads(model, bcm, checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.unet.modules())
    bcm_grads = [g for n, g in checked.items() if ".bcm." in n]
    assert not bcm or (bcm_grads and all(g.abs().sum() > 0 for g in bcm_grads))
    for name, grad in plain.items():
        torch.testing.assert_close(checked[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_bcm_pass_state_lives_in_the_call():
    from anobench.generation.dualanodiff.attention import BackgroundStore

    model, _, _ = golden_model(True)
    unet = model.unet
    assert all(p.layer == n for n, p in unet.attn_processors.items())
    latents, t = _inputs()
    embeds = _embeds(model)
    with torch.no_grad():
        stores = []
        for seed in (1, 2):  # two write passes, then two reads: each read sees its own store only
            store = BackgroundStore(write=True)
            bg = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
            unet(bg, t[::2], embeds[::2], cross_attention_kwargs={"bcm": store})
            stores.append(store)
        reads = [unet(latents, t, embeds, cross_attention_kwargs={"bcm": s.reading()}).sample for s in stores]
        first_bg = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        direct = model(latents, t, embeds, first_bg)
    n_bcm = sum(p.bcm is not None for p in unet.attn_processors.values())
    assert all(len(s.features) == n_bcm for s in stores)
    torch.testing.assert_close(reads[0], direct, rtol=0, atol=0)
    assert not torch.allclose(reads[0], reads[1])


def test_released_defaults_per_variant_and_category():
    plain, bcm = DualAnoDiffConfig(), DualAnoDiffBCMConfig()
    fields = ("guidance_scale", "num_inference_steps", "background_every", "train_batch_size", "flips")
    assert [getattr(plain.for_category("nut"), f) for f in fields] == [2.5, 100, 50, 4, True]
    assert [getattr(bcm.for_category("nut"), f) for f in fields] == [2.0, 50, 50, 2, True]
    assert [getattr(bcm.for_category("screw"), f) for f in fields] == [1.2, 50, 10, 2, True]
    assert plain.for_category("screw").guidance_scale == 2.5  # the screw override is BCM's only
    assert plain.for_category("cable").flips is False and bcm.for_category("cable").flips is True
    # a value the user sets always wins over the table
    set_ = DualAnoDiffBCMConfig(guidance_scale=3.0, background_every=7, flips=True, train_batch_size=5)
    assert [getattr(set_.for_category("screw"), f) for f in fields] == [3.0, 50, 7, 5, True]
    assert DualAnoDiffConfig(flips=True).for_category("cable").flips is True
    assert bcm.guidance_scale is None  # the stored config stays unset (resolved per category)


def test_background_every_is_validated():
    from anobench.generation.errors import GenerationInputError

    with pytest.raises(GenerationInputError, match="background_every=0"):
        DualAnoDiffBCMConfig(background_every=0)


def test_condition_latents_are_sampled_with_independent_noise_per_half(monkeypatch):
    import anobench.generation.dualanodiff.pipeline as pipeline_module

    pipe, background = golden_pipeline(bcm=True)
    seen = []
    real_predict = pipeline_module.predict_noise

    def spy(unet, x, t, embeds, noisy_bg):
        seen.append(noisy_bg.clone())
        return real_predict(unet, x, t, embeds, noisy_bg)

    monkeypatch.setattr(pipeline_module, "predict_noise", spy)
    kwargs = {
        "num_inference_steps": 2,
        "output_type": "np",
        "background": background,
        "height": 16,
        "width": 16,
    }

    def run(bg_seed: int):
        gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
        bg_gen = torch.Generator().manual_seed(bg_seed)
        return pipe(
            "a vfx with sks",
            "sks",
            num_images_per_prompt=2,
            generator=gens,
            background_generator=bg_gen,
            **kwargs,
        )

    first = run(1)
    uncond, cond = seen[0].chunk(2)  # [uncond x 2 pairs, cond x 2 pairs]
    # the background latent is a sample: another background generator gives another condition
    np.testing.assert_array_equal(run(1).images, first.images)
    assert not np.array_equal(run(2).images, first.images)

    # with the latents fixed to zero, what is left is the noise: the two halves draw their own
    monkeypatch.setattr(
        pipeline_module, "encode_latents", lambda vae, images, g, scale: torch.zeros(len(images), 4, 8, 8)
    )
    seen.clear()
    run(1)
    uncond, cond = seen[0].chunk(2)
    assert not torch.allclose(uncond, cond)
    assert abs(torch.corrcoef(torch.stack([uncond.flatten(), cond.flatten()]))[0, 1]) < 0.3


def test_soft_background_pastes_through_the_inverted_saliency(tmp_path):
    from anobench.generation.dualanodiff.data import background_conditions, soft_background

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    saliency = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    expected = image * ((255 - saliency.astype(np.float64)) / 255)[..., None]
    out = soft_background(image, saliency)
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0  # PIL rounds per channel
    assert (out[saliency == 255] == 0).all() and (out[saliency == 0] == image[saliency == 0]).all()
    # with a saliency function the colour threshold is not used at all
    got = background_conditions([image], np.array([1e9, 1e9, 1e9]), lambda ims: [saliency for _ in ims])
    np.testing.assert_array_equal(got[0], out)


# ---- the released checkpoints ---------------------------------------------------------------------

#: This implementation's processor tensor names -> the released names, written out by hand from
#: the released attention_processor.py (LoRAAttnProcessor2_0) independently of convert.py.
RELEASED_PROCESSOR_NAMES = {
    **{
        f"lora.{b}.{p}.{d}.weight": f"to_{p}_lora.{b}.{d}.weight"
        for b in (0, 1)
        for p in ("q", "k", "v", "out")
        for d in ("down", "up")
    },  # fmt: skip
    "saim.norm.weight": "temporal_n.weight",
    "saim.norm.bias": "temporal_n.bias",
    "saim.proj_in.weight": "temporal_i.weight",
    "saim.proj_in.bias": "temporal_i.bias",
    "saim.to_q.weight": "temporal_q.weight",
    "saim.to_q.bias": "temporal_q.bias",
    "saim.to_k.weight": "temporal_k.weight",
    "saim.to_k.bias": "temporal_k.bias",
    "saim.to_v.weight": "temporal_v.weight",
    "saim.to_v.bias": "temporal_v.bias",
    "saim.proj_out.weight": "temporal_o.weight",
    "saim.proj_out.bias": "temporal_o.bias",
    "bcm.mlp.0.weight": "temporal_condition_mlp.0.weight",
    "bcm.mlp.0.bias": "temporal_condition_mlp.0.bias",
    "bcm.mlp.1.weight": "temporal_condition_mlp.1.weight",
    "bcm.mlp.1.bias": "temporal_condition_mlp.1.bias",
    "bcm.alpha": "temporal_a",
}
RELEASED_TEXT_NAMES = {
    f"{p}_proj.lora_{s}.default.weight": f"to_{p}_lora.{d}.weight"
    for p in ("q", "k", "v", "out")
    for s, d in (("A", "down"), ("B", "up"))
}


def released_state(model, bcm: bool) -> dict[str, torch.Tensor]:
    """``model``'s trainable tensors under the names the released scripts save."""
    out = {}
    for name, value in model.trainable_state_dict().items():
        if name.startswith("unet."):
            layer, ours = name.removeprefix("unet.").split(".processor.")
            wrapper = "chained_proc." if bcm and layer.endswith("attn1") else ""  # ReferenceOnlyAttnProc
            key = f"unet.{layer}.processor.{wrapper}{RELEASED_PROCESSOR_NAMES[ours]}"
            out[key] = value.reshape(1) if ours == "bcm.alpha" else value
        else:
            layer, ours = name.removeprefix("text_encoder.").split(".self_attn.")
            out[f"text_encoder.text_model.{layer}.self_attn.{RELEASED_TEXT_NAMES[ours]}"] = value
    if bcm:  # the released attn2 processors carry a (never used) MLP and scalar too
        for key in [k for k in out if k.endswith("attn2.processor.temporal_n.weight")]:
            prefix, dim = key.removesuffix("temporal_n.weight"), out[key].shape[0]
            out[f"{prefix}temporal_condition_mlp.0.weight"] = torch.randn(8, dim)
            out[f"{prefix}temporal_condition_mlp.0.bias"] = torch.randn(8)
            out[f"{prefix}temporal_condition_mlp.1.weight"] = torch.randn(dim, 8)
            out[f"{prefix}temporal_condition_mlp.1.bias"] = torch.randn(dim)
            out[f"{prefix}temporal_a"] = torch.tensor([0.7])
    return out


@pytest.mark.parametrize("bcm", [False, True])
def test_released_checkpoint_converts_to_identical_outputs(bcm, tmp_path, capsys):
    from safetensors import safe_open

    from anobench.benchmarks.cli import main

    source, _, _ = golden_model(bcm)
    released = released_state(source, bcm)
    assert any("temporal_" in k for k in released) and all(".lora." not in k for k in released)
    # where the released scripts leave it: the BCM script in the output folder; the plain one in
    # checkpoint-<step> folders (its inference reads checkpoint-5000); the last step is taken
    folder = tmp_path / "all_generate" / "bottle" / "broken_large"
    weights = folder / ("" if bcm else "checkpoint-5000") / "pytorch_lora_weights.bin"
    weights.parent.mkdir(parents=True)
    torch.save(released, weights)
    if not bcm:
        (folder / "checkpoint-900").mkdir()  # before 5000 by number, after it by name
        (folder / "checkpoint-900" / "pytorch_lora_weights.bin").write_bytes(b"an earlier step")
    dst = tmp_path / "converted.safetensors"
    assert main(["dualanodiff", "convert", str(folder), str(dst)]) == 0
    assert "rank 2" in capsys.readouterr().out
    with safe_open(str(dst), "pt") as f:
        assert f.metadata()["bcm"] == str(bcm).lower() and f.metadata()["rank"] == "2"
        assert f.metadata()["train_text_encoder"] == "true"

    fresh, _ = tiny_model(bcm=bcm, seed=7)
    fresh.load_trainable(dst)
    latents, t = _inputs()
    background = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2)) if bcm else None
    with torch.no_grad():
        want = source(latents, t, _embeds(source), background)
        got = fresh(latents, t, _embeds(fresh), background)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_unknown_or_missing_released_keys_are_one_line_errors(tmp_path, capsys):
    from safetensors.torch import save_file

    from anobench.benchmarks.cli import main

    source, _ = tiny_model(bcm=False)
    released = released_state(source, bcm=False)
    broken = dict(released)
    broken["unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_z_lora.0.down.weight"] = (
        torch.zeros(1)
    )
    dropped = next(k for k in released if k.endswith("temporal_o.bias"))
    del broken[dropped]
    save_file(broken, str(tmp_path / "bad.safetensors"))
    assert (
        main(["dualanodiff", "convert", str(tmp_path / "bad.safetensors"), str(tmp_path / "out.safetensors")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 unknown keys" in err and "to_z_lora" in err
    assert "1 missing tensors" in err and "saim.proj_out.bias" in err
    assert not (tmp_path / "out.safetensors").exists()
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    assert main(["dualanodiff", "convert", str(tmp_path / "junk.bin"), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable checkpoint" in err and len(err.splitlines()) == 1
    assert main(["dualanodiff", "convert", str(tmp_path), str(tmp_path / "o.safetensors")]) == 2
    assert "no pytorch_lora_weights.safetensors or pytorch_lora_weights.bin" in capsys.readouterr().err


def _layer_keys(state: dict, fragment: str) -> list[str]:
    """The keys of the first layer whose keys contain ``fragment``."""
    first = next(k for k in state if fragment in k)
    layer = first[: first.index(fragment) + len(fragment)]
    return [k for k in state if k.startswith(layer)]


def _drop_a_processor(state: dict) -> None:
    for key in _layer_keys(state, ".attn2.processor."):
        del state[key]


def _skip_a_text_layer(state: dict) -> None:  # layers 0 and 2, no 1
    for key in _layer_keys(state, "encoder.layers.0.self_attn."):
        state[key.replace("layers.0.", "layers.2.")] = state[key]


def _bcm_scalar_in_a_plain_checkpoint(state: dict) -> None:
    prefix = _layer_keys(state, ".attn1.processor.")[0].split(".processor.")[0]
    state[f"{prefix}.processor.temporal_a"] = torch.zeros(1)


def _bcm_wrapper_on_a_plain_processor(state: dict) -> None:
    for key in _layer_keys(state, ".attn1.processor."):
        state[key.replace(".processor.", ".processor.chained_proc.")] = state.pop(key)


def _an_up_projection_of_another_rank(state: dict) -> None:
    key = next(k for k in state if k.endswith("to_q_lora.1.up.weight"))
    state[key] = torch.zeros(state[key].shape[0], 3)


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        (_drop_a_processor, "missing tensors"),
        (_skip_a_text_layer, "missing tensors"),
        (_bcm_scalar_in_a_plain_checkpoint, "1 unknown keys"),
        (_bcm_wrapper_on_a_plain_processor, "unknown keys"),
        (_an_up_projection_of_another_rank, "ranks differ"),
    ],
)
def test_incomplete_or_foreign_released_checkpoints_are_one_line_errors(tmp_path, capsys, breaks, expected):
    from anobench.generation.dualanodiff.convert import convert_released
    from anobench.generation.errors import GenerationInputError

    source, _ = tiny_model(bcm=False)
    state = released_state(source, bcm=False)
    convert_released(state)  # (the intact one converts)
    breaks(state)
    with pytest.raises(GenerationInputError, match=expected):
        convert_released(state)


def test_checkpoint_without_text_encoder_lora_says_so_and_names_load_across_transformers(tmp_path):
    """Metadata ``train_text_encoder``; a file whose text names carry transformers 4.x's
    ``text_model.`` level (as a 4.x install saves them) loads into this model all the same."""
    from safetensors.torch import save_file

    from anobench.generation.dualanodiff.convert import convert_released
    from anobench.generation.dualanodiff.dual_unet import portable_name

    source, _ = tiny_model(bcm=False)
    state = released_state(source, bcm=False)
    unet_only = {k: v for k, v in state.items() if k.startswith("unet.")}
    assert convert_released(unet_only)[1]["train_text_encoder"] == "false"
    saved = source.trainable_state_dict()
    assert saved and all("text_model." not in n for n in saved)
    assert portable_name(
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight"
    ) == ("text_encoder.encoder.layers.0.self_attn.q_proj.lora_A.default.weight")
    as_4x = {n.replace("text_encoder.", "text_encoder.text_model.", 1): t for n, t in saved.items()}
    save_file(as_4x, str(tmp_path / "4x.safetensors"))
    fresh, _ = tiny_model(bcm=False, seed=7)
    fresh.load_trainable(tmp_path / "4x.safetensors")
    for name, value in fresh.trainable_state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_dual_step_matches_eager_without_graph_breaks():
    """``torch.compile(fullgraph=True)`` traces the BCM write and read passes (no Python state in the
    processors), gives eager's gradients, and a second step reuses the graphs (no recompilation)."""
    from torch._dynamo.utils import counters

    model, _, _ = golden_model(True)
    model.train()
    eager = _grads(model, bcm=True, checkpointing=False)
    torch._dynamo.reset()
    model.unet = torch.compile(model.unet, fullgraph=True, backend="aot_eager")

    def grads() -> dict[str, torch.Tensor]:  # the compiled UNet's names say "_orig_mod."
        return {n.replace("_orig_mod.", ""): g for n, g in _grads(model, True, False).items()}

    compiled = grads()
    graphs = counters["stats"]["unique_graphs"]
    again = grads()
    assert graphs == 2  # the write pass (the backgrounds) and the read pass (the pairs)
    assert counters["stats"]["unique_graphs"] == graphs
    for name, grad in eager.items():
        torch.testing.assert_close(compiled[name], grad, rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(again[name], grad, rtol=1e-5, atol=1e-7, msg=name)
