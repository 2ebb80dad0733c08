"""The offline base's fixed patch autoencoder: principal components, exact where they should be, reloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anobench.generation.dualanodiff import offline_base as ob
from anobench.generation.dualanodiff.components import downsample_factor, load_components
from anobench.generation.dualanodiff.config import DualAnoDiffConfig
from anobench.generation.dualanodiff.generator import DualAnoDiff
from anobench.generation.dualanodiff.patch_autoencoder import PatchPCAAutoencoder
from anobench.generation.dualanodiff.trainer import encode_latents
from anobench.generation.errors import GenerationInputError


def images_spanning(rank: int, n: int = 6, size: int = 16, factor: int = 4) -> torch.Tensor:
    """Images whose 4 x 4 patches all lie in one ``rank``-dimensional affine subspace."""
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(3 * factor * factor, rank, generator=g, dtype=torch.float64))[0].T
    offset = 0.1 * torch.randn(3 * factor * factor, generator=g, dtype=torch.float64)
    codes = torch.randn(n, size // factor, size // factor, rank, generator=g, dtype=torch.float64)
    patches = 0.3 * codes @ basis + offset
    return F.pixel_shuffle(patches.permute(0, 3, 1, 2), factor).float()


def test_components_of_a_low_rank_set_reconstruct_it_and_fewer_do_not():
    images = images_spanning(rank=5)
    exact = PatchPCAAutoencoder(factor=4, latent_channels=5)
    kept = exact.fit(images)
    z = exact.encode(images).latent_dist.mean
    assert z.shape == (6, 5, 4, 4) and kept == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(exact.decode(z).sample, images, atol=1e-5, rtol=0)
    # the components are orthonormal rows
    torch.testing.assert_close(exact.components @ exact.components.T, torch.eye(5), atol=1e-5, rtol=0)
    fewer = PatchPCAAutoencoder(factor=4, latent_channels=3)
    assert fewer.fit(images) < 0.99
    error = (fewer.decode(fewer.encode(images).latent_dist.mean).sample - images).abs().mean()
    assert error > 1e-2


def test_the_first_components_are_the_largest_variance_directions():
    """Independently of the SVD: each kept direction's variance over the patches, in decreasing order."""
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    ae = PatchPCAAutoencoder(factor=4, latent_channels=6)
    ae.fit(images)
    patches = F.pixel_unshuffle(images, 4).permute(0, 2, 3, 1).reshape(-1, 48).double()
    centred = patches - patches.mean(0)
    variances = (centred @ ae.components.double().T).var(0)
    covariance = torch.cov(centred.T)
    top = torch.linalg.eigvalsh(covariance).flip(0)[:6]
    torch.testing.assert_close(variances, top, rtol=1e-4, atol=1e-8)
    # whitened: the scales are those standard deviations, and every latent channel has unit variance
    torch.testing.assert_close(ae.scales.double() ** 2, top, rtol=1e-4, atol=1e-8)
    latents = ae.encode(images).latent_dist.mean
    torch.testing.assert_close(
        latents.double().var(dim=(0, 2, 3)), torch.ones(6, dtype=torch.float64), rtol=1e-3, atol=0
    )


def test_latents_are_deterministic_whatever_the_noise():
    ae = PatchPCAAutoencoder(factor=2, latent_channels=12)
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    ae.fit(images)
    first = encode_latents(ae, images, torch.Generator().manual_seed(1))
    second = encode_latents(ae, images, torch.Generator().manual_seed(2))
    assert torch.equal(first, second) and downsample_factor(ae) == 2


def test_latent_channels_beyond_the_patch_size_are_refused():
    with pytest.raises(ValueError, match="latent_channels=49"):
        PatchPCAAutoencoder(factor=4, latent_channels=49)


def test_an_unknown_autoencoder_is_a_config_error():
    with pytest.raises(GenerationInputError, match="offline_autoencoder='pca'"):
        DualAnoDiffConfig(pretrained_model_name_or_path=None, offline_autoencoder="pca")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"offline_patch_factor": 8, "offline_patch_channels": 193}, "8 x 8 pixels has 192 values"),
        ({"offline_patch_factor": 16, "resolution": 72}, "multiple of offline_patch_factor=16"),
        ({"offline_patch_factor": 0}, "offline_patch_factor=0: must be at least 1"),
    ],
)
def test_patch_settings_that_cannot_work_are_config_errors(options, message):
    with pytest.raises(GenerationInputError, match=message):
        DualAnoDiffConfig(pretrained_model_name_or_path=None, offline_autoencoder="patch-pca", **options)


