"""Defect-type fidelity on the defect region: the square it cuts, and that it sees the defect's type.

The features are the real ImageNet EfficientNet-Lite0 ones (shipped in a registry package).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.metrics.effnet_features import EffNetLite0Features
from anobench.benchmarks.metrics.type_fidelity import nearest_types, region_box, region_crops


def mask_with(shape: tuple[int, int], top: int, bottom: int, left: int, right: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


@pytest.mark.parametrize(
    ("box", "shape", "expected"),
    [
        # 1.5 x the longer side (10 -> 15) is under a quarter of 64 (16): 16, centred on (32, 15)
        ((30, 34, 10, 20), (64, 64), (24, 40, 7, 23)),
        # 1.5 x 20 = 30, centred on (20, 30)
        ((10, 30, 25, 35), (64, 64), (5, 35, 15, 45)),
        # at the corner: moved inside, not cut
        ((0, 2, 60, 64), (64, 64), (0, 16, 48, 64)),
        # larger than the image's height: cut to the height, a square of 32 in a 32 x 96 image
        ((0, 32, 40, 48), (32, 96), (0, 32, 28, 60)),
        # 1.5 x 40 = 60, inside a 64 x 64 image
        ((12, 52, 12, 52), (64, 64), (2, 62, 2, 62)),
    ],
)
def test_the_region_is_a_square_around_the_mask_inside_the_image(box, shape, expected):
    top, bottom, left, right = region_box(mask_with(shape, *box))
    assert (top, bottom, left, right) == expected
    assert bottom - top == right - left <= min(shape)
    assert top >= 0 and left >= 0 and bottom <= shape[0] and right <= shape[1]
    # the mask is inside its region
    assert top <= box[0] and box[1] <= bottom and left <= box[2] and box[3] <= right


def test_an_empty_mask_has_the_whole_image_as_region():
    assert region_box(np.zeros((40, 50), bool)) == (0, 40, 0, 50)


def _textured(rng: np.random.Generator, tint: np.ndarray, size: int) -> np.ndarray:
    """A tinted noise texture, different for every image."""
    base = rng.normal(0, 40, (size // 8, size // 8, 1)) + tint
    image = np.asarray(
        Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    )
    return image.copy()


def _defect_set(
    root: Path, n_per_type: int = 8, size: int = 128
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Textures of four tints (whatever the type) with one small defect each: a dark disc ('hole')
    or a bright thin line ('scratch')."""
    rng = np.random.default_rng(0)
    tints = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]], float)
    yy, xx = np.mgrid[:size, :size]
    pairs, types = [], []
    for i in range(2 * n_per_type):
        kind = ("hole", "scratch")[i % 2]
        image = _textured(rng, tints[(i // 2) % 4], size)
        cy, cx = rng.integers(10, size - 10, 2)
        if kind == "hole":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
            image[mask] = (20, 15, 10)
        else:
            mask = (np.abs(yy - cy) <= 0) & (np.abs(xx - cx) <= 7)
            image[mask] = (250, 250, 240)
        image_path, mask_path = root / f"{i}.png", root / f"{i}_mask.png"
        Image.fromarray(image).save(image_path)
        Image.fromarray((mask * 255).astype(np.uint8)).save(mask_path)
        pairs.append((image_path, mask_path))
        types.append(kind)
    return pairs, types


def test_region_features_tell_defect_types_apart_where_whole_images_do_not(tmp_path):
    """Small defects on a texture: the whole image is mostly texture, its region mostly defect."""
    pairs, types = _defect_set(tmp_path)
    extractor = EffNetLite0Features(size=128)
    crops = region_crops(pairs, 128)
    assert crops.shape == (len(pairs), 3, 128, 128)

    def loo_accuracy(features: np.ndarray) -> float:
        found = nearest_types(features, features, types, leave_one_out=True)
        return float(np.mean([a == b for a, b in zip(found, types, strict=True)]))

    region = loo_accuracy(extractor.of_tensor(crops))
    whole = loo_accuracy(extractor.features([image for image, _ in pairs]))
    assert region == 1.0 and whole < region


def test_a_crop_is_the_region_of_the_image_resized(tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    image[24:40, 7:23] = (255, 0, 0)  # exactly the region of the mask below
    mask = mask_with((64, 64), 30, 34, 10, 20)
    Image.fromarray(image).save(tmp_path / "i.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "m.png")
    (crop,) = region_crops([(tmp_path / "i.png", tmp_path / "m.png")], 32)
    assert (crop[0] == 255).all() and (crop[1:] == 0).all()
