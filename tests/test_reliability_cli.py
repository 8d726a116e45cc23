"""Reliability of the newer command-line surfaces (issue 22): model limits, checkpoints, torchrun,
folders of training pairs, batches into a folder. Bad input ends in one line and exit status 2."""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import tifffile

from napari_pix2pix.cli import main
from napari_pix2pix.io import load_model, save_model
from napari_pix2pix.io.batch import training_pairs
from napari_pix2pix.models.trained import TrainedModel

TINY = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--patch-size", "32", "--width", "4",
        "--depth", "2", "--device", "cpu", "--quiet"]  # fmt: skip


def one_line(captured: str, start: str = "napari-pix2pix") -> str:
    """The one line of ``captured`` (stderr), checked to be one line with no traceback."""
    text = captured.strip()
    assert "\n" not in text and "Traceback" not in text and text.startswith(start), text
    return text


def write_pair(folder: Path, name: str, labels_name: str, size: int = 48, seed: int = 0) -> None:
    from napari_pix2pix.samples.synthetic import membrane_volume

    image, membranes, _ = membrane_volume((1, size, size), cell_size=16, seed=seed)
    tifffile.imwrite(folder / name, image[0], photometric="minisblack")
    tifffile.imwrite(folder / labels_name, membranes[0].astype(np.uint8) * 255, photometric="minisblack")


# 1. What training saves, loading takes: the model file's limits are training's.


def test_settings_beyond_the_model_file_limits_are_refused_before_training(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files)
    train = ["train", "image.tif", "labels.tif", "--out", "m.pt", *TINY]
    for option, value, message in [
        ("--width", "1100", "width must be from 1 to 1024, got 1100"),
        ("--depth", "11", "depth must be from 1 to 10, got 11"),
        ("--patch-size", "20000", "patch size must be from 2 to 16384, got 20000"),
    ]:
        started = time.monotonic()
        assert main([*train, option, value]) == 2
        assert one_line(capsys.readouterr().err).endswith(f"error: {message}")
        assert time.monotonic() - started < 5 and not (files / "m.pt").exists()
    many = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 300)).astype(np.uint8)  # 300 channels
    tifffile.imwrite(files / "many.tif", many, photometric="minisblack", planarconfig="contig")
    assert main(["train", "many.tif", "labels.tif", "--out", "m.pt", *TINY]) == 2
    assert "image channels must be from 1 to 256, got 300" in capsys.readouterr().err
    # The smallest image a depth-1 U-Net trains on makes a 6-pixel patch: its model loads.
    write_pair(files, "small.tif", "small_labels.tif", size=6)
    assert main(["train", "small.tif", "small_labels.tif", "--out", "s.pt", *TINY, "--depth", "1"]) == 0
    assert load_model(files / "s.pt").patch_size == 6
    assert main(["predict", "s.pt", "small.tif", "--out", "p.tif", "--device", "cpu", "--quiet"]) == 0


# 2. A checkpoint that fails is a warning; the run goes on to its final save.


