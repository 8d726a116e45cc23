"""Predicting many files in one command: folders, globs, skipping done ones, a broken file among them."""

import numpy as np
import pytest
import tifffile

from napari_pix2pix.cli import main
from napari_pix2pix.io import save_model


@pytest.fixture
def folder(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path / "m.pt")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in [("a.tif", (40, 48)), ("b.tif", (2, 32, 40)), ("c.tiff", (56, 24))]:
        tifffile.imwrite(images / name, rng.random(shape).astype(np.float32), photometric="minisblack")
    (images / "notes.txt").write_text("not an image")
    return tmp_path


def predict(*args):
    return main(["predict", "m.pt", *map(str, args), "--device", "cpu", "--quiet"])


def test_a_folder_is_predicted_then_skipped_then_redone(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    assert predict("images", "--out-dir", "out") == 0
    outputs = sorted(p.name for p in (folder / "out").iterdir())
    assert outputs == ["a_labels.tif", "b_labels.tif", "c_labels.tif"]
    assert tifffile.imread(folder / "out" / "b_labels.tif").shape == (2, 32, 40)
    assert "predicted 3, skipped 0" in capsys.readouterr().out
    before = (folder / "out" / "a_labels.tif").stat().st_mtime_ns
    assert predict("images", "--out-dir", "out") == 0
    assert "predicted 0, skipped 3" in capsys.readouterr().out
    assert (folder / "out" / "a_labels.tif").stat().st_mtime_ns == before
    assert predict("images/a.tif", "--out-dir", "out", "--overwrite") == 0
    assert "predicted 1, skipped 0" in capsys.readouterr().out


def test_a_broken_file_is_reported_and_the_rest_go_on(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    (folder / "images" / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    assert predict("images/*.tif", "images/c.tiff", "--out-dir", "out") == 1
    captured = capsys.readouterr()
    assert "broken.tif: error:" in captured.err and "Traceback" not in captured.err
    assert "predicted 3, skipped 0 (output already there; --overwrite to redo), failed 1, of 4" in captured.out
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["a_labels.tif", "b_labels.tif", "c_labels.tif"]


def test_bad_batch_arguments_exit_2(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    assert predict("images/a.tif", "images/c.tiff", "--out", "x.tif") == 2
    assert "--out takes one input" in capsys.readouterr().err
    assert predict("nothing*.tif", "--out-dir", "out") == 2
    assert "no file matches" in capsys.readouterr().err
    (folder / "empty").mkdir()
    assert predict("empty", "--out-dir", "out") == 2
    assert "holds no TIFF files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        predict("images")  # neither --out nor --out-dir
    assert exit.value.code == 2


def test_outputs_in_the_input_folder_are_not_taken_for_inputs(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    assert predict("images", "--out-dir", "images") == 0
    assert predict("images", "--out-dir", "images") == 0
    assert "predicted 0, skipped 3" in capsys.readouterr().out.splitlines()[-1]


@pytest.fixture
def training_folders(tmp_path):
    from napari_pix2pix.samples.synthetic import membrane_volume

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name, shape, seed in [("one", (2, 48, 48), 1), ("two", (1, 40, 64), 2), ("three", (3, 32, 32), 3)]:
        image, membranes, _ = membrane_volume(shape, cell_size=16, seed=seed)
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", image, photometric="minisblack")
        label_name = f"{name}_labels.tif" if name == "two" else f"{name}.tif"
        tifffile.imwrite(tmp_path / "labels" / label_name, membranes.astype(np.uint8) * 255, photometric="minisblack")
    return tmp_path


TRAIN = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--patch-size", "32", "--width", "4",
         "--depth", "2", "--device", "cpu", "--quiet"]  # fmt: skip


def test_training_on_two_folders_and_on_several_pairs(training_folders, monkeypatch, capsys):
    from napari_pix2pix.io import load_model

    monkeypatch.chdir(training_folders)
    assert main(["train", "images", "labels", "--out", "m.pt", *TRAIN]) == 0
    model = load_model(training_folders / "m.pt")
    assert model.encoding.class_values == (0, 255) and not model.normalisation.per_image
    pairs = ["images/one.tif", "labels/one.tif", "images/two.tif", "labels/two_labels.tif"]
    assert main(["train", *pairs, "--out", "m2.pt", "--normalise", "per-image", *TRAIN]) == 0
    assert load_model(training_folders / "m2.pt").normalisation.per_image


def test_an_image_without_labels_is_named(training_folders, monkeypatch, capsys):
    monkeypatch.chdir(training_folders)
    (training_folders / "labels" / "three.tif").unlink()
    assert main(["train", "images", "labels", "--out", "m.pt", *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "three.tif has no labels in labels" in err and not (training_folders / "m.pt").exists()
    assert main(["train", "images/one.tif", "labels/one.tif", "images/two.tif", "--out", "m.pt", *TRAIN]) == 2
    assert "in pairs" in capsys.readouterr().err
