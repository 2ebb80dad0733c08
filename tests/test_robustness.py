"""Bad inputs found by a tester (issue 17): each gives a one-line error (exit 2) or the right result."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from anobench.benchmarks.cli import main
from anobench.generation.base import GeneratedPair
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import MANIFEST, GeneratedSetWriter, read_generated_set
from anobench.generation.importers import import_generated
from anobench.generation.locking import LOCK_FILE, FolderLock


def _pair(k: int = 0) -> GeneratedPair:
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:5] = True
    return GeneratedPair(image=np.full((8, 8, 3), 10 * k, np.uint8), mask=mask, seed=k)


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _source(root):
    """A one-defect ``folder``-layout source with two soft masks."""
    for sub in ("image", "mask"):
        (root / "nut" / "crack" / sub).mkdir(parents=True)
    for k in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(root / "nut/crack/image" / f"{k}.png")
        Image.fromarray(np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8)).save(
            root / "nut/crack/mask" / f"{k}.png"
        )
    return root


# ---------------------------------------------------------------- 1. a set records what made it
def test_generate_into_a_set_of_another_seed_or_option_is_refused(nut_root, tmp_path, capsys):
    out = tmp_path / "set"
    args = [
        "generate",
        "--generator",
        "cutpaste-scar",
        "--dataset",
        str(nut_root),
        "--out",
        str(out),
        "-n",
        "1",
    ]
    assert main(args) == 0
    before = (out / MANIFEST).read_text()
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    (line,) = _error_lines(capsys)
    assert "seed 1 != 0 recorded in" in line and str(out / MANIFEST) in line and "another --out" in line
    assert main([*args, "--option", "image_size=48"]) == 2
    assert "config_hash" in capsys.readouterr().err
    assert (out / MANIFEST).read_text() == before  # nothing was mixed in
    assert main([*args, "-n", "2"]) == 0  # the same configuration resumes (and extends)
    records = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
    assert {r["set"]["seed"] for r in records} == {0} and len(records) > before.count("\n")


def test_import_with_another_mask_threshold_or_layout_is_refused(tmp_path, capsys):
    src, out = _source(tmp_path / "src"), tmp_path / "out"
    import_generated("folder", src, out, progress=False)
    with pytest.raises(GenerationInputError, match=r"mask_threshold 0.2 != 0.5 recorded in"):
        import_generated("folder", src, out, mask_threshold=0.2, progress=False)
    with pytest.raises(GenerationInputError, match=r"image_pattern \{stem\}.png != \{stem\}.\*"):
        import_generated("folder", src, out, image_pattern="{stem}.png", progress=False)
    assert len((out / MANIFEST).read_text().splitlines()) == 2
    assert main(["import", str(src), "--layout", "folder", "--out", str(out), "--no-progress"]) == 0


def test_a_set_written_before_settings_were_recorded_is_checked_by_generator_and_hash(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    (root / MANIFEST).write_text(
        json.dumps({"category": "nut", "generator": "old", "config_hash": "h1"}) + "\n"
    )
    with pytest.raises(GenerationInputError, match="generator new != old"):
        GeneratedSetWriter(root, "new", "h1")
    GeneratedSetWriter(root, "old", "h1").close()


# ---------------------------------------------------------------- 3. one writer per folder
def test_a_second_writer_is_told_which_process_holds_the_set(tmp_path):
    with GeneratedSetWriter(tmp_path / "set", "toy", "h"):
        holder = json.loads((tmp_path / "set" / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
        script = (
            "import sys\nfrom anobench.generation.format import GeneratedSetWriter\n"
            f"GeneratedSetWriter({str(tmp_path / 'set')!r}, 'toy', 'h')"
        )
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert proc.returncode != 0 and f"in use by process {os.getpid()} on" in proc.stderr
    with GeneratedSetWriter(tmp_path / "set", "toy", "h"):  # released: the next writer takes it over
        pass


def _hold_and_die(folder: str) -> None:
    FolderLock(folder).acquire()
    os._exit(0)  # killed holder: no release, the kernel drops the lock


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    proc = multiprocessing.get_context("spawn").Process(target=_hold_and_die, args=(str(tmp_path),))
    proc.start()
    proc.join()
    assert (tmp_path / LOCK_FILE).exists()
    with FolderLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_run_refuses_a_run_folder_another_process_writes(nut_root, tmp_path, capsys):
    args = ["run", "--dataset", str(nut_root), "--out", str(tmp_path / "run"), "--no-progress"]
    with FolderLock(tmp_path / "run"):
        assert main([*args, "--set", "data.categories=null", "--set", "genmetrics.enabled=false"]) == 2
    (line,) = _error_lines(capsys)
    assert f"in use by process {os.getpid()}" in line
    assert not (tmp_path / "run" / "raw").exists()


# ---------------------------------------------------------------- 4. half-written manifest lines
def test_a_half_written_manifest_line_does_not_swallow_the_next_record(tmp_path):
    root = tmp_path / "set"
    with GeneratedSetWriter(root, "toy", "h") as writer:
        writer.write("nut", "crack", 0, _pair(0))
    with open(root / MANIFEST, "a") as fh:
        fh.write('{"generator": "toy", "category": "nut", "defe')  # killed mid-write
    with pytest.warns(UserWarning, match="dropped an incomplete last line"):
        writer = GeneratedSetWriter(root, "toy", "h")
    with writer:
        writer.write("nut", "crack", 1, _pair(1))
    lines = (root / MANIFEST).read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [0, 1]
    assert [e.seed for e in read_generated_set(root)[("nut", "crack")]] == [0, 1]


# ---------------------------------------------------------------- 8. names that escape --out
@pytest.mark.parametrize("name", ["../x", "a/b", "..", "."])
def test_import_category_with_a_path_is_rejected(tmp_path, capsys, name):
    src = _source(tmp_path / "src")
    out = tmp_path / "deep" / "out"
    rc = main(
        ["import", str(src), "--layout", "folder", "--out", str(out), "--category", name, "--no-progress"]
    )
    assert rc == 2 and "plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()


def test_writer_rejects_a_defect_name_with_a_separator(tmp_path):
    writer = GeneratedSetWriter(tmp_path / "set", "toy", "h")
    with writer, pytest.raises(GenerationInputError, match="defect '../up'"):
        writer.write("nut", "../up", 0, _pair())
    assert not (tmp_path / "up").exists()
