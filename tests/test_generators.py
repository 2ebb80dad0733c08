import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.runner.stages import fewshot_set
from anobench.generation import FewShotSet, create_generator, get_generator, list_generators
from anobench.generation.base import pair_seed
from anobench.generation.baselines._ops import poisson_paste
from anobench.generation.baselines.perlin import perlin_noise
from anobench.generation.errors import GenerationInputError
from anobench.generation.foreground import estimate_foreground, foreground_prior
from anobench.generation.format import GeneratedSetWriter, read_generated_set

# Generators whose output does not depend on the seed (they replay the real few-shot data).
SEEDLESS = {"real-fewshot"}
N = 3


@pytest.fixture(scope="module")
def nut_fewshot(nut_root):
    return fewshot_set(make_split(read_category(nut_root, "nut"), "strict"))


@pytest.fixture(scope="module")
def brick_fewshot(synthetic_root):
    return fewshot_set(make_split(read_category(synthetic_root, "brick"), "strict"))


def _smoke(name, fewshot, **options):
    gen = create_generator(name, **{**get_generator(name).smoke_options, **options})
    gen.fit(fewshot)
    return gen


def _normals(fewshot):
    return [np.asarray(Image.open(p).convert("RGB")) for p in fewshot.normal_images]


# ------------------------------------------------------------------ every registered generator
@pytest.mark.parametrize("name", list_generators())
def test_registered_generator_fits_samples_and_round_trips(name, nut_fewshot, tmp_path):
    gen = _smoke(name, nut_fewshot)
    defect = nut_fewshot.defects[0]
    pairs = list(gen.sample(defect, N, seed=0))
    size = gen.config.image_size or 128  # the embedded dataset is 128 px
    assert len(pairs) == N
    for i, pair in enumerate(pairs):
        assert pair.image.shape == (size, size, 3) and pair.image.dtype == np.uint8
        assert pair.mask.shape == (size, size) and pair.mask.dtype == bool
        assert pair.mask.any(), f"{name}: pair {i} has an empty mask"
        assert pair.seed == pair_seed(0, defect, i)
        assert pair.fg is None or (pair.fg.shape == pair.image.shape and pair.fg.dtype == np.uint8)

    again = list(gen.sample(defect, N, seed=0))
    for a, b in zip(pairs, again, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    if name not in SEEDLESS:
        other = list(gen.sample(defect, N, seed=1))
        assert any(not np.array_equal(a.image, b.image) for a, b in zip(pairs, other, strict=True))

    writer = GeneratedSetWriter(tmp_path, name, gen.config_hash())
    for i, pair in enumerate(pairs):
        writer.write("nut", defect, i, pair)
    entries = read_generated_set(tmp_path)[("nut", defect)]
    for entry, pair in zip(entries, pairs, strict=True):
        assert np.array_equal(np.asarray(Image.open(entry.image).convert("RGB")), pair.image)
        assert np.array_equal(np.asarray(Image.open(entry.mask)) > 127, pair.mask)
        assert entry.seed == pair.seed and entry.generator == name


@pytest.mark.parametrize("name", list_generators())
def test_every_option_is_a_config_field_with_a_default(name):
    cls = get_generator(name)
    for f in dataclasses.fields(cls.Config):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
    assert set(cls.smoke_options) <= {f.name for f in dataclasses.fields(cls.Config)}


def test_unknown_defect_is_a_user_error(nut_fewshot):
    gen = _smoke("perlin", nut_fewshot)
    with pytest.raises(GenerationInputError, match="defect 'crack' is not in the few-shot set"):
        next(gen.sample("crack", 1, 0))


# ------------------------------------------------------------------ the baselines, one by one
def _changed_only_inside(pair, normals, slack=0):
    """Some normal image equals the pair's image everywhere outside the (dilated) mask."""
    from scipy import ndimage

    outside = ~ndimage.binary_dilation(pair.mask, iterations=slack) if slack else ~pair.mask
    return any(np.array_equal(pair.image[outside], n[outside]) for n in normals)


def test_crop_paste_pastes_the_real_anomaly_and_moves_its_mask(brick_fewshot):
    gen = _smoke("crop-paste", brick_fewshot, blend="hard", margin=0, flip=False)
    areas = {int((np.asarray(Image.open(m)) > 127).sum()) for _, m in brick_fewshot.anomalies["hole"]}
    normals = _normals(brick_fewshot)
    for pair in gen.sample("hole", 4, seed=3):
        assert int(pair.mask.sum()) in areas  # a translated real mask
        assert _changed_only_inside(pair, normals)


def test_crop_paste_feather_and_poisson_change_only_near_the_anomaly(brick_fewshot):
    normals = _normals(brick_fewshot)
    for blend in ("feather", "poisson"):
        gen = _smoke("crop-paste", brick_fewshot, blend=blend, margin=2, max_rotation=30.0)
        for pair in gen.sample("stain", 3, seed=0):
            assert _changed_only_inside(pair, normals, slack=2 + 6), blend  # margin + feather reach


def test_crop_paste_places_anomalies_inside_the_object(nut_fewshot):
    gen = _smoke("crop-paste", nut_fewshot)
    prior = foreground_prior(nut_fewshot.normal_images)
    inside = [float((p.mask & prior).sum() / p.mask.sum()) for p in gen.sample("stain", 8, seed=0)]
    assert np.mean(inside) > 0.9
    free = _smoke("crop-paste", nut_fewshot, inside_object=False)
    outside = [float((p.mask & prior).sum() / p.mask.sum()) for p in free.sample("stain", 8, seed=0)]
    assert np.mean(outside) < np.mean(inside)


def test_crop_paste_rejects_a_bad_blend():
    with pytest.raises(GenerationInputError, match="blend='alpha': choose one of feather, poisson, hard"):
        create_generator("crop-paste", blend="alpha")


def test_perlin_uses_no_real_anomaly(brick_fewshot):
    # Few-shot paths that do not exist: the generator must not read them.
    blind = FewShotSet(
        "brick", brick_fewshot.normal_images, {"hole": [(Path("/nope.png"), Path("/nope_mask.png"))]}
    )
    gen = _smoke("perlin", blind)
    normals = _normals(brick_fewshot)
    for pair in gen.sample("hole", 3, seed=0):
        assert pair.mask.mean() >= gen.config.min_area_ratio
        assert _changed_only_inside(pair, normals)


def test_perlin_texture_dir_fills_the_mask(brick_fewshot, tmp_path):
    colours = [(255, 0, 0), (0, 0, 255)]
    for i, c in enumerate(colours):
        Image.new("RGB", (40, 30), c).save(tmp_path / f"t{i}.jpg" if i else tmp_path / f"t{i}.png")
    gen = _smoke("perlin", brick_fewshot, texture_dir=str(tmp_path), beta_max=0.0, augmentations=0)
    for pair in gen.sample("stain", 4, seed=0):
        pixels = pair.image[pair.mask].astype(int)
        assert min(np.abs(pixels - np.array(c)).max() for c in colours) <= 3  # JPEG rounding


def test_perlin_texture_dir_must_exist(brick_fewshot, tmp_path):
    with pytest.raises(GenerationInputError, match="texture_dir=.*: not a folder"):
        _smoke("perlin", brick_fewshot, texture_dir=str(tmp_path / "dtd"))
    with pytest.raises(GenerationInputError, match="holds no images"):
        _smoke("perlin", brick_fewshot, texture_dir=str(tmp_path))


def test_perlin_noise_is_smooth_and_seeded():
    a = perlin_noise(np.random.default_rng(1), (64, 96), (2, 4))
    b = perlin_noise(np.random.default_rng(1), (64, 96), (2, 4))
    assert a.shape == (64, 96) and np.array_equal(a, b)
    assert np.abs(a).max() <= np.sqrt(2) and a.std() > 0.05
    assert np.abs(np.diff(a, axis=1)).max() < 0.2  # neighbouring pixels are close: smooth noise
    assert np.allclose(a[0, 0], 0) and np.allclose(a[32, 24], 0, atol=1e-12)  # zero on lattice points


def test_cutpaste_scar_is_a_thin_patch_scaled_to_the_image(brick_fewshot):
    gen = _smoke("cutpaste-scar", brick_fewshot)
    normals = _normals(brick_fewshot)
    for pair in gen.sample("scratch", 6, seed=0):
        ys, xs = np.nonzero(pair.mask)
        extent = max(np.ptp(ys), np.ptp(xs)) + 1
        # At 128 px the 256-px ranges halve: length 5..12.5, width 2..8 (rotation grows the box).
        assert 3 <= extent <= 20 and pair.mask.sum() <= 8 * 13 * 1.5
        assert _changed_only_inside(pair, normals)


def test_nsa_mask_covers_every_change(nut_fewshot):
    gen = _smoke("nsa", nut_fewshot)
    normals = _normals(nut_fewshot)
    for pair in gen.sample("scratch", 4, seed=0):
        assert pair.mask.sum() >= gen.config.min_area_ratio * pair.mask.size
        assert _changed_only_inside(pair, normals)


def test_poisson_paste_changes_only_the_mask_and_keeps_inputs():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    patch = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    mask = np.ones((12, 16), bool)
    before = (target.copy(), patch.copy(), mask.copy())
    first = poisson_paste(target, patch, mask, 10, 20)
    second = poisson_paste(target, patch, mask, 10, 20)  # OpenCV once mutated its mask argument
    assert np.array_equal(first, second)
    assert all(np.array_equal(x, y) for x, y in zip(before, (target, patch, mask), strict=True))
    changed = np.any(first != target, axis=-1)
    assert changed.any() and not changed[:10].any() and not changed[22:].any()
    assert not changed[:, :20].any() and not changed[:, 36:].any()


def test_estimate_foreground_finds_the_drawn_nut():
    from anobench.benchmarks.data.synth import _nut_image

    image, truth = _nut_image(np.random.default_rng(5))
    fg = estimate_foreground(image)
    iou = (fg & truth).sum() / (fg | truth).sum()
    assert iou > 0.9
    assert not estimate_foreground(np.full((32, 32, 3), 90, np.uint8)).any()


def test_poisson_paste_keeps_gradients_next_to_the_mask_edge():
    # A dark square 2 px inside the mask: OpenCV's internal 3-px erosion once wiped such edges out.
    target = np.full((48, 48, 3), 150, np.uint8)
    patch = np.full((14, 14, 3), 150, np.uint8)
    patch[2:12, 2:12] = 30
    out = poisson_paste(target, patch, np.ones((14, 14), bool), 10, 20)
    assert np.abs(out[12:22, 22:32].astype(int) - 30).max() <= 2
    assert np.array_equal(out[10:12], target[10:12])


def test_crop_paste_poisson_keeps_the_anomaly_visible(nut_fewshot):
    gen = _smoke("crop-paste", nut_fewshot, blend="poisson")
    normals = _normals(nut_fewshot)
    for pair in gen.sample("stain", 4, seed=0):
        change = min(np.abs(pair.image.astype(int) - n)[pair.mask].mean() for n in normals)
        assert change > 20  # the pasted stain differs clearly from every normal image


@pytest.mark.parametrize("name", ["crop-paste", "perlin", "cutpaste-scar", "nsa"])
def test_baseline_save_load_gives_the_same_pairs(name, brick_fewshot, tmp_path):
    gen = _smoke(name, brick_fewshot, image_size=64)
    gen.save(tmp_path)
    loaded = get_generator(name).load(tmp_path)
    assert loaded.config == gen.config and loaded.config_hash() == gen.config_hash()
    for a, b in zip(gen.sample("hole", 2, 7), loaded.sample("hole", 2, 7), strict=True):
        assert (
            a.image.shape == (64, 64, 3)
            and np.array_equal(a.image, b.image)
            and np.array_equal(a.mask, b.mask)
        )
