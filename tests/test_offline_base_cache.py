import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from anobench.generation.dualanodiff import offline_base as ob
from anobench.generation.dualanodiff.config import DualAnoDiffConfig


def _images(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"{i:03d}.png" for i in range(n)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return paths


def test_base_key_follows_image_contents_not_paths(tmp_path: Path) -> None:
    config = DualAnoDiffConfig()
    first = _images(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = sorted((tmp_path / "b").iterdir())
    assert ob.base_key(config, "nut", first) == ob.base_key(config, "nut", moved)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(moved[0])  # same path, new content
    assert ob.base_key(config, "nut", first) != ob.base_key(config, "nut", moved)
    assert ob.base_key(config, "nut", first) != ob.base_key(config, "screw", first)


def test_a_cached_base_is_reused_and_trained_once(tmp_path: Path, monkeypatch) -> None:
    config, images = DualAnoDiffConfig(), _images(tmp_path / "good")
    calls = []

    def fake_save(config, category, normal_images, folder, progress):
        calls.append(folder)
        folder.mkdir(parents=True)
        (folder / ob.MARKER).write_text("{}")

    monkeypatch.setattr(ob, "_train_and_save", fake_save)
    first = ob.offline_base(config, "nut", images, tmp_path / "cache")
    again = ob.offline_base(config, "nut", images, tmp_path / "cache")
    assert first == again and calls == [first]
