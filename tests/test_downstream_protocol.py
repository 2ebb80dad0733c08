import json

import numpy as np
import pytest
import torch

from anobench.benchmarks.config import load_config
from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.errors import ConfigError
from anobench.downstream import metrics as M
from anobench.downstream.classifier import ClassifierConfig, run_classification
from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.protocol import BestOnTest, run_segmentation
from anobench.downstream.training import SegmenterConfig

TINY = dict(image_size=32, base_width=4, epochs=2, samples_per_epoch=8, batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def nut_split(nut_root):
    return make_split(read_category(nut_root, "nut"), "strict")


def _inputs(manifest):
    normals = [manifest.absolute(p) for p in manifest.train_good][:8]
    generated = manifest.fewshot_samples()
    test_good = [manifest.absolute(p) for p in manifest.test_good]
    return normals, generated, test_good, manifest.test_samples()


@pytest.mark.parametrize("selection", ["last-epoch", "best-on-test"])
def test_run_segmentation_marks_its_selection(nut_split, tmp_path, selection):
    config = SegmenterConfig(**TINY, selection=selection)
    result = run_segmentation(*_inputs(nut_split), config, seed=0, out_dir=tmp_path, progress=False)
    assert set(result["metrics"]) == set(M.SEGMENTATION_KEYS)
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert result["selection"] == selection and result["epochs"] == 2
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    if selection == "best-on-test":
        criteria = [h["criterion"] for h in result["history"]]
        assert result["selected_epoch"] == 1 + int(np.argmax(criteria))
        # the restored model reproduces the selected epoch's criterion
        assert M.selection_score(result["metrics"]) == pytest.approx(max(criteria), abs=1e-6)
    else:
        assert result["selected_epoch"] == 2 and "criterion" not in result["history"][0]
    assert set(result["per_defect"]) == {"missing", "scratch", "stain"}
    saved = np.load(result["scores_file"])
    n_test = len(nut_split.test_good) + sum(len(v) for v in nut_split.test_samples().values())
    assert saved["image_scores"].shape == (n_test,) and saved["image_labels"].sum() == n_test - len(
        nut_split.test_good
    )
    assert M.auroc(saved["image_scores"], saved["image_labels"]) == pytest.approx(
        result["metrics"][M.IMAGE_AUROC], abs=1e-6
    )
    assert saved["pro_fpr"].max() <= M.AUPRO_FPR_LIMIT and len(saved["pixel_scores"]) == n_test * 32 * 32
    json.dumps(result)  # the runner writes it as JSON


def test_best_on_test_keeps_the_best_state():
    tracker, model = BestOnTest(), torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert tracker.offer(1, model, 0.5)
    with torch.no_grad():
        model.weight.fill_(2.0)
    assert not tracker.offer(2, model, 0.5)  # ties keep the earlier epoch
    tracker.restore(model)
    assert tracker.epoch == 1 and model.weight.detach()[0, 0].item() == 1.0


def test_segmenter_config_rejects_bad_values():
    with pytest.raises(DownstreamInputError, match="pool_kernel"):
        SegmenterConfig(pool_kernel=20)
    with pytest.raises(DownstreamInputError, match="epochs"):
        SegmenterConfig(epochs=0)


CLS_TINY = dict(arch="resnet18", image_size=32, epochs=2, batch_size=4, epoch_repeats=1, device="cpu")


def test_classifier_trains_on_generated_and_tests_on_all_real(nut_split):
    generated = {d: [image for image, _ in pairs] for d, pairs in nut_split.fewshot_samples().items()}
    test = {d: [image for image, _ in pairs] for d, pairs in nut_split.test_samples().items()}
    config = ClassifierConfig(**CLS_TINY, selection="best-on-test")
    result = run_classification(generated, test, config, seed=0, progress=False)
    n_test = sum(len(v) for v in test.values())
    assert result["n_test"] == n_test and np.sum(result["confusion"]) == n_test
    assert result[M.CLS_ACCURACY] == pytest.approx(np.trace(result["confusion"]) / n_test)
    assert result["classes"] == ["missing", "scratch", "stain"] and result["init"] == "random"
    assert result["selection"] == "best-on-test"
    best = max(h[M.CLS_ACCURACY] for h in result["history"])
    assert result[M.CLS_ACCURACY] == pytest.approx(best)

    single = run_classification({"scratch": generated["scratch"]}, {"scratch": test["scratch"]}, config)
    assert single[M.CLS_ACCURACY] is None and "single defect type" in single["skipped"]


def test_classifier_loads_local_weights_safely(tmp_path):
    import timm
    from safetensors.torch import save_file

    from anobench.downstream.classifier import build_classifier

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    model, init = build_classifier(ClassifierConfig(arch="resnet18", weights=str(path)), num_classes=3)
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 3
    assert init.startswith("resnet18.safetensors sha256:")

    pickle_path = tmp_path / "evil.pth"
    torch.save({"x": object()}, pickle_path)  # not a plain state dict: refused, never unpickled
    with pytest.raises(DownstreamInputError, match="evil.pth"):
        build_classifier(ClassifierConfig(arch="resnet18", weights=str(pickle_path)), num_classes=3)
    other = tmp_path / "small.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(DownstreamInputError, match="missing keys"):
        build_classifier(ClassifierConfig(arch="resnet18", weights=str(other)), num_classes=3)
    with pytest.raises(DownstreamInputError, match="file not found"):
        ClassifierConfig(weights=str(tmp_path / "absent.safetensors"))


def test_classifier_offline_imagenet_efficientnet_lite0():
    from anobench.downstream.classifier import build_classifier
    from anobench.downstream.weights import EFFICIENTNET_LITE0, efficientnet_lite0_state_dict

    config = ClassifierConfig(arch="tf_efficientnet_lite0", weights=EFFICIENTNET_LITE0)
    model, init = build_classifier(config, num_classes=3)
    reference = efficientnet_lite0_state_dict()
    assert init == EFFICIENTNET_LITE0 and model.classifier.out_features == 3
    assert torch.equal(model.conv_stem.weight, reference["conv_stem.weight"])
    assert torch.equal(model.blocks[6][0].conv_pw.weight, reference["blocks.6.0.conv_pw.weight"])
    with pytest.raises(DownstreamInputError, match="needs classifier.arch=tf_efficientnet_lite0"):
        ClassifierConfig(arch="resnet18", weights=EFFICIENTNET_LITE0)


def test_run_config_carries_classifier_evaluation_and_detectors():
    config = load_config(
        "quick",
        [
            "classifier.epochs=3",
            "evaluation.pixel_f1=grid-0.05",
            "evaluation.detectors=[{name: padim, image_size: 64}, {name: patchcore}]",
        ],
    )
    assert config.classifier.epochs == 3 and config.evaluation.pixel_f1 == "grid-0.05"
    assert [d.name for d in config.evaluation.detectors] == ["padim", "patchcore"]
    assert config.evaluation.detectors[0].layers == ["layer1", "layer2", "layer3"]
    with pytest.raises(ConfigError, match="pixel_f1"):
        load_config("quick", ["evaluation.pixel_f1=grid"])
    with pytest.raises(ConfigError, match="detector name"):
        load_config("quick", ["evaluation.detectors=[{name: fastflow}]"])