def test_the_patch_factor_and_channels_shape_the_base_and_its_key(normal_images):
    """At 32 px, 8 x 8 patches on 32 components give the UNet 32 channels of 4 x 4, a base of its own."""
    tiny = {**DualAnoDiff.smoke_options, "resolution": 32, "offline_autoencoder": "patch-pca"}
    default, coarse = (
        DualAnoDiffConfig(**tiny),
        DualAnoDiffConfig(**tiny, offline_patch_factor=8, offline_patch_channels=32),
    )
    parts = ob.untrained_base(coarse)
    assert (parts.vae.config.factor, parts.vae.config.latent_channels) == (8, 32)
    assert parts.unet.config.in_channels == parts.unet.config.out_channels == 32
    assert parts.unet.config.sample_size == 32 // 8 and downsample_factor(parts.vae) == 8
    assert ob.untrained_base(default).vae.config.factor == 4
    keys = {ob.base_key(c, "nut", normal_images) for c in (default, coarse)}
    assert len(keys) == 2


def test_a_patch_base_fits_without_training_saves_and_loads(normal_images, tmp_path):
    tiny = {**DualAnoDiff.smoke_options, "resolution": 16, "base_vae_steps": 1, "base_unet_steps": 1}
    config = DualAnoDiffConfig(**tiny, offline_autoencoder="patch-pca")
    assert ob.base_key(config, "nut", normal_images) != ob.base_key(
        DualAnoDiffConfig(**tiny), "nut", normal_images
    )
    parts = ob.train_base(config, normal_images, progress=False)
    assert isinstance(parts.vae, PatchPCAAutoencoder)
    assert parts.unet.config.in_channels == parts.unet.config.out_channels == 16
    assert parts.unet.config.sample_size == 16 // 4
    # the scaling factor makes the normal images' latents unit-variance, as for the VAE
    images = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in normal_images])
    latents = parts.vae.encode(images.float() / 127.5 - 1).latent_dist.mean
    assert float(latents.std() * parts.vae.config.scaling_factor) == pytest.approx(1.0, rel=1e-4)
    parts.save_pretrained(tmp_path / "base")
    loaded = load_components(tmp_path / "base")
    assert isinstance(loaded.vae, PatchPCAAutoencoder)
    assert torch.equal(loaded.vae.components, parts.vae.components)
    assert loaded.vae.config.scaling_factor == parts.vae.config.scaling_factor


def test_the_reconstruction_benchmark_separates_the_autoencoders(monkeypatch, capsys):
    """``perf.offline_autoencoder`` end to end on nut: the fitted patch autoencoder keeps the defects.

    The ``none`` row scores the few-shot anomalies as they are; the nearly lossless patch autoencoder's
    round trip leaves the detector's view of them (mask adherence) almost unchanged.
    """
    import json
    import sys

    from anobench.benchmarks.perf import offline_autoencoder

    argv = ["offline_autoencoder", "--categories", "nut", "--vae-steps", "1", "--resolution", "32", "--json"]
    monkeypatch.setattr(sys, "argv", [*argv, "--patch", "4:16", "8:192"])
    offline_autoencoder.main()
    rows = {row["autoencoder"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"none", "vae", "patch-pca 4x4:16", "patch-pca 8x8:192"} and rows["vae"]["steps"] == 1
    # 8 x 8 patches on all their 192 components: lossless up to float rounding
    assert rows["patch-pca 8x8:192"]["defect_l1"] < 1e-3
    rows["patch-pca"] = rows["patch-pca 4x4:16"]
    assert "defect_l1" not in rows["none"]
    for row in rows.values():
        assert 0 <= row["adherence"] <= 1 and 0 <= row["type_region"] <= 1
    assert abs(rows["patch-pca"]["adherence"] - rows["none"]["adherence"]) < 0.05
    assert rows["patch-pca"]["defect_l1"] < 0.1 < rows["vae"]["defect_l1"]
    assert rows["patch-pca"]["normal_l1"] < rows["patch-pca"]["defect_l1"]


@pytest.mark.parametrize(
    ("patch", "message"), [("8", "FACTOR:CHANNELS"), ("8:x", "FACTOR:CHANNELS"), ("8:193", "has 192 values")]
)
def test_the_reconstruction_benchmark_refuses_a_bad_patch(monkeypatch, capsys, patch, message):
    import sys

    from anobench.benchmarks.perf import offline_autoencoder

    monkeypatch.setattr(sys, "argv", ["offline_autoencoder", "--patch", patch])
    with pytest.raises(SystemExit) as exit_info:
        offline_autoencoder.main()
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
