"""3D on the command line: voxel sizes read from TIFF metadata, ``train --dims/--voxel-size`` and
``predict`` of a 3D model (its voxel-size warning), and bad 3D input as one line."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pix2pix.checks import VoxelSizesDifferWarning, common_voxel_size
from napari_pix2pix.cli import main
from napari_pix2pix.cli.train import sizes_from_files
from napari_pix2pix.io import load_model, read_image, tiff_scale, tiff_voxel_size
from napari_pix2pix.training import TrainingConfig

TINY = [
    "--epochs", "1", "--steps-per-epoch", "2", "--width", "4", "--depth", "2", "--patch-size", "32",
    "--batch-size", "2", "--device", "cpu", "--quiet",
]  # fmt: skip
IMAGEJ = {"imagej": True, "resolution": (1 / 0.2, 1 / 0.2), "metadata": {"spacing": 0.5, "unit": "um", "axes": "ZYX"}}


def blob_volume(shape: tuple[int, int, int] = (16, 48, 48), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright ellipsoids on noise (uint8) and their instance labels, painted on 3 slices only."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for i in range(10):
        z, y, x = rng.integers(3, shape[0] - 3), rng.integers(6, shape[1] - 6), rng.integers(6, shape[2] - 6)
        inside = ((zz - z) / 3.0) ** 2 + ((yy - y) / 5.0) ** 2 + ((xx - x) / 5.0) ** 2 <= 1
        labels[inside & (labels == 0)] = i + 1
    image = ((labels > 0) * 200 + rng.integers(0, 50, shape)).astype(np.uint8)
    sparse = np.zeros_like(labels)
    sparse[[3, 8, 12]] = labels[[3, 8, 12]]
    return image, sparse


def run(*argv: str) -> tuple[int, str, str]:
    """``napari-pix2pix ARGV``: the exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vol.tif and vol_labels.tif with ImageJ voxel size 0.5 × 0.2 × 0.2 µm; plain.tif and
    plain_labels.tif the same without metadata."""
    folder = tmp_path_factory.mktemp("volumes")
    image, labels = blob_volume()
    tifffile.imwrite(folder / "vol.tif", image, **IMAGEJ)
    tifffile.imwrite(folder / "vol_labels.tif", labels, **IMAGEJ)
    tifffile.imwrite(folder / "plain.tif", image)
    tifffile.imwrite(folder / "plain_labels.tif", labels)
    return folder


@pytest.fixture(scope="module")
def trained_3d(volumes: Path) -> tuple[Path, str]:
    """A 3D model trained by ``train --dims auto`` on the ImageJ stack, and what the run printed."""
    out = volumes / "m3d.pt"
    code, stdout, stderr = run(
        "train", str(volumes / "vol.tif"), str(volumes / "vol_labels.tif"), "--out", str(out), *TINY
    )
    assert code == 0, stderr
    return out, stdout + stderr


def test_the_voxel_size_is_read_from_imagej_and_ome_tiff_metadata(tmp_path: Path) -> None:
    volume = np.zeros((16, 8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "imagej.tif", volume, **IMAGEJ)
    assert tiff_voxel_size(tmp_path / "imagej.tif") == pytest.approx((0.5, 0.2, 0.2))
    tifffile.imwrite(tmp_path / "plain.tif", volume)
    assert tiff_voxel_size(tmp_path / "plain.tif") is None
    tifffile.imwrite(tmp_path / "dpi.tif", volume[0], resolution=(72, 72))  # a writer's default: no size
    assert tiff_scale(tmp_path / "dpi.tif") is None
    tifffile.imwrite(tmp_path / "pixels.tif", volume, imagej=True, resolution=(5, 5), metadata={"axes": "ZYX"})
    assert tiff_voxel_size(tmp_path / "pixels.tif") is None  # ImageJ without a unit: calibrated in pixels
    sizes = {"PhysicalSizeZ": 0.5, "PhysicalSizeY": 200, "PhysicalSizeYUnit": "nm", "PhysicalSizeX": 200}
    tifffile.imwrite(tmp_path / "a.ome.tif", volume, metadata={"axes": "ZYX", **sizes, "PhysicalSizeXUnit": "nm"})
    assert tiff_voxel_size(tmp_path / "a.ome.tif") == pytest.approx((0.5, 0.2, 0.2))  # in µm
    tifffile.imwrite(tmp_path / "flat.tif", volume[0], **{**IMAGEJ, "metadata": {"unit": "um"}})
    image, scale = read_image(tmp_path / "flat.tif")
    assert image.shape == (8, 8) and scale == pytest.approx((0.2, 0.2))  # a 2D TIFF's scale is (y, x)
    assert read_image(tmp_path / "imagej.tif")[1] == pytest.approx((0.5, 0.2, 0.2))


def test_several_voxel_sizes_keep_the_first_with_a_warning() -> None:
    with pytest.warns(VoxelSizesDifferWarning, match="voxel sizes differ"):
        assert common_voxel_size([None, (0.5, 0.2, 0.2), (1.0, 0.2, 0.2)]) == (0.5, 0.2, 0.2)
    config = TrainingConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within 2 %: one voxel size, no warning
        sizes_from_files(config, [(0.5, 0.2, 0.2), (0.505, 0.2, 0.2), None])
    assert config.voxel_size == (0.5, 0.2, 0.2) and config.pixel_size == (0.2, 0.2)


def test_auto_trains_in_3d_on_a_stack_whose_metadata_gives_its_voxel_size(trained_3d: tuple[Path, str]) -> None:
    path, printed = trained_3d
    model = load_model(path)
    assert model.config.architecture == "unet-3d"
    assert model.voxel_size == pytest.approx((0.5, 0.2, 0.2)) and model.pixel_size == pytest.approx((0.2, 0.2))
    assert "3D: the stack has 16 slices of 0.5, 2.5× the pixel size" in printed


def test_without_metadata_auto_trains_in_2d_and_voxel_size_with_dims_3d_in_3d(volumes: Path) -> None:
    pair = str(volumes / "plain.tif"), str(volumes / "plain_labels.tif")
    code, stdout, stderr = run("train", *pair, "--out", str(volumes / "auto.pt"), *TINY)
    assert code == 0, stderr
    assert load_model(volumes / "auto.pt").config.architecture == "unet"
    assert "2D: the voxel size is unknown" in stderr
    code, _, stderr = run(
        "train", *pair, "--out", str(volumes / "3d.pt"), "--dims", "3d", "--voxel-size", "0.5", "0.2", "0.2", *TINY
    )
    assert code == 0, stderr
    model = load_model(volumes / "3d.pt")
    assert model.config.architecture == "unet-3d" and model.voxel_size == (0.5, 0.2, 0.2)
    code, _, stderr = run(
        "train", *pair, "--out", str(volumes / "b.pt"), "--dims", "3d", "--voxel-size", "0.5", "0.2", "0.2",
        "--binning", "2", *TINY,
    )  # fmt: skip
    assert code == 0 and "y and x binned 2× to voxels of 0.5 × 0.4 × 0.4" in stderr, stderr
    assert load_model(volumes / "b.pt").voxel_size == (0.5, 0.4, 0.4)
    code, _, stderr = run("predict", str(volumes / "b.pt"), pair[0], "--out", str(volumes / "b.tif"), "--device", "cpu")
    assert code == 0 and "note: the model learned its volumes binned 2× in y and x" in stderr, stderr
    assert tifffile.imread(volumes / "b.tif").shape == tifffile.imread(pair[0]).shape
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(["train", *pair, "--out", str(volumes / "x.pt"), "--binning", "two", *TINY])
    assert exited.value.code == 2 and "--binning: expected auto or a whole number, got 'two'" in err.getvalue()


def test_predicting_with_a_3d_model_writes_a_volume_of_instances(trained_3d: tuple[Path, str], volumes: Path) -> None:
    model, _ = trained_3d
    out = volumes / "instances.tif"
    code, stdout, stderr = run("predict", str(model), str(volumes / "vol.tif"), "--out", str(out), "--device", "cpu")
    assert code == 0 and "warning" not in stderr  # the file's voxel size is the model's
    written = tifffile.imread(out)
    assert written.shape == (16, 48, 48) and written.dtype == np.uint32
    assert "wrote instances (16, 48, 48)" in stdout


def test_a_big_tiff_streams_from_disk_and_predicts_the_same(
    trained_3d: tuple[Path, str], volumes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TIFF over ``LAZY_TIFF_BYTES`` is read a slab at a time (a Zarr array over its pages, plain
    file reads, so the pages do not stay in the process's memory), also when compressed."""
    import zarr

    from napari_pix2pix.io import tiff

    model, _ = trained_3d
    image = tifffile.imread(volumes / "vol.tif")
    tifffile.imwrite(volumes / "packed.tif", image, compression="zlib", **IMAGEJ)
    assert run("predict", str(model), str(volumes / "vol.tif"), "--out", str(volumes / "whole.tif"), "--quiet")[0] == 0
    monkeypatch.setattr(tiff, "LAZY_TIFF_BYTES", 0)
    for name in ("vol.tif", "packed.tif"):
        lazy, voxel_size = read_image(volumes / name)
        assert isinstance(lazy, zarr.Array) and np.array_equal(lazy[3:5], image[3:5]) and voxel_size == (0.5, 0.2, 0.2)
        out = volumes / f"streamed-{name}"
        assert run("predict", str(model), str(volumes / name), "--out", str(out), "--quiet")[0] == 0
        np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(volumes / "whole.tif"))


