"""Issue 22, OME-Zarr and Dask: what the command line does with stores it must not replace, damaged
or incomplete stores, NGFF axes, scheduler problems and a slab that fails on a worker. Each bad
input ends in one line (exit status 2), with no data lost and nothing hidden left behind.

The Dask tests share one local 2-worker cluster (``scheduler``), given to the command line with
``--scheduler``; its workers run in another folder than the tests, so relative paths are tested too.
"""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from conftest import local_cluster

from napari_pix2pix.cli import main
from napari_pix2pix.io import read_image, save_model
from napari_pix2pix.io.omezarr import create_zarr, read_zarr

CPU = ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def scheduler():
    """The address of a local cluster of 2 worker processes, started in this (the repository's) folder."""
    with local_cluster() as (cluster, client):
        yield cluster.scheduler_address, set(client.run(os.getcwd).values())


@pytest.fixture(scope="module")
def cells_model(membranes):
    """A small model that finds the cells (so instances are many objects), trained on pixels of 0.5 × 0.5."""
    from conftest import tiny_config

    from napari_pix2pix.training import fit

    config = tiny_config(epochs=4, steps_per_epoch=10, batch_size=4, patch_size=32, width=8, learning_rate=3e-3)
    return replace(fit(*membranes, config), pixel_size=(0.5, 0.5))


@pytest.fixture
def folder(tmp_path, tiny_model, membranes, monkeypatch):
    """m.pt (a tiny model), in.tif / in.zarr (4 slices) and deep.tif / deep.zarr (12 slices: several
    slabs per worker); the tests run in this folder."""
    save_model(tiny_model, tmp_path / "m.pt")
    image = membranes[0]
    tifffile.imwrite(tmp_path / "in.tif", image, photometric="minisblack")
    write(tmp_path / "in.zarr", image, scale=(2.0, 0.5, 0.5))
    deep = np.concatenate([image] * 3)
    tifffile.imwrite(tmp_path / "deep.tif", deep, photometric="minisblack")
    write(tmp_path / "deep.zarr", deep)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, data: np.ndarray, scale=None) -> None:
    with create_zarr(path, data.shape, data.dtype, scale=scale) as array:
        array[:] = data


