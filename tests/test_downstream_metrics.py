import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

from anobench.downstream import metrics as M
from anobench.downstream.errors import DownstreamInputError


def _random_case(rng, n=6, size=24, ties=False):
    masks = np.zeros((n, size, size), bool)
    for i in range(n // 2, n):  # half the images carry 1-2 rectangles
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 6, 2)
            masks[i, y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = True
    maps = rng.random(masks.shape) + 0.7 * masks
    if ties:
        maps = np.round(maps, 1)
    scores = maps.reshape(n, -1).max(1)
    return maps, masks, scores


@pytest.mark.parametrize("ties", [False, True])
def test_ranking_metrics_equal_sklearn(ties):
    rng = np.random.default_rng(0)
    maps, masks, scores = _random_case(rng, ties=ties)
    out = M.segmentation_metrics(maps, masks, scores)
    labels = masks.reshape(len(masks), -1).any(1)
    assert out[M.IMAGE_AUROC] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert out[M.IMAGE_AP] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert out[M.PIXEL_AUROC] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert out[M.PIXEL_AP] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    precision, recall, _ = precision_recall_curve(masks.ravel(), maps.ravel())
    f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-300))
    assert out[M.PIXEL_F1MAX] == pytest.approx(f1, abs=1e-12)
    assert set(out) == set(M.SEGMENTATION_KEYS)


def test_f1_grid_mode_equals_sklearn_f1_at_each_grid_threshold():
    rng = np.random.default_rng(1)
    maps, masks, scores = _random_case(rng)
    maps = maps / maps.max()
    expected = max(f1_score(masks.ravel(), maps.ravel() > t) for t in np.linspace(0, 1, 21))
    assert M.f1max(maps, masks, "grid-0.05") == pytest.approx(expected, abs=1e-12)
    out = M.segmentation_metrics(maps, masks, scores, pixel_f1="grid-0.05")
    assert out[M.PIXEL_F1MAX] == pytest.approx(expected, abs=1e-12)
    assert out[M.PIXEL_F1MAX] <= M.f1max(maps, masks, "exact") + 1e-12  # the grid sees fewer thresholds


def test_f1max_hand_computed():
    # scores 0.9(+) 0.8(-) 0.7(+) 0.1(-): thresholds give F1 2/3, 1/2, 4/5, 2/3 -> 0.8
    assert M.f1max(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(0.8)


def test_aupro_on_hand_made_regions():
    # One image, two regions (sizes 2 and 4) and 10 normal pixels (scores 0.0 .. 0.9 step 0.1, no ties).
    maps = np.zeros((1, 4, 8))
    masks = np.zeros((1, 4, 8), bool)
    masks[0, 0, 0:2] = True  # region A (2 px)
    masks[0, 3, 4:8] = True  # region B (4 px), not 8-connected to A
    maps[0, 0, 0:2] = [0.95, 0.95]  # A fully detected above every normal pixel
    maps[0, 3, 4:8] = [0.96, 0.97, 0.05, 0.05]  # B: half above every normal, half below all but one
    normal = ~masks[0]
    maps[0][normal] = np.r_[np.arange(10) / 10.0, np.full(normal.sum() - 10, -1.0)]
    n_normal = normal.sum()  # 26 normal pixels; 16 at -1, 10 in 0.0..0.9
    fpr, pro = M.pro_curve(maps, masks)
    # at t=0.95 (above all normals): both of A, half of B -> PRO 0.75, FPR 0
    assert pro[np.flatnonzero(fpr == 0)[-1]] == pytest.approx(0.75)
    # the curve stays at 0.75 until t=0.05 (FPR = 9/26: normals 0.1..0.9 detected) ...
    # ... so up to FPR 0.3 the area is 0.75 * 0.3 and AU-PRO (normalised) is 0.75.
    assert 9 / n_normal > 0.3
    assert M.aupro(maps, masks) == pytest.approx(0.75)
    # with a limit of 0.5: the rest of B arrives at t=0.05, still at FPR 9/26 (no normal pixel ties it)
    expected = (0.75 * 9 / n_normal + 1.0 * (0.5 - 9 / n_normal)) / 0.5
    assert M.aupro(maps, masks, fpr_limit=0.5) == pytest.approx(expected)


def test_aupro_counts_regions_not_pixels_and_uses_8_connectivity():
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 0:4, 0:4] = True  # big region, 16 px, found
    masks[1, 0, 0] = masks[1, 1, 1] = True  # diagonal neighbours: ONE 8-connected region, missed
    maps = np.where(masks, 0.0, 0.5)
    maps[0][masks[0]] = 1.0
    _, sizes = M.label_regions(masks)
    assert sorted(sizes) == [2, 16]
    # at FPR 0 only the big region is found: PRO 1/2 (per region), not 16/18 (per pixel)
    assert M.aupro(maps, masks) == pytest.approx(0.5)