def test_a_failed_checkpoint_is_a_warning_and_training_goes_on(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import napari_pix2pix.io as io
    from napari_pix2pix.errors import ModelFileError

    monkeypatch.chdir(files)
    real_save, tries = io.save_model, []

    def save(model: TrainedModel, path: str | os.PathLike) -> Path:
        if str(path).endswith(".partial"):
            tries.append(path)
            if len(tries) == 1:
                raise ModelFileError(f"cannot save the model: cannot write {path} (is the disk full?)")
        return real_save(model, path)

    monkeypatch.setattr(io, "save_model", save)
    args = ["train", "image.tif", "labels.tif", "--out", "m.pt", *TINY, "--epochs", "3"]
    assert main([*args, "--checkpoint-minutes", "1e-6"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "Traceback" not in captured.err
    warning = one_line(warnings[0], "napari-pix2pix train: warning: the checkpoint m.pt.partial was not saved")
    assert "is the disk full?" in warning and "training goes on" in warning
    assert len(tries) == 3  # retried at the next epochs
    assert "saved unet" in captured.out and len(load_model(files / "m.pt").history) == 3
    assert not (files / "m.pt.partial").exists()


def test_an_unwritable_checkpoint_is_refused_before_training(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files)
    (files / "m.pt.partial").mkdir()
    args = ["train", "image.tif", "labels.tif", "--out", "m.pt", *TINY]
    assert main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert "the checkpoint m.pt.partial cannot be written" in line and "--checkpoint-minutes 0" in line
    assert not (files / "m.pt").exists() and (files / "m.pt.partial").is_dir()
    assert main([*args, "--checkpoint-minutes", "0"]) == 0  # no checkpoints: the folder is left alone
    assert (files / "m.pt.partial").is_dir()


def torchrun(
    args: list[str], cwd: Path, env: dict | None = None, timeout: float = 60
) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "napari_pix2pix", *args]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


FAILING_CHECKPOINTS = """
import errno, os
_replace = os.replace
def replace(source, target, *args, **kwargs):
    if str(target).endswith(".partial"):
        raise OSError(errno.ENOSPC, "No space left on device")
    return _replace(source, target, *args, **kwargs)
os.replace = replace
"""


def test_under_torchrun_a_failed_checkpoint_stalls_no_rank(
    files: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    hooks = tmp_path_factory.mktemp("hooks")
    (hooks / "sitecustomize.py").write_text(FAILING_CHECKPOINTS)  # every checkpoint fails: disk full
    args = ["train", "image.tif", "labels.tif", "--out", "m.pt", *TINY, "--epochs", "3", "--steps-per-epoch", "2",
            "--checkpoint-minutes", "1e-6"]  # fmt: skip
    done, _ = torchrun(
        args,
        files,
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))},
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "warning: the checkpoint" in line]
    assert len(warnings) == 3 and all("No space left on device" in line for line in warnings)  # rank 0 only
    assert done.stdout.count("trained by 2 processes") == 1
    assert [h["step"] for h in load_model(files / "m.pt").history] == [2, 4, 6]
    assert sorted(p.name for p in files.iterdir()) == ["image.tif", "labels.tif", "m.pt"]


# 3 and 5. Training pairs from one folder, ambiguous and unused labels, suffixes in any case.


def test_images_and_labels_in_one_folder_pair_each_image_with_its_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_pair(folder, "a.tif", "a_labels.tif", seed=1)
    write_pair(folder, "b.TIF", "b_Mask.tif", seed=2)
    pairs = [(image.name, labels.name) for image, labels in training_pairs(["imgs", "imgs"])]
    assert pairs == [("a.tif", "a_labels.tif"), ("b.TIF", "b_Mask.tif")]
    assert main(["train", "imgs", "imgs", "--out", "m.pt", *TINY]) == 0
    assert load_model(tmp_path / "m.pt").encoding.class_values == (0, 255)  # trained on the labels
    capsys.readouterr()
    assert main(["train", "imgs/a.tif", "imgs/a.tif", "--out", "m2.pt", *TINY]) == 2
    assert "imgs/a.tif is given as its own labels" in one_line(capsys.readouterr().err)
    (folder / "c.tif").write_bytes((folder / "a.tif").read_bytes())  # an image without labels
    assert main(["train", "imgs", "imgs", "--out", "m2.pt", *TINY]) == 2
    assert "c.tif has no labels in imgs" in one_line(capsys.readouterr().err)


def test_ambiguous_and_unused_labels_and_upper_case_suffixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    write_pair(tmp_path, "images/s0.TIF", "labels/s0_labels.TIFF", seed=1)
    write_pair(tmp_path, "images/s1.tif", "labels/s1.tif", seed=2)
    write_pair(tmp_path, "spare.tif", "labels/orphan_labels.tif", seed=3)
    assert main(["train", "images", "labels", "--out", "m.pt", *TINY]) == 0
    warning = one_line(capsys.readouterr().err.splitlines()[0], "napari-pix2pix train: warning:")
    assert "1 labels file(s) in labels have no image and are not used: orphan_labels.tif" in warning
    (tmp_path / "labels" / "s0.tif").write_bytes((tmp_path / "labels" / "s1.tif").read_bytes())
    assert main(["train", "images", "labels", "--out", "m2.pt", *TINY]) == 2
    line = one_line(capsys.readouterr().err)
    assert "images/s0.TIF has 2 possible labels files in labels: s0.tif, s0_labels.TIFF" in line
    assert not (tmp_path / "m2.pt").exists()