def write_ome(path: Path, data: np.ndarray, axes: str) -> None:
    """An OME-Zarr image (NGFF 0.4) with the named ``axes`` (e.g. 'tczyx'), as other tools write them."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=data.shape)
    kinds = {"t": "time", "c": "channel"}
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": kinds.get(a, "space")} for a in axes],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}]}],
        }
    ]


def run(command: list[str], capsys) -> tuple[int, str]:
    status = main([*command, *CPU])
    return status, capsys.readouterr().err.strip()


def one_line(status: int, err: str, *words: str) -> None:
    assert status == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("napari-pix2pix predict: error: "), err
    for word in words:
        assert word in err, err


def hidden(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if p.name.startswith(".")]


# 1. An existing store is replaced only when it is an OME-Zarr image of the kind napari-pix2pix writes.


def test_an_existing_store_is_replaced_only_when_it_is_an_image_napari_pix2pix_writes(folder, capsys):
    experiment = zarr.open_group(str(folder / "exp.zarr"), mode="w", zarr_format=2)
    experiment.create_array("labels", data=np.ones((4, 8, 8), np.uint8))
    write(folder / "exp.zarr" / "raw", tifffile.imread(folder / "in.tif"))
    zarr.create_array(str(folder / "plain.zarr"), data=np.ones((4, 8, 8), np.uint8), zarr_format=2)
    shutil.copy(folder / "m.pt", folder / "exp.zarr" / "m.pt")
    cases = [
        (["m.pt", "exp.zarr/raw", "--out", "exp.zarr"], "--out exp.zarr holds the input exp.zarr/raw"),
        (["m.pt", "exp.zarr/raw", "--out", "exp.zarr", "--workers", "2"], "holds the input exp.zarr/raw"),
        (["m.pt", "exp.zarr/raw", "--out", "exp.zarr/pred.zarr"], "is inside the Zarr store of the input exp.zarr/raw"),
        (
            ["m.pt", "in.tif", "--out", "exp.zarr"],
            "exp.zarr is a Zarr store that holds labels, m.pt, raw, not an OME-Zarr",
        ),
        (["m.pt", "in.tif", "--out", "plain.zarr"], "plain.zarr is a Zarr array, not an OME-Zarr image"),
        (["exp.zarr/m.pt", "in.tif", "--out", "exp.zarr"], "holds the input exp.zarr/m.pt"),
    ]
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    for command, message in cases:
        status, err = run(["predict", *command], capsys)
        one_line(status, err, message, "choose a new name")
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing lost, nothing added
    # An image napari-pix2pix wrote is replaced, as before.
    assert main(["predict", "m.pt", "in.tif", "--out", "out.zarr", *CPU]) == 0
    assert main(["predict", "m.pt", "in.zarr", "--out", "out.zarr", *CPU]) == 0
    assert not hidden(folder)


# 2. Dask prediction honours the pixel size, and equals one process (labels and instances).


def test_dask_prediction_honours_the_pixel_size_and_equals_one_process(folder, cells_model, scheduler, capsys):
    address, worker_folders = scheduler
    assert str(folder) not in worker_folders  # relative paths mean something else to the workers
    save_model(cells_model, folder / "px.pt")
    warning = "warning: the image's pixels are 1 × 1, the model was trained on pixels of 0.5 × 0.5"
    outputs = {}
    for output in ("labels", "instances"):
        for match in ([], ["--match-pixel-size"]):
            options = ["--output", output, "--pixel-size", "1", "1", *match]
            assert main(["predict", "px.pt", "deep.tif", "--out", "one.zarr", *options, *CPU]) == 0
            assert (warning in capsys.readouterr().err) is not bool(match)
            assert (
                main(["predict", "px.pt", "deep.tif", "--out", "two.zarr", "--scheduler", address, *options, *CPU]) == 0
            )
            assert (warning in capsys.readouterr().err) is not bool(match)
            one, two = read_zarr("one.zarr")[0][:], read_zarr("two.zarr")[0][:]
            np.testing.assert_array_equal(two, one)
            outputs[output, bool(match)] = one
    assert outputs["instances", True].max() > 12  # objects numbered through the volume
    assert not np.array_equal(outputs["labels", True], outputs["labels", False])  # the rescaling was applied
    options = ["--output", "instances", "--pixel-size", "1", "1", "--match-pixel-size"]
    assert main(["predict", "px.pt", "deep.tif", "--out", "local.zarr", "--workers", "2", *options, *CPU]) == 0
    np.testing.assert_array_equal(read_zarr("local.zarr")[0][:], outputs["instances", True])
    assert not hidden(folder)


# 3. A missing chunk is refused before prediction; a damaged one names its slice and the store.


def test_missing_and_damaged_chunks_are_one_line_in_one_process_and_on_workers(folder, scheduler, capsys):
    address, _ = scheduler
    for name in ("missing", "garbage", "truncated"):
        shutil.copytree(folder / "deep.zarr", folder / f"{name}.zarr")
    (folder / "missing.zarr" / "0" / "5.0.0").unlink()
    (folder / "garbage.zarr" / "0" / "3.0.0").write_bytes(b"garbage" * 10)
    chunk = folder / "truncated.zarr" / "0" / "9.0.0"
    chunk.write_bytes(chunk.read_bytes()[:-2])  # Blosc reads this as garbage, without an error
    cases = {
        "missing": "1 of 12 chunks of missing.zarr are missing: the store is incomplete",
        "garbage": "error: garbage.zarr: slice 3 cannot be read: chunk 0/3.0.0 is 70 bytes where its Blosc header says",
        "truncated": "error: truncated.zarr: slice 9 cannot be read: chunk 0/9.0.0 is",
    }
    for name, message in cases.items():
        for cluster in ([], ["--scheduler", address]):
            status, err = run(["predict", "m.pt", f"{name}.zarr", "--out", "out.zarr", *cluster], capsys)
            one_line(status, err, message)
    assert not (folder / "out.zarr").exists() and not hidden(folder)
    # Training reads the image whole: the same line.
    status = main(["train", "truncated.zarr", "in.tif", "--out", "t.pt", "--epochs", "1", *CPU])
    assert status == 2 and "slice 9 cannot be read" in capsys.readouterr().err
    # A store napari-pix2pix writes has every chunk, empty slices too, so it reads back whole.
    write(folder / "empty.zarr", np.zeros((3, 8, 8), np.uint8))
    assert sorted(os.listdir(folder / "empty.zarr" / "0"))[-3:] == ["0.0.0", "1.0.0", "2.0.0"]
    assert read_image("empty.zarr")[0][:].shape == (3, 8, 8)


# 4. NGFF axes: (Z,) Y, X with the channels last; length-1 time and channel axes dropped.


def test_ngff_axes_are_followed(folder, scheduler, capsys, membranes):
    from conftest import tiny_config

    from napari_pix2pix.training import fit

    address, _ = scheduler
    deep = tifffile.imread("deep.tif")
    write_ome(folder / "tczyx.zarr", deep[None, None], "tczyx")
    write_ome(folder / "times.zarr", np.stack([deep[:2]] * 5)[:, None], "tczyx")
    write_ome(folder / "cyx.zarr", deep[:2, :, :], "cyx")
    view, scale = read_image("tczyx.zarr")
    assert view.shape == deep.shape and scale == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(view[3], deep[3])
    np.testing.assert_array_equal(np.asarray(view[2:5, 1:9]), deep[2:5, 1:9])
    # A 5D image of one time point and channel is predicted like the 3D one, in one process and on workers.
    assert main(["predict", "m.pt", "deep.tif", "--out", "tif.zarr", *CPU]) == 0
    assert main(["predict", "m.pt", "tczyx.zarr", "--out", "one.zarr", *CPU]) == 0
    assert main(["predict", "m.pt", "tczyx.zarr", "--out", "two.zarr", "--scheduler", address, *CPU]) == 0
    for name in ("one.zarr", "two.zarr"):
        np.testing.assert_array_equal(read_zarr(name)[0][:], read_zarr("tif.zarr")[0][:])
        axes = zarr.open_group(name, mode="r").attrs["multiscales"][0]["axes"]
        assert [a["name"] for a in axes] == ["z", "y", "x"]
    one_line(*run(["predict", "m.pt", "times.zarr", "--out", "t.zarr"], capsys), "has 5 time points; predict one")
    # Channels go last: a greyscale model refuses two, a two-channel model takes them.
    one_line(*run(["predict", "m.pt", "cyx.zarr", "--out", "c.zarr"], capsys), "2-channel image", "single-channel")
    image, labels = membranes
    two_channels = np.stack([image, image.max() - image], axis=-1)
    save_model(fit(two_channels, labels, tiny_config(epochs=1)), folder / "rgb.pt")
    write_ome(folder / "czyx.zarr", np.moveaxis(two_channels, -1, 0), "czyx")
    tifffile.imwrite("czyx.tif", two_channels, photometric="minisblack")
    assert main(["predict", "rgb.pt", "czyx.zarr", "--out", "c.zarr", *CPU]) == 0
    assert main(["predict", "rgb.pt", "czyx.tif", "--out", "c.tif", *CPU]) == 0
    np.testing.assert_array_equal(read_zarr("c.zarr")[0][:], tifffile.imread("c.tif"))
    assert [a["name"] for a in zarr.open_group("c.zarr", mode="r").attrs["multiscales"][0]["axes"]] == ["z", "y", "x"]
    # Per-class outputs label their class axis c.
    assert main(["predict", "rgb.pt", "czyx.zarr", "--out", "p.zarr", "--output", "class-probabilities", *CPU]) == 0
    axes = zarr.open_group("p.zarr", mode="r").attrs["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["z", "c", "y", "x"]


# 5. Scheduler addresses that are not one, and a scheduler without workers.


def test_scheduler_problems_are_one_line(folder, capsys, monkeypatch):
    from distributed import LocalCluster

    from napari_pix2pix.scale import cluster

    for address in ("notanaddress", "http://localhost:8786"):
        status, err = run(["predict", "m.pt", "deep.tif", "--out", "o.zarr", "--scheduler", address], capsys)
        one_line(status, err, f"--scheduler {address} is not a Dask scheduler address", "tcp://HOST:8786")
    monkeypatch.setattr(cluster, "WORKER_WAIT_S", 1.0)
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as empty:
        command = ["predict", "m.pt", "deep.tif", "--out", "o.zarr", "--scheduler", empty.scheduler_address]
        status, err = run(command, capsys)
    one_line(status, err, f"the Dask scheduler at {empty.scheduler_address} has no workers", "use --workers N")
    assert not (folder / "o.zarr").exists() and not hidden(folder)


# 6. A bad slice on a worker: the engine's line, numbered in the volume; nothing left behind.


def test_a_slab_that_fails_on_a_worker_is_one_line_and_leaves_nothing(folder, scheduler, capfd):
    address, _ = scheduler
    deep = tifffile.imread("deep.tif").astype(np.float32)
    deep[9, 5, 5] = np.nan  # slice 1 of its slab, slice 9 of the volume
    tifffile.imwrite("nan.tif", deep, photometric="minisblack")
    line = "napari-pix2pix predict: error: slice 9 has 1 NaN or infinite pixels; replace them (e.g. with 0) first"
    assert main(["predict", "m.pt", "nan.tif", "--out", "one.zarr", *CPU]) == 2
    assert capfd.readouterr().err.strip() == line
    for _ in range(2):  # the cluster goes on running: its tasks must have stopped writing
        assert main(["predict", "m.pt", "nan.tif", "--out", "out.zarr", "--scheduler", address, *CPU]) == 2
        assert capfd.readouterr().err.strip() == line
        assert not (folder / "out.zarr").exists() and not hidden(folder)
    assert main(["predict", "m.pt", "nan.tif", "--out", "out.zarr", "--workers", "2", *CPU]) == 2
    assert capfd.readouterr().err.strip() == line  # no "Compute Failed" block from the workers either
    assert not (folder / "out.zarr").exists() and not hidden(folder)