def test_perfect_and_inverted_maps():
    rng = np.random.default_rng(2)
    _, masks, _ = _random_case(rng)
    perfect = masks.astype(float) + 0.01 * rng.random(masks.shape)
    assert M.aupro(perfect, masks) == pytest.approx(1.0)
    assert M.aupro(-perfect, masks) == pytest.approx(0.0)


def test_aupro_matches_anomalib_on_identical_inputs():
    torch = pytest.importorskip("torch")
    from anomalib.metrics.aupro import _AUPRO

    rng = np.random.default_rng(3)
    maps, masks, _ = _random_case(rng, n=8, size=48)
    maps = maps.astype(np.float32)
    ref = _AUPRO(fpr_limit=0.3)
    ref.update(torch.from_numpy(maps), torch.from_numpy(masks.astype(np.float32)))
    assert M.aupro(maps, masks) == pytest.approx(float(ref.compute()), abs=1e-3)


def test_classification_accuracy_over_all_images():
    assert M.classification_accuracy([0, 1, 2, 2, 1], [0, 1, 1, 2, 0]) == pytest.approx(3 / 5)
    with pytest.raises(DownstreamInputError, match="predictions"):
        M.classification_accuracy([0, 1], [0])


def test_errors_name_the_problem():
    maps = np.zeros((2, 4, 4))
    with pytest.raises(DownstreamInputError, match="both normal and anomalous"):
        M.segmentation_metrics(maps, np.zeros((2, 4, 4), bool), np.zeros(2))
    with pytest.raises(DownstreamInputError, match=r"\(N, H, W\)"):
        M.segmentation_metrics(maps, np.zeros((2, 4, 5), bool), np.zeros(2))
    with pytest.raises(DownstreamInputError, match="grid-0.05"):
        M.f1max(maps, maps > 0, mode="grid")


def test_selection_score_is_the_reference_sum():
    metrics = {key: 0.5 for key in M.SEGMENTATION_KEYS}
    metrics[M.IMAGE_AP] = 10.0  # not part of the criterion
    assert M.selection_score(metrics) == pytest.approx(2.0)


def _reference_style_aupro(maps, masks, num_thresholds=100, limit=0.3):
    """Independent loop version of the MVTec 3D-AD script's semantics (per-region objects, bisect)."""
    from scipy import ndimage

    ok_scores, regions = [], []
    for amap, mask in zip(maps, masks, strict=True):
        labeled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        ok_scores.extend(amap[labeled == 0].tolist())
        regions += [np.sort(amap[labeled == k]) for k in range(1, n + 1)]
    ok_scores = np.sort(ok_scores)
    fprs, pros = [1.0], [1.0]
    for pos in np.linspace(0, len(ok_scores) - 1, num_thresholds).astype(int):
        threshold = ok_scores[pos]
        fprs.append(1.0 - (pos + 1) / len(ok_scores))
        pros.append(np.mean([1.0 - np.searchsorted(r, threshold, side="right") / len(r) for r in regions]))
    x, y = np.array(fprs[::-1]), np.array(pros[::-1])
    i = np.searchsorted(x, limit)  # first point at or past the limit
    y_limit = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
    keep = x < limit
    xs, ys = np.r_[x[keep], limit], np.r_[y[keep], y_limit]
    return np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)) / limit


def test_sampled_aupro_reproduces_the_reference_semantics_and_approximates_the_exact_curve():
    rng = np.random.default_rng(4)
    maps, masks, _ = _random_case(rng, n=8, size=48)
    sampled = M.aupro_sampled(maps, masks)
    assert sampled == pytest.approx(_reference_style_aupro(maps, masks), abs=1e-9)
    assert sampled == pytest.approx(M.aupro(maps, masks), abs=0.01)
    assert M.aupro_sampled(maps, masks, num_thresholds=5000) == pytest.approx(M.aupro(maps, masks), abs=1e-3)