def test_tiff_suffixes_match_in_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_pix2pix.io.batch import expand_inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    for name in ("S0.TIF", "s1.Tiff", "s2.tif", "notes.txt"):
        (tmp_path / "d" / name).write_bytes(b"")
    assert [p.name for p in expand_inputs(["d"])] == ["S0.TIF", "s1.Tiff", "s2.tif"]
    assert [p.name for p in expand_inputs(["d/*.tif"])] == ["S0.TIF", "s2.tif"]
    assert [p.name for p in expand_inputs(["d/s*.TIFF"])] == ["s1.Tiff"]


# 4, 6 and 8. Batches into a folder.


@pytest.fixture
def batch(tmp_path: Path, tiny_model: TrainedModel, monkeypatch: pytest.MonkeyPatch) -> Path:
    """m.pt and a folder imgs/ of three 48×48 images; the working folder is ``tmp_path``."""
    save_model(tiny_model, tmp_path / "m.pt")
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif", "c.tif"):
        tifffile.imwrite(tmp_path / "imgs" / name, rng.random((48, 48)).astype(np.float32), photometric="minisblack")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def predict(*args: str) -> int:
    return main(["predict", "m.pt", *args, "--device", "cpu", "--quiet"])


def test_earlier_outputs_in_the_out_dir_are_not_inputs(batch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict("imgs", "--out-dir", "imgs") == 0
    assert predict("imgs", "--out-dir", "imgs", "--output", "probability") == 0
    assert predict("imgs/*.tif", "--out-dir", "imgs", "--output", "instances") == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("predicted 3, skipped 0") and "6 earlier output(s) in imgs not taken as inputs" in summary
    outputs = [f"{n}_{kind}.tif" for n in "abc" for kind in ("labels", "probability", "instances")]
    names = sorted(p.name for p in (batch / "imgs").iterdir())
    assert names == sorted(["a.tif", "b.tif", "c.tif", *outputs])
    # A file named on its own is an input, whatever its name.
    assert predict("imgs/a_labels.tif", "--out-dir", "imgs") == 0
    assert (batch / "imgs" / "a_labels_labels.tif").exists()


@pytest.mark.parametrize("where", ["file", "under a file", "unwritable", "cannot be made"])
def test_a_bad_out_dir_is_one_line(
    batch: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import pathlib
    import tempfile

    out = {"file": "imgs/a.tif", "under a file": "imgs/a.tif/out", "unwritable": "imgs", "cannot be made": "new"}[where]
    message = {"file": "is a file, not a folder", "under a file": "imgs/a.tif is a file, not a folder",
               "unwritable": "cannot write in --out-dir imgs: Permission denied",
               "cannot be made": "cannot write in --out-dir new: Permission denied"}[where]  # fmt: skip

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise PermissionError(13, "Permission denied")

    if where == "unwritable":  # (as root, a folder's mode does not stop writing)
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    if where == "cannot be made":
        monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    before = sorted(p.name for p in (batch / "imgs").iterdir())
    assert predict("imgs/b.tif", "--out-dir", out) == 2
    assert message in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in (batch / "imgs").iterdir()) == before


def test_demo_out_naming_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path / "file"), "--device", "cpu"]) == 2
    assert "--out" in one_line(capsys.readouterr().err) and (tmp_path / "file").read_text() == "keep me"


