"""U2-Net architecture, weights loading and the DualAnoDiff saliency-mask extractor (CPU, small inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from anobench.generation.dualanodiff.config import DualAnoDiffConfig
from anobench.generation.dualanodiff.masks import (
    U2NetMaskExtractor,
    mask_extractor,
    saliency_to_grey,
    u2net_input,
)
from anobench.generation.dualanodiff.u2net import RSU4F, RSU7, U2NET, U2NETP, load_u2net
from anobench.generation.errors import GenerationInputError

# The official checkpoints (xuebinqin/U-2-Net; paper: "U2-Net (176.3 MB) and U2-Net† (4.7 MB)").
# Exact byte sizes from the Git LFS pointers of the mirrored files, sha256 10025a17f49c... (u2net.pth)
# and e7567cde013f... (u2netp.pth). Both hold the same 686 float32 tensors (no num_batches_tracked),
# so the file size minus the tensor payload (the pickle's overhead) must be about the same for both.
U2NET_PTH_BYTES = 176_290_937
U2NETP_PTH_BYTES = 4_683_258
U2NET_PARAMS = 44_009_869
U2NETP_PARAMS = 1_131_181


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small convolutions: OpenMP spinning on a busy 2-core box costs far more than it gains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics too, so a round trip that dropped buffers would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=gen) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def small_model() -> U2NETP:
    torch.manual_seed(0)
    return _randomise(U2NETP())


@pytest.fixture(scope="module")
def full_model() -> U2NET:
    torch.manual_seed(1)
    return _randomise(U2NET(), seed=1)


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory, small_model) -> str:
    path = tmp_path_factory.mktemp("u2net") / "u2netp.pth"
    torch.save(small_model.state_dict(), path)
    return str(path)


def _payload_bytes(model: torch.nn.Module) -> int:
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return sum(v.numel() * v.element_size() for v in state.values())


def test_sizes_match_the_published_checkpoints(small_model, full_model):
    assert sum(p.numel() for p in full_model.parameters()) == U2NET_PARAMS  # 44.0 M
    assert sum(p.numel() for p in small_model.parameters()) == U2NETP_PARAMS  # 1.13 M
    overhead_full = U2NET_PTH_BYTES - _payload_bytes(full_model)
    overhead_small = U2NETP_PTH_BYTES - _payload_bytes(small_model)
    # One REBNCONV more or less is >= 9.5 kB of payload: the overheads would then differ by that much.
    assert 120_000 < overhead_full < 150_000 and 120_000 < overhead_small < 150_000
    assert abs(overhead_full - overhead_small) < 1_000
    assert round(U2NET_PTH_BYTES / 1e6, 1) == 176.3 and round(U2NETP_PTH_BYTES / 1e6, 1) == 4.7


def test_official_key_names_and_block_details(small_model, full_model):
    for model in (small_model, full_model):
        keys = set(model.state_dict())
        assert len([k for k in keys if not k.endswith("num_batches_tracked")]) == 686
        for key in (
            "stage1.rebnconvin.conv_s1.weight",
            "stage1.rebnconv7.bn_s1.running_var",
            "stage1.rebnconv6d.conv_s1.bias",
            "stage5.rebnconv4.bn_s1.weight",
            "stage5d.rebnconv1d.bn_s1.running_mean",
            "stage1d.rebnconv1d.conv_s1.weight",
            "side1.weight",
            "side6.bias",
            "outconv.weight",
        ):
            assert key in keys, key
    assert tuple(full_model.side6.weight.shape) == (1, 512, 3, 3)
    assert tuple(full_model.outconv.weight.shape) == (1, 6, 1, 1)
    assert tuple(full_model.stage4d.rebnconvin.conv_s1.weight.shape) == (256, 1024, 3, 3)
    assert tuple(small_model.stage2d.rebnconvin.conv_s1.weight.shape) == (64, 128, 3, 3)
    rsu4f = RSU4F(8, 4, 8)
    levels = ("1", "2", "3", "4", "3d", "2d", "1d")
    dilations = [getattr(rsu4f, f"rebnconv{n}").conv_s1.dilation[0] for n in levels]
    assert dilations == [1, 2, 4, 8, 4, 2, 1]
    rsu7 = RSU7(3, 4, 8)
    assert rsu7.rebnconv7.conv_s1.dilation == (2, 2) and rsu7.rebnconv7.conv_s1.padding == (2, 2)
    assert rsu7.rebnconv6.conv_s1.dilation == (1, 1)


def test_outputs_keep_odd_sizes(small_model):
    with torch.no_grad():
        outs = small_model(torch.rand(1, 3, 37, 30))  # ceil-mode pooling, upsampling to the skip's size
    assert len(outs) == 7 and all(tuple(o.shape) == (1, 1, 37, 30) for o in outs)
    assert all(float(o.min()) >= 0 and float(o.max()) <= 1 for o in outs)


def test_round_trip_pth_and_safetensors(tmp_path, small_model, full_model):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = small_model(x)
    state = small_model.state_dict()
    pth, legacy, st = tmp_path / "u2netp.pth", tmp_path / "legacy.pth", tmp_path / "u2netp.safetensors"
    torch.save(state, pth)
    # Like the official files: legacy format, no num_batches_tracked, saved from DataParallel.
    old = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, legacy, _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous() for k, v in state.items()}, st)
    for path in (pth, legacy, st):
        loaded = load_u2net(path)
        assert type(loaded) is U2NETP and not loaded.training
        with torch.no_grad():
            got = loaded(x)
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True)), path.name
    full = tmp_path / "u2net.safetensors"
    save_file(full_model.state_dict(), full)
    loaded = load_u2net(full)
    assert type(loaded) is U2NET
    reference = full_model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())


def _one_line_error(path) -> str:
    with pytest.raises(GenerationInputError) as err:
        load_u2net(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "u2net.pth" in text
    return text


def test_bad_weights_files(tmp_path, small_model):
    state = small_model.state_dict()
    assert "file not found" in _one_line_error(tmp_path / "missing.pth")
    (tmp_path / "notes.pth").write_text("not weights\n")
    assert "cannot read" in _one_line_error(tmp_path / "notes.pth")
    (tmp_path / "bad.safetensors").write_text("not weights\n")
    assert "cannot read" in _one_line_error(tmp_path / "bad.safetensors")
    renamed = dict(state)
    renamed["stage1.rebnconvin.conv_s1.kernel"] = renamed.pop("stage1.rebnconvin.conv_s1.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    text = _one_line_error(tmp_path / "renamed.pth")
    assert "does not match U2NETP" in text and "stage1.rebnconvin.conv_s1" in text
    reshaped = dict(state, outconv=torch.zeros(1))
    reshaped["stage2.rebnconv1.conv_s1.weight"] = torch.zeros(16, 64, 1, 1)
    reshaped.pop("outconv")
    torch.save(reshaped, tmp_path / "reshaped.pth")
    assert "size mismatch" in _one_line_error(tmp_path / "reshaped.pth")
    torch.save({"side6.weight": torch.zeros(1, 32, 3, 3)}, tmp_path / "other.pth")
    assert "not a U2-Net state dict" in _one_line_error(tmp_path / "other.pth")
    torch.save({"epoch": 3}, tmp_path / "scalars.pth")
    assert "not a state dict of tensors" in _one_line_error(tmp_path / "scalars.pth")
    torch.save(small_model, tmp_path / "pickled_module.pth")  # needs a full unpickle: refused
    assert "cannot read" in _one_line_error(tmp_path / "pickled_module.pth")


def test_input_preprocessing_is_rescale_and_totensorlab():
    part = np.zeros((40, 60, 3), np.uint8)
    part[:, :30] = (100, 100, 100)
    part[:, 30:] = (200, 150, 50)
    x = u2net_input(part)
    assert x.shape == (3, 320, 320) and x.dtype == np.float32
    peak = 200 / 255  # ToTensorLab divides by the image's max
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    left = (100 / 255 / peak - mean) / std
    right = (np.array([200, 150, 50]) / 255 / peak - mean) / std
    np.testing.assert_allclose(x[:, 160, 80], left, atol=1e-5)
    np.testing.assert_allclose(x[:, 160, 240], right, atol=1e-5)
    grey = u2net_input(np.full((32, 32), 128, np.uint8), 64)
    np.testing.assert_allclose(grey[:, 32, 32], (1 - 0.485) / 0.229, atol=1e-5)


class _KnownMaps(torch.nn.Module):
    """Stands in for U2-Net: the fused output is ``scale * map + shift``; side outputs are noise."""

    def __init__(self, maps: list[np.ndarray], scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.maps, self.scale, self.shift, self.inputs = maps, scale, shift, []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.inputs.append(x.clone())
        fused = torch.from_numpy(np.stack(self.maps)[:, None]).float() * self.scale + self.shift
        return (fused, *[torch.rand_like(fused) for _ in range(6)])


def test_extractor_normalises_resizes_and_thresholds(small_weights):
    extractor = U2NetMaskExtractor(small_weights, device="cpu")
    assert extractor.threshold == 0.5 and extractor.input_size == 320
    saliency = np.full((320, 320), 0.2, np.float32)
    saliency[100:200, 40:160] = 0.9  # -> 1.0 after min-max
    saliency[250:300, 250:300] = 0.5  # -> 0.43 after min-max: below 0.5
    other = np.zeros((320, 320), np.float32)
    other[:160] = 0.01  # a faint map: min-max stretches it to 0 / 1
    parts = [
        np.random.default_rng(0).integers(0, 255, (160, 200, 3), dtype=np.uint8),
        np.full((48, 48, 3), 90, np.uint8),
    ]
    extractor.model = _KnownMaps([saliency, other])
    masks = extractor.batch(parts)
    sent = extractor.model.inputs[0]
    assert tuple(sent.shape) == (2, 3, 320, 320) and sent.dtype == torch.float32
    np.testing.assert_array_equal(sent[0].numpy(), u2net_input(parts[0]))
    mask = masks[0]
    assert mask.shape == (160, 200) and mask.dtype == bool
    # The 0.9 rectangle scaled to 160 x 200: rows 50..100, columns 25..100 (bilinear at the edges).
    assert mask[52:98, 27:98].all() and mask.sum() == mask[49:101, 24:101].sum()
    assert not mask[124:151, 155:189].any()  # the 0.43 square (rows 125..150, columns 156..188)
    np.testing.assert_array_equal(mask, saliency_to_grey(saliency, 160, 200) / 255 > 0.5)
    assert masks[1].shape == (48, 48) and masks[1][:23].all() and not masks[1][25:].any()
    # Min-max per image: an affine change of the network's output gives the same masks.
    extractor.model = _KnownMaps([saliency, other], scale=0.01, shift=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(masks, extractor.batch(parts), strict=True))
    extractor.threshold = 0.3  # the 0.43 square is kept at a lower threshold
    assert extractor.batch(parts)[0][127:148, 158:186].all()
    extractor.model = _KnownMaps([np.full((320, 320), 0.7, np.float32)])
    assert not extractor(parts[1]).any()  # a constant map has no salient region


def test_config_u2net_goes_through_mask_extractor(small_weights):
    cfg = DualAnoDiffConfig(mask_extractor="u2net", u2net_weights=small_weights, device="cpu")
    assert cfg.u2net_threshold == 0.5 and cfg.mask_threshold == 0.2
    extract = mask_extractor(
        cfg.mask_extractor,
        cfg.mask_threshold,
        cfg.mask_min_area,
        cfg.u2net_weights,
        u2net_threshold=cfg.u2net_threshold,
        device=cfg.device,
    )
    assert isinstance(extract, U2NetMaskExtractor) and extract.threshold == 0.5
    assert isinstance(extract.model, U2NETP)
    extract.input_size = 64  # the real network on CPU at a small size (320 as released)
    part = np.full((40, 56, 3), 128, np.uint8)
    part[10:25, 20:40] = (220, 40, 40)
    mask = extract(part)
    assert mask.shape == (40, 56) and mask.dtype == bool
    legacy = mask_extractor("u2net", 0.2, 0.0, small_weights)  # the old positional call
    assert legacy.threshold == 0.5
    with pytest.raises(GenerationInputError, match="u2net_threshold=1.5"):
        DualAnoDiffConfig(u2net_threshold=1.5)
