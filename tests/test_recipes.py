"""Training recipes: real few-shot share, O2MAG augmentation, generated-val selection, named protocols."""

import numpy as np
import pytest
import torch

from anobench.benchmarks.config import load_config
from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.errors import ConfigError
from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.protocol import run_segmentation
from anobench.downstream.training import SegmenterConfig, TrainingPool, o2mag_augment, train_segmenter

TINY = dict(image_size=32, base_width=4, epochs=2, samples_per_epoch=8, batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def nut(nut_root):
    return make_split(read_category(nut_root, "nut"), "strict")


def test_o2mag_augment_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[20:40, 10:30] = True
    image = torch.stack([mask.to(torch.uint8) * 255, torch.full((64, 64), 100, dtype=torch.uint8), mask * 0])
    changed = 0
    for _ in range(10):
        aug_image, aug_mask = o2mag_augment(image, mask, rng)
        assert aug_image.shape == (3, 64, 64) and aug_mask.shape == (64, 64) and aug_mask.dtype == torch.bool
        torch.testing.assert_close(aug_image[0] > 127, aug_mask)  # the same geometry for both
        assert aug_mask.any() and (aug_image[1] == 0).any()  # black fill from the rotation/shift
        changed += not torch.equal(aug_mask, mask)
    assert changed == 10
    again = o2mag_augment(image, mask, np.random.default_rng(0))
    torch.testing.assert_close(again[1], o2mag_augment(image, mask, np.random.default_rng(0))[1])


def test_pool_draws_real_anomalies_at_their_share(nut):
    normals = [nut.absolute(p) for p in nut.train_good][:4]
    pool = TrainingPool(normals, {}, 32, real=nut.fewshot_samples())
    images, _ = pool.draw(400, 0.5, np.random.default_rng(0), real_fraction=0.5)
    drawn = (images * 255).round().to(torch.uint8)
    is_normal = (drawn[:, None] == pool.normals[None]).flatten(2).all(2).any(1)
    assert 0.43 < 1 - is_normal.float().mean().item() < 0.57  # real anomalies about half the time
    _, masks = pool.draw(50, 0.5, np.random.default_rng(0), real_fraction=0.0)
    assert masks.sum() == 0  # no generated pairs and no real share: normals only


def test_real_fraction_needs_real_anomalies(nut):
    normals = [nut.absolute(p) for p in nut.train_good][:4]
    config = SegmenterConfig(**TINY, real_fraction=0.2)
    with pytest.raises(DownstreamInputError, match="needs real few-shot anomalies"):
        train_segmenter(normals, {}, config, 0, progress=False)
    with pytest.raises(DownstreamInputError, match="real_fraction=0.6: must be in"):
        SegmenterConfig(normal_fraction=0.5, real_fraction=0.6)


def test_generated_val_selects_on_held_out_generated_pairs(nut):
    normals = [nut.absolute(p) for p in nut.train_good][:10]
    generated = {d: pairs * 3 for d, pairs in nut.fewshot_samples().items()}  # stand-in generated pairs
    test_good = [nut.absolute(p) for p in nut.test_good]
    config = SegmenterConfig(**TINY, selection="generated-val", val_fraction=0.3)
    result = run_segmentation(normals, generated, test_good, nut.test_samples(), config, 0, progress=False)
    criteria = [h["criterion"] for h in result["history"]]
    assert result["selection"] == "generated-val" and result["selected_epoch"] == 1 + int(np.argmax(criteria))
    assert result["train_counts"]["normal"] == 7  # 3 of 10 held out
    assert all(result["train_counts"][d] == len(p) - round(0.3 * len(p)) for d, p in generated.items())
    assert result["recipe"] == {"normal_fraction": 0.5, "real_fraction": 0.0, "generated_fraction": 0.5,
                                "augment": False, "selection": "generated-val"}  # fmt: skip


def test_named_protocols_fill_unset_fields_only():
    assert load_config("quick").downstream.protocol == "anomalydiffusion"
    o2mag = load_config("quick", ["downstream.protocol=o2mag"]).segmenter
    assert (o2mag.normal_fraction, o2mag.real_fraction, o2mag.augment) == (0.5, 0.1, True)
    assert o2mag.generated_fraction == pytest.approx(0.4)
    explicit = load_config("quick", ["downstream.protocol=o2mag", "segmenter.augment=false"])
    assert explicit.segmenter.augment is False
    with pytest.raises(ConfigError, match="downstream.protocol='x': choose one of anomalydiffusion, o2mag"):
        load_config("quick", ["downstream.protocol=x"])
