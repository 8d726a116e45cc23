"""OME-Zarr in and out of the command line: slice by slice, with the voxel size, atomically."""

import numpy as np
import pytest
import tifffile
import zarr

from napari_pix2pix.cli import main
from napari_pix2pix.io import save_model
from napari_pix2pix.io.omezarr import create_zarr, read_zarr


@pytest.fixture
def folder(tmp_path, tiny_model, membranes):
    save_model(tiny_model, tmp_path / "m.pt")
    with create_zarr(tmp_path / "in.zarr", membranes[0].shape, np.float32, scale=(2.0, 0.5, 0.5)) as array:
        for index, plane in enumerate(membranes[0]):
            array[index] = plane
    tifffile.imwrite(tmp_path / "in.tif", membranes[0], photometric="minisblack")
    return tmp_path


def test_an_ome_zarr_volume_is_predicted_into_ome_zarr_with_its_voxel_size(folder, monkeypatch):
    monkeypatch.chdir(folder)
    assert main(["predict", "m.pt", "in.zarr", "--out", "out.zarr", "--device", "cpu", "--quiet"]) == 0
    assert main(["predict", "m.pt", "in.tif", "--out", "out.tif", "--device", "cpu", "--quiet"]) == 0
    labels, scale = read_zarr(folder / "out.zarr")
    assert scale == (2.0, 0.5, 0.5) and labels.chunks == (1, 64, 64)
    np.testing.assert_array_equal(labels[:], tifffile.imread(folder / "out.tif"))
    attrs = zarr.open_group(str(folder / "out.zarr"), mode="r").attrs.asdict()
    assert attrs["multiscales"][0]["version"] == "0.4"
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["z", "y", "x"]
    # A second run replaces the store; nothing hidden is left beside it.
    assert main(["predict", "m.pt", "in.zarr", "--out", "out.zarr", "--device", "cpu", "--quiet"]) == 0
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_failed_zarr_write_leaves_nothing_and_keeps_the_old_store(folder):
    with create_zarr(folder / "keep.zarr", (2, 8, 8), np.uint8) as array:
        array[:] = 7
    with pytest.raises(RuntimeError), create_zarr(folder / "keep.zarr", (2, 8, 8), np.uint8) as array:
        array[0] = 1
        raise RuntimeError("interrupted")
    assert read_zarr(folder / "keep.zarr")[0][:].max() == 7
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_zarr_problems_are_one_line(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    (folder / "plain").mkdir()
    (folder / "notes.zarr").write_text("not a store")
    cases = [
        (["predict", "m.pt", "missing.zarr", "--out", "o.zarr"], "no such file"),
        (["predict", "m.pt", "in.tif", "--out", "notes.zarr"], "is not a Zarr store"),
    ]
    for command, message in cases:
        assert main([*command, "--quiet", "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


@pytest.mark.parametrize("output", ["instances", "labels"])
def test_a_local_dask_cluster_gives_the_single_process_output(folder, monkeypatch, output, membranes):
    from conftest import tiny_config

    from napari_pix2pix.training import fit

    monkeypatch.chdir(folder)
    config = tiny_config(epochs=4, steps_per_epoch=10, batch_size=4, patch_size=32, width=8, learning_rate=3e-3)
    save_model(fit(*membranes, config), folder / "m.pt")  # a model that finds the cells
    stack = np.concatenate([tifffile.imread(folder / "in.tif")] * 3)  # 12 slices: several slabs per worker
    tifffile.imwrite(folder / "deep.tif", stack, photometric="minisblack")
    common = ["--device", "cpu", "--quiet", "--output", output]
    assert main(["predict", "m.pt", "deep.tif", "--out", "one.zarr", *common]) == 0
    assert main(["predict", "m.pt", "deep.tif", "--out", "two.zarr", "--workers", "2", *common]) == 0
    one, two = read_zarr(folder / "one.zarr")[0][:], read_zarr(folder / "two.zarr")[0][:]
    if output == "instances":
        assert one.max() > 12  # objects numbered through the volume
    np.testing.assert_array_equal(two, one)


def test_cluster_options_are_checked(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    assert main(["predict", "m.pt", "in.tif", "--out", "x.tif", "--workers", "2", "--quiet"]) == 2
    assert "--out NAME.zarr" in capsys.readouterr().err
    import dask

    before = dask.config.get("scheduler", None)
    assert main(["predict", "m.pt", "in.tif", "--out", "x.zarr", "--scheduler", "tcp://127.0.0.1:1", "--quiet"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
    # a client that failed to connect leaves dask's scheduler as it was (later dask arrays compute)
    assert dask.config.get("scheduler", None) == before


def test_class_probabilities_are_written_with_a_channel_axis(folder, monkeypatch):
    monkeypatch.chdir(folder)
    common = ["--device", "cpu", "--quiet", "--output", "class-probabilities"]
    assert main(["predict", "m.pt", "in.tif", "--out", "p.tif", *common]) == 0
    assert main(["predict", "m.pt", "in.zarr", "--out", "p.zarr", *common]) == 0
    tif = tifffile.imread(folder / "p.tif")
    stored, scale = read_zarr(folder / "p.zarr")
    assert tif.shape == stored.shape == (4, 2, 64, 64) and scale == (2.0, 1.0, 0.5, 0.5)
    np.testing.assert_allclose(tif, stored[:], atol=1e-6)
    attrs = zarr.open_group(str(folder / "p.zarr"), mode="r").attrs.asdict()
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["z", "c", "y", "x"]


def test_the_pixel_size_goes_from_the_training_data_into_the_model_and_is_checked(folder, monkeypatch, capsys):
    from napari_pix2pix.io import load_model

    monkeypatch.chdir(folder)
    membranes = (tifffile.imread(folder / "in.tif") > tifffile.imread(folder / "in.tif").mean()).astype(np.uint8)
    tifffile.imwrite(folder / "labels.tif", membranes, photometric="minisblack")
    train = ["train", "in.zarr", "labels.tif", "--out", "px.pt", "--epochs", "1", "--steps-per-epoch", "1",
             "--width", "4", "--depth", "2", "--patch-size", "32", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(train) == 0
    assert load_model(folder / "px.pt").pixel_size == (0.5, 0.5)  # from the OME-Zarr voxel size
    capsys.readouterr()
    predict = ["predict", "px.pt", "in.tif", "--out", "p.tif", "--device", "cpu", "--quiet", "--pixel-size", "1", "1"]
    assert main(predict) == 0
    assert (
        "warning: the image's pixels are 1 × 1, the model was trained on pixels of 0.5 × 0.5" in capsys.readouterr().err
    )
    assert main([*predict, "--match-pixel-size"]) == 0
    assert "warning" not in capsys.readouterr().err
