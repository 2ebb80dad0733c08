"""The registered DualAnoDiff generators end to end on the embedded ``nut`` category (tiny models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anobench.generation.registry import create_generator, list_generators


@pytest.fixture(scope="module")
def nut_fewshot(nut_root):
    from anobench.benchmarks.data.mvtec import read_category
    from anobench.benchmarks.data.splits import make_split
    from anobench.benchmarks.runner.stages import fewshot_set

    return fewshot_set(make_split(read_category(nut_root, "nut"), "strict"))


def test_registered_and_import_is_light():
    assert {"dualanodiff", "dualanodiff-bcm"} <= set(list_generators("dual*"))
    code = (
        "import sys, generation.registry as r; r.list_generators(); "
        "print('diffusers' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("name", "autoencoder"),
    [("dualanodiff", "vae"), ("dualanodiff-bcm", "vae"), ("dualanodiff", "patch-pca")],
)
def test_fit_sample_write_read_and_reload(name, autoencoder, nut_fewshot, tmp_path):
    from anobench.generation.dualanodiff.generator import DualAnoDiff
    from anobench.generation.format import GeneratedSetWriter, read_generated_set

    options = {**DualAnoDiff.smoke_options, "offline_autoencoder": autoencoder}
    gen = create_generator(name, **options, cache_dir=str(tmp_path / "cache"), image_size=48)
    assert gen.writes_fg and gen.config.bcm == (name == "dualanodiff-bcm")
    gen.fit(nut_fewshot, progress=False)
    writer = GeneratedSetWriter(tmp_path / "generated", name, gen.config_hash())
    pairs = {}
    for defect in nut_fewshot.defects:
        pairs[defect] = list(gen.sample(defect, 3, seed=0))
        for i, pair in enumerate(pairs[defect]):
            assert (
                pair.image.shape == (48, 48, 3)
                and pair.fg.shape == (48, 48, 3)
                and pair.mask.shape == (48, 48)
            )
            writer.write("nut", defect, i, pair)
    listed = read_generated_set(tmp_path / "generated")
    assert sorted(d for _, d in listed) == nut_fewshot.defects
    assert all(e.fg is not None and e.fg.exists() for entries in listed.values() for e in entries)
    # one model per category: the defect types get their own rare tokens
    prompts = {gen.prompts_for(d) for d in nut_fewshot.defects}
    assert len(prompts) == len(nut_fewshot.defects)

    # a second fit with the same inputs reuses the cached base and adapters (nothing is rewritten)
    cached = sorted((tmp_path / "cache").rglob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    gen.fit(nut_fewshot, progress=False)
    assert sorted((tmp_path / "cache").rglob("*.safetensors")) == cached
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    # save/load restores identical samples
    gen.save(tmp_path / "saved")
    restored = type(gen).load(tmp_path / "saved")
    defect = nut_fewshot.defects[0]
    again = list(restored.sample(defect, 2, seed=0))
    for a, b in zip(pairs[defect][:2], again, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.fg, b.fg) and a.seed == b.seed
    pipe = restored.pipeline(defect)  # the diffusers pipeline that sampled them
    assert type(pipe).__name__ == "DualAnoDiffPipeline" and pipe.unet.has_bcm == (name == "dualanodiff-bcm")
    # the cached base's autoencoder came back as saved (its class read from vae/config.json)
    assert (
        type(pipe.vae).__name__ == {"vae": "AutoencoderKL", "patch-pca": "PatchPCAAutoencoder"}[autoencoder]
    )


def test_cli_trains_offline_and_resumes(nut_root, tmp_path):
    from anobench.generation.dualanodiff.generator import DualAnoDiff
    from anobench.generation.dualanodiff.train import main

    flags = []
    for key, value in DualAnoDiff.smoke_options.items():
        if key in ("pretrained_model_name_or_path", "granularity"):
            continue
        values = [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
        flags += [f"--{key}", *values]
    args = [
        "--pretrained_model_name_or_path", "offline",
        "--instance_data_dir", str(nut_root / "nut" / "test" / "scratch"),
        "--mask_data_dir", str(nut_root / "nut" / "ground_truth" / "scratch"),
        "--normal_data_dir", str(nut_root / "nut" / "train" / "good"),
        "--max_instances", "4", "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"),
        *flags,
    ]  # fmt: skip
    args[args.index("--checkpointing_steps") + 1] = "1"
    assert main(args) == 0
    assert (tmp_path / "out" / "weights.safetensors").exists() and (
        tmp_path / "out" / "checkpoint-2"
    ).is_dir()
    # more steps: continues from checkpoint-2 (resume latest)
    args[args.index("--max_train_steps") + 1] = "3"
    assert main(args) == 0
    assert (tmp_path / "out" / "checkpoint-3").is_dir()
    bad = [*args]
    bad[bad.index("--mask_data_dir") + 1] = str(tmp_path)
    assert main(bad) == 2