def test_a_voxel_size_other_than_the_models_is_rescaled_and_said(
    trained_3d: tuple[Path, str], volumes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = trained_3d
    out = str(volumes / "other.tif")
    argv = ["predict", str(model), str(volumes / "plain.tif"), "--out", out, "--device", "cpu", "--quiet"]
    code, _, stderr = run(*argv, "--voxel-size", "1", "0.2", "0.2")
    assert code == 0 and "warning" not in stderr
    (line,) = [line for line in stderr.splitlines() if "note" in line]
    assert line.startswith("napari-pix2pix predict: note: the image's voxels are 1 × 0.2 × 0.2")
    assert "the model learned 0.5 × 0.2 × 0.2: predicting at 2 × 1 × 1 and scaling the result back" in line
    assert tifffile.imread(out).shape == (16, 48, 48)  # scaled back to the image's own grid
    image, _ = blob_volume()
    tifffile.imwrite(
        volumes / "coarse.tif", image, **{**IMAGEJ, "metadata": {"spacing": 2.0, "unit": "um", "axes": "ZYX"}}
    )
    argv[2] = str(volumes / "coarse.tif")
    code, _, stderr = run(*argv)  # read from the file's metadata
    assert code == 0 and "voxels are 2 × 0.2 × 0.2" in stderr and "predicting at 4 × 1 × 1" in stderr
    code, _, stderr = run(*argv, "--voxel-size", "0.505", "0.2", "0.2")  # within 2 %: the model's
    assert code == 0 and "warning" not in stderr and "note" not in stderr


def test_bad_3d_input_is_one_line(trained_3d: tuple[Path, str], volumes: Path) -> None:
    image, labels = blob_volume()
    tifffile.imwrite(volumes / "one.tif", image[3])
    tifffile.imwrite(volumes / "one_labels.tif", labels[3])
    one = str(volumes / "one.tif"), str(volumes / "one_labels.tif")
    pair = str(volumes / "vol.tif"), str(volumes / "vol_labels.tif")
    model, _ = trained_3d
    for argv, says in [
        (["train", *one, "--dims", "3d"], "--dims 3d: 3D training needs stacks"),
        (["train", *pair, "--voxel-size", "0", "1", "1"], "a voxel size must be three positive numbers"),
        (["train", *pair, "--resume", str(model), "--dims", "2d"], "--dims 2d differs from the model to resume"),
        (["train", *pair, "--pixel-size", "0.3", "0.3", "--voxel-size", "0.5", "0.2", "0.2"], "not the y, x"),
        (["train", *pair, "--model", "seed-unet", "--dims", "3d"], "--dims 3d: seed-unet trains slice by slice"),
    ]:
        code, stdout, stderr = run(*argv, "--out", str(volumes / "bad.pt"), *TINY)
        assert code == 2 and stderr.count("\n") == 1 and says in stderr, stderr
    code, _, stderr = run(
        "predict", str(model), pair[0], "--out", str(volumes / "bad.tif"), "--voxel-size", "0", "1", "1"
    )
    assert code == 2 and stderr.count("\n") == 1 and "voxel size must be three positive numbers" in stderr
    assert not (volumes / "bad.pt").exists() and not (volumes / "bad.tif").exists()


def test_torchrun_trains_a_3d_model_with_two_processes(volumes: Path) -> None:
    """3D training under DistributedDataParallel (torchrun, gloo), as 2D training runs: two ranks,
    one 3D model file with its voxel size, predicting a volume of the input's shape."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "napari_pix2pix", "train", "vol.tif", "vol_labels.tif", "--out", "ddp3d.pt", "--dims", "3d",
               "--epochs", "2", "--steps-per-epoch", "2", "--width", "4", "--depth", "2", "--batch-size", "1",
               "--device", "cpu", "--quiet"]  # fmt: skip
    done = subprocess.run(command, cwd=volumes, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained by 2 processes") == 1
    model = load_model(volumes / "ddp3d.pt")
    assert model.config.dims == 3 and model.voxel_size == pytest.approx((0.5, 0.2, 0.2))
    assert [h["step"] for h in model.history] == [2, 4]
    code, _, err = run("predict", str(volumes / "ddp3d.pt"), str(volumes / "vol.tif"), "--out",
                       str(volumes / "ddp3d.tif"), "--quiet")  # fmt: skip
    assert code == 0, err
    assert tifffile.imread(volumes / "ddp3d.tif").shape == (16, 48, 48)