@pytest.mark.parametrize("ties", [False, True])
def test_per_defect_metrics_from_one_sort_equal_a_fresh_sort_per_subset(ties):
    # the one-sort path (SortedPixels.restrict) against sklearn and a fresh AU-PRO on each subset
    from anobench.downstream.evaluation import GOOD, PER_DEFECT_KEYS, HeldOutSplit

    rng = np.random.default_rng(3)
    defects = [GOOD] * 6 + ["crack"] * 4 + ["hole"] * 5
    masks = np.zeros((len(defects), 24, 24), bool)
    for i in range(6, len(defects)):
        y, x = rng.integers(0, 16, 2)
        masks[i, y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = True
    maps = rng.random(masks.shape) + 0.5 * masks
    if ties:
        maps = np.round(maps * 8) / 8
    scores = maps.reshape(len(maps), -1).max(axis=1)
    split = HeldOutSplit(np.empty(0), masks, defects, [f"{d}/{i}" for i, d in enumerate(defects)])
    pixels = split.sort_pixels(maps)
    per_defect = split.score_per_defect(maps, scores, pixels)
    overall = split.score(maps, scores, pixels=pixels)
    assert overall == split.score(maps, scores)
    assert overall[M.PIXEL_AUPRO] == pytest.approx(M.aupro(maps, masks), abs=1e-12)
    for defect in ("crack", "hole"):
        keep = np.isin(defects, [GOOD, defect])
        got = per_defect[defect]
        assert got[M.PIXEL_AUROC] == pytest.approx(
            roc_auc_score(masks[keep].ravel(), maps[keep].ravel()), abs=1e-12
        )
        assert got[M.PIXEL_AP] == pytest.approx(
            average_precision_score(masks[keep].ravel(), maps[keep].ravel()), abs=1e-12
        )
        assert got[M.PIXEL_AUPRO] == pytest.approx(M.aupro(maps[keep], masks[keep]), abs=1e-12)
        assert got[M.IMAGE_AUROC] == pytest.approx(
            roc_auc_score(keep[keep] & (np.array(defects)[keep] != GOOD), scores[keep])
        )
        assert list(got) == list(PER_DEFECT_KEYS)  # only its keys are computed, equal to the full set's
        full = M.segmentation_metrics(maps[keep], masks[keep], scores[keep], labels=split.labels[keep])
        assert got == pytest.approx({key: full[key] for key in PER_DEFECT_KEYS}, abs=1e-12)  # PRO: tie order
    fpr, pro = pixels.pro_curve(M.AUPRO_FPR_LIMIT)
    full_fpr, full_pro = M.pro_curve(maps, masks)
    assert fpr[-2] <= M.AUPRO_FPR_LIMIT < fpr[-1]
    np.testing.assert_array_equal(fpr, full_fpr[: len(fpr)])
    np.testing.assert_allclose(pro, full_pro[: len(pro)], atol=1e-12)


def test_iou_metrics_hand_computed_and_equal_sklearn_jaccard():
    from sklearn.metrics import jaccard_score

    maps = np.array([[[0.9, 0.8], [0.1, 0.2]], [[0.3, 0.7], [0.0, 0.0]], [[0.6, 0.5], [0.4, 0.05]]])
    masks = np.array([[[1, 0], [1, 0]], [[0, 1], [0, 0]], [[0, 0], [0, 0]]], dtype=bool)
    # image 0: best IoU 1/2 (at 0.9 and at 0.1); image 1: 1 (at 0.7); image 2 has no anomaly: left out
    assert M.mean_image_iou(maps, masks) == pytest.approx(0.75)
    # pooled over the split: best at 0.7, where 2 of 3 positives and 1 negative score >= t -> 2/4
    metrics = M.segmentation_metrics(maps, masks, scores=np.array([0.9, 0.7, 0.6]))
    assert metrics[M.PIXEL_IOU] == pytest.approx(0.5) and metrics[M.PIXEL_MIOU] == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    scores, labels = rng.random(500).round(2), rng.random(500) < 0.3
    best = max(jaccard_score(labels, scores >= t) for t in np.unique(scores))
    tps, fps, _ = M.binary_curve(scores, labels)
    assert M.iou_max_from_curve(tps, fps) == pytest.approx(best)
    with pytest.raises(DownstreamInputError, match="no test image has anomalous pixels"):
        M.mean_image_iou(maps[2:], masks[2:])