def test_ctrl_c_in_a_batch_prints_what_was_done(
    batch: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import napari_pix2pix.cli.predict as predict_module

    real, calls = predict_module._predict_file, []

    def interrupted_at_the_third(*args: object, **kwargs: object) -> tuple[int, ...]:
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    tifffile.imwrite(batch / "imgs" / "d.tif", np.zeros((48, 48), np.float32), photometric="minisblack")
    monkeypatch.setattr(predict_module, "_predict_file", interrupted_at_the_third)
    assert predict("imgs", "--out-dir", "out") == 130
    captured = capsys.readouterr()
    assert one_line(captured.err) == (
        "napari-pix2pix predict: interrupted; 2 output(s) written, 2 not (the one being written is not kept)"
    )
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith("predicted 2, skipped 0") and "not done 2 (stopped), of 4 input(s)" in summary
    assert sorted(p.name for p in (batch / "out").iterdir()) == ["a_labels.tif", "b_labels.tif"]


# 7. Bad input under torchrun: every rank ends at once, one line.


@pytest.mark.parametrize(
    "paths, out, message",
    [
        (
            ["image.tif", "labels.tif"],
            "missing/m.pt",
            "the folder missing does not exist",
        ),  # was checked on rank 0 only
        (["image.tif", "absent.tif"], "m.pt", "absent.tif"),  # was printed by every rank
    ],
)
def test_under_torchrun_bad_input_ends_every_rank_with_one_line(
    files: Path, paths: list[str], out: str, message: str
) -> None:
    done, seconds = torchrun(["train", *paths, "--out", out, *TINY], files)
    assert done.returncode != 0
    assert seconds < 25  # no rank waits for the group (torchrun killed such a rank after 30 s)
    lines = [line for line in done.stderr.splitlines() if line.startswith("napari-pix2pix train: error:")]
    assert len(lines) == 1 and message in lines[0], done.stderr[-3000:]
    frames = [line for line in done.stderr.splitlines() if line.strip().startswith('File "')]
    assert not [line for line in frames if "napari_pix2pix" in line]  # torchrun's own report aside, no traceback
    assert sorted(p.name for p in files.iterdir()) == ["image.tif", "labels.tif"]


# 8. Explicit settings that --resume would override, and bad numbers.


def test_resume_refuses_other_settings_and_bad_numbers_are_refused(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files)
    assert main(["train", "image.tif", "labels.tif", "--out", "m.pt", *TINY]) == 0
    capsys.readouterr()
    resume = ["train", "image.tif", "labels.tif", "--out", "m2.pt", "--resume", "m.pt", "--epochs", "1",
              "--steps-per-epoch", "1", "--patch-size", "32", "--device", "cpu", "--quiet"]  # fmt: skip
    for option, value in [("--width", "8"), ("--depth", "3"), ("--model", "seed-unet")]:
        assert main([*resume, option, value]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"{option} {value} differs from the model to resume" in line and f"leave {option} out" in line
    assert main([*resume, "--width", "4", "--depth", "2", "--model", "unet"]) == 0  # the same: fine
    assert main(resume) == 0
    capsys.readouterr()
    for minutes in ("nan", "inf", "-1"):
        assert main(["train", "image.tif", "labels.tif", "--out", "x.pt", *TINY, "--checkpoint-minutes", minutes]) == 2
        assert "--checkpoint-minutes must be a number of minutes" in one_line(capsys.readouterr().err)
    for workers in ("0", "-3"):
        assert main(["predict", "m.pt", "image.tif", "--out", "x.zarr", "--workers", workers]) == 2
        assert one_line(capsys.readouterr().err).endswith(f"--workers must be at least 1, got {workers}")
    assert not (files / "x.pt").exists() and not (files / "x.zarr").exists()


def test_a_file_named_like_an_output_that_is_not_ours_is_kept(batch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Training labels are named NAME_labels.tif, like a prediction's output: --overwrite must not
    replace the user's labels with a prediction."""
    theirs = batch / "imgs" / "a_labels.tif"
    tifffile.imwrite(theirs, np.ones((48, 48), np.uint8))
    before = theirs.read_bytes()
    assert predict("imgs/a.tif", "imgs/b.tif", "--out-dir", "imgs", "--overwrite") == 1
    captured = capsys.readouterr()
    assert "a_labels.tif is taken by a file napari-pix2pix did not write" in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("predicted 1, skipped 0 (output already there")
    assert theirs.read_bytes() == before
    ours = batch / "imgs" / "b_labels.tif"
    written = ours.stat().st_ino  # replaced atomically: a new file
    assert predict("imgs/b.tif", "--out-dir", "imgs", "--overwrite") == 0  # our own output is redone
    assert ours.stat().st_ino != written
