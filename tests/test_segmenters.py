"""Every registered segmenter: a tiny training runs, gives maps of the right shape, is seed-deterministic."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from anobench.benchmarks.config import load_config
from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.errors import ConfigError
from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.segmenters import (
    DEFAULT_SEGMENTER,
    create_segmenter,
    list_segmenters,
)
from anobench.downstream.training import SegmenterConfig, predict_tensor, train_segmenter
from anobench.downstream.weights import efficientnet_lite0_state_dict

TINY = dict(image_size=32, base_width=4, epochs=1, samples_per_epoch=4, batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def nut_inputs(nut_root):
    manifest = make_split(read_category(nut_root, "nut"), "strict")
    normals = [manifest.absolute(p) for p in manifest.train_good][:4]
    return normals, manifest.fewshot_samples()


def test_registry_lists_and_filters():
    assert DEFAULT_SEGMENTER in list_segmenters() and "draem-e2e" in list_segmenters()
    assert list_segmenters("smp-*") == ["smp-deeplabv3plus", "smp-fpn", "smp-unet"]
    with pytest.raises(
        DownstreamInputError, match="unknown segmenter 'nope'; registered: draem-e2e, draem-unet"
    ):
        create_segmenter("nope")
    with pytest.raises(DownstreamInputError, match="unknown option"):
        create_segmenter("smp-unet", depth=3)


def _tiny_options(name):
    """Pretrained encoders start random (their loading is tested below), DRAEM's widths are small."""
    if name.startswith("smp-"):
        return {"encoder_weights": None}
    return {"reconstructive_width": 8, "discriminative_width": 4} if name == "draem-e2e" else {}


@pytest.mark.parametrize("name", list_segmenters())
def test_every_segmenter_trains_predicts_and_is_deterministic(name, nut_inputs):
    config = SegmenterConfig(**TINY)
    segmenter = create_segmenter(name, **_tiny_options(name))
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    runs = []
    for seed in (0, 0, 1):
        model = train_segmenter(*nut_inputs, config, seed, progress=False, segmenter=segmenter)
        runs.append(predict_tensor(model, images, batch_size=2, pool_kernel=3))
    maps, scores = runs[0]
    assert maps.shape == (3, 32, 32) and scores.shape == (3,)
    assert ((maps >= 0) & (maps <= 1)).all()
    np.testing.assert_array_equal(runs[0][0], runs[1][0])  # same seed, same maps
    assert not np.allclose(runs[0][0], runs[2][0])  # another seed, another model


@pytest.mark.parametrize("name", list_segmenters("smp-*"))
def test_smp_encoders_start_from_the_offline_imagenet_weights(name):
    segmenter = create_segmenter(name)
    model = segmenter.build(SegmenterConfig(**TINY))
    encoder = model.net.encoder.model.state_dict()
    for key, value in efficientnet_lite0_state_dict().items():
        if key in encoder:
            torch.testing.assert_close(encoder[key], value)
    assert segmenter.weights() == "offline-imagenet-efficientnet-lite0"
    random = create_segmenter(name, encoder_weights=None).build(SegmenterConfig(**TINY))
    assert not torch.equal(random.encoder.model.conv_stem.weight, model.net.encoder.model.conv_stem.weight)


def test_smp_encoder_weights_from_a_file(tmp_path):
    from safetensors.torch import save_file

    state = {k: (v + 1.0).contiguous() for k, v in efficientnet_lite0_state_dict().items()}
    path = tmp_path / "lite0.safetensors"
    save_file(state, str(path))
    segmenter = create_segmenter("smp-fpn", encoder_weights=str(path))
    model = segmenter.build(SegmenterConfig(**TINY))
    torch.testing.assert_close(model.net.encoder.model.conv_stem.weight, state["conv_stem.weight"])
    assert segmenter.weights().startswith("lite0.safetensors sha256:")
    bad = tmp_path / "bad.safetensors"
    save_file({"conv_stem.weight": torch.zeros(3, 3, 3, 3)}, str(bad))
    with pytest.raises(DownstreamInputError, match="encoder_weights"):
        create_segmenter("smp-unet", encoder_weights=str(bad)).build(SegmenterConfig(**TINY))


def test_deeplab_refuses_a_batch_of_one(nut_inputs):
    config = SegmenterConfig(**{**TINY, "samples_per_epoch": 5})  # the last batch holds 1 sample
    with pytest.raises(DownstreamInputError, match="batches of at least 2"):
        deeplab = create_segmenter("smp-deeplabv3plus")
        train_segmenter(*nut_inputs, config, 0, progress=False, segmenter=deeplab)


def test_config_selects_segmenters_with_clear_errors():
    assert load_config("quick").downstream.segmenters == [DEFAULT_SEGMENTER]
    config = load_config("quick", ["downstream.segmenters=[draem-unet, smp-unet]"])
    assert config.downstream.segmenters == ["draem-unet", "smp-unet"]
    with pytest.raises(ConfigError, match="unknown segmenter 'nope'"):
        load_config("quick", ["downstream.segmenters=[nope]"])
    with pytest.raises(ConfigError, match="downstream: encoder='resnet'"):
        load_config("quick", ["downstream.options={smp-unet: {encoder: resnet}}"])
    assert dataclasses.asdict(config.downstream)["options"] == {}


def test_cli_lists_segmenters_with_their_fields():
    out = subprocess.run(
        [sys.executable, "-m", "anobench.benchmarks.cli", "segmenters", "smp-*", "-v"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "smp-unet" in out and "encoder_weights = 'offline-imagenet-efficientnet-lite0'" in out
    assert "draem-unet" not in out


@pytest.mark.slow  # 4 downstream jobs: about 80 s on a loaded 2-core machine
def test_grid_rows_per_segmenter_and_ratio_sweep(tmp_path, nut_root):
    from anobench.benchmarks.report.collect import collect_results
    from anobench.benchmarks.report.figures import ratio_figure
    from anobench.benchmarks.report.tables import summary_table
    from anobench.benchmarks.runner.backends import SerialBackend, run_grid
    from anobench.benchmarks.runner.grid import expand_grid
    from anobench.benchmarks.runner.stage_names import DOWNSTREAM

    config = load_config("quick", [
        f"data.root={nut_root}", "data.categories=null", "generation.generators=[]",
        "generation.reference=[real-fewshot]", "generation.n_per_defect=2", "evaluation.classify=false",
        "evaluation.detectors=[]", "genmetrics.enabled=false", "segmenter.image_size=32",
        "segmenter.base_width=4", "segmenter.epochs=1", "segmenter.samples_per_epoch=4",
        "segmenter.batch_size=2", "downstream.segmenters=[draem-unet, smp-fpn]",
        "downstream.options={smp-fpn: {encoder_weights: null}}", "downstream.normal_fractions=[0.25, 0.75]",
    ])  # fmt: skip
    jobs = expand_grid(config, nut_root, tmp_path, ["nut"])
    down = [j for j in jobs if j.key.stage == DOWNSTREAM]
    assert sorted((j.key.segmenter, j.config.segmenter.normal_fraction) for j in down) == [
        ("draem-unet", 0.25), ("draem-unet", 0.75), ("smp-fpn", 0.25), ("smp-fpn", 0.75)]  # fmt: skip
    assert len({j.key.name for j in down}) == 4
    assert all(("smp-fpn" in j.key.name) == (j.key.segmenter == "smp-fpn") for j in down)
    summary = run_grid(jobs, SerialBackend(), progress=False)
    assert not summary.failures
    frame = collect_results(tmp_path)
    rows = set(summary_table(frame[frame["stage"] == DOWNSTREAM]).index)
    models = ("draem-unet", "smp-fpn")
    assert rows == {f"real-fewshot [{s}] @normal={f}" for s in models for f in (0.25, 0.75)}
    results = [json.loads(j.result_path.read_text()) for j in down]
    assert {r["segmenter"]["name"] for r in results} == {"draem-unet", "smp-fpn"}
    assert {r["recipe"]["generated_fraction"] for r in results} == {0.75, 0.25}
    assert ratio_figure(frame, tmp_path / "ratio.png").is_file()


def test_draem_e2e_reconstructs_only_normal_pixels_in_its_loss():
    from anobench.downstream.draem import reconstruction_target

    images, reconstruction = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8, requires_grad=True)
    masks = torch.zeros(2, 8, 8)
    masks[0, 2:4, 2:5] = 1.0
    target = reconstruction_target(images, reconstruction, masks)
    inside = masks.bool()[:, None].expand_as(images)
    assert torch.equal(target[inside], reconstruction.detach()[inside])  # no loss inside the mask
    assert torch.equal(target[~inside], images[~inside]) and not target.requires_grad
    segmenter = create_segmenter("draem-e2e", reconstructive_width=8, discriminative_width=4)
    model = segmenter.build(SegmenterConfig(**TINY))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 2, 32, 32)
    loss = segmenter.loss(model, torch.rand(2, 3, 32, 32), torch.zeros(2, 32, 32), 2.0)
    loss.backward()
    assert all(p.grad is not None for p in model.reconstructive.parameters())


def test_downstream_preset_has_a_pretrained_encoder_row_and_its_own_cost(tmp_path, nut_root, capsys):
    from anobench.benchmarks.cli import main
    from anobench.benchmarks.runner.plan import job_seconds, load_costs

    config = load_config("downstream")
    assert config.downstream.segmenters == ["draem-unet", "smp-unet"]
    assert create_segmenter("smp-unet").weights() == "offline-imagenet-efficientnet-lite0"
    args = ["--dataset", str(nut_root), "--out", str(tmp_path / "run"), "--set", "data.categories=null"]
    assert main(["run", "downstream", *args, "--plan", "--no-probe"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.split()}
    # one category, 4 generated sets: one draem-unet and one smp-unet job each, costed apart
    assert rows["downstream"][1] == "4" and rows["downstream:smp-unet"][1] == "4"
    smp = job_seconds(load_costs()["stages"]["downstream:smp-unet"], config)
    assert float(rows["downstream:smp-unet"][2]) == pytest.approx(smp, abs=0.1)
    assert not (tmp_path / "run").exists()
