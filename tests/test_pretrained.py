"""The starting model for nuclei that ships with the plugin: found by name on the command line, in
Python and in the widgets, useful as it is on nuclei it has not seen, and fine-tuned without losing
what it learned (its classes, intensity scaling and object size)."""

import numpy as np
import pytest
import tifffile
import torch

from napari_pix2pix import InputError, load_pretrained
from napari_pix2pix.cli import main
from napari_pix2pix.io import load_model
from napari_pix2pix.io.pretrained import PRETRAINED
from napari_pix2pix.prediction import predict
from napari_pix2pix.samples import sample_data_dir


def object_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """F1 of objects matched one to one at IoU > 0.5 (a match above 0.5 is unique)."""
    pairs, overlap = np.unique(np.stack([predicted.ravel(), truth.ravel()]), axis=1, return_counts=True)
    sizes_p = dict(zip(*np.unique(predicted, return_counts=True)))
    sizes_t = dict(zip(*np.unique(truth, return_counts=True)))
    matched = sum(1 for (p, t), n in zip(pairs.T, overlap) if p and t and n / (sizes_p[p] + sizes_t[t] - n) > 0.5)
    n_predicted, n_truth = len(sizes_p) - (0 in sizes_p), len(sizes_t) - (0 in sizes_t)
    return 2 * matched / max(n_predicted + n_truth, 1)


@pytest.fixture(scope="module")
def sample():
    """The shipped nuclei sample (a DSB2018 image the starting model was not trained on)."""
    folder = sample_data_dir()
    return tifffile.imread(folder / "nuclei_image.tif"), tifffile.imread(folder / "nuclei_labels.tif")


@pytest.fixture(scope="module")
def nuclei():
    return load_pretrained("nuclei")


def test_the_nuclei_model_ships_and_finds_nuclei_it_has_not_seen(nuclei, sample):
    image, truth = sample
    assert PRETRAINED["nuclei"].path.stat().st_size < 20e6  # a few MB in the wheel
    assert nuclei.encoding.kind == "instances" and nuclei.normalisation.per_image
    scores = [object_f1(predict(nuclei, tile, "instances", device="cpu"), truth) for tile, truth in zip(image, truth)]
    assert min(scores) > 0.65 and np.mean(scores) > 0.75, scores  # 0.73, 0.79, 0.70, 0.91 when shipped


def test_predict_takes_the_model_by_name(tmp_path, sample, capsys):
    image = tmp_path / "crop.tif"
    tifffile.imwrite(image, sample[0][0, :160, :160])
    out = tmp_path / "crop_instances.tif"
    assert main(["predict", "nuclei", str(image), "--out", str(out), "--quiet"]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (160, 160) and labels.max() >= 5  # the crop holds dozens of nuclei
    assert "wrote instances" in capsys.readouterr().out


def test_a_file_of_that_name_wins_over_the_shipped_model(tmp_path, monkeypatch, tiny_model, membranes):
    from napari_pix2pix.io import save_model

    monkeypatch.chdir(tmp_path)
    save_model(tiny_model, tmp_path / "nuclei")
    tifffile.imwrite(tmp_path / "em.tif", membranes[0][0])
    assert main(["predict", "nuclei", "em.tif", "--out", "out.tif", "--quiet"]) == 0
    assert set(np.unique(tifffile.imread(tmp_path / "out.tif"))) <= {0, 1}  # the file's membrane classes


def test_start_from_fine_tunes_and_keeps_what_the_model_learned(tmp_path, sample, nuclei, capsys):
    image, labels = tmp_path / "image.tif", tmp_path / "labels.tif"
    tifffile.imwrite(image, sample[0][0, :128, :128])
    tifffile.imwrite(labels, sample[1][0, :128, :128])
    out = tmp_path / "tuned.pt"
    args = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--device", "cpu", "--quiet"]
    assert main(["train", str(image), str(labels), "--out", str(out), "--start-from", "nuclei", *args]) == 0
    tuned = load_model(out)
    assert len(tuned.history) == 1  # a new run: its own history, not the starting model's
    assert tuned.config == nuclei.config and tuned.object_size == nuclei.object_size
    assert tuned.encoding.kind == nuclei.encoding.kind and tuned.normalisation.per_image
    statistics = [k for k in nuclei.network.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert statistics and all(  # fine-tuning keeps the statistics of the images the model learned from
        torch.equal(tuned.network.state_dict()[k], nuclei.network.state_dict()[k]) for k in statistics
    )


def test_start_from_refuses_another_network_and_resume_together(tmp_path, sample, capsys):
    image, labels = tmp_path / "image.tif", tmp_path / "labels.tif"
    tifffile.imwrite(image, sample[0][0, :64, :64])
    tifffile.imwrite(labels, sample[1][0, :64, :64])
    base = ["train", str(image), str(labels), "--out", str(tmp_path / "m.pt"), "--quiet"]
    assert main([*base, "--start-from", "nuclei", "--width", "8"]) == 2
    line = capsys.readouterr().err.strip()
    assert "--width 8 differs from the model to start from" in line and "without --start-from" in line
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--start-from", "nuclei", "--resume", str(tmp_path / "m.pt")])
    assert exit_.value.code == 2


def test_an_unknown_name_says_what_ships(tmp_path, capsys):
    with pytest.raises(InputError, match="no pretrained model called 'cells'.*ships nuclei"):
        load_pretrained("cells")
    assert main(["predict", "nucleii", str(tmp_path / "x.tif"), "--out", str(tmp_path / "o.tif"), "--quiet"]) == 2
    assert "model file nucleii does not exist (a file written by 'train', or a shipped model: nuclei)" in (
        capsys.readouterr().err
    )


def test_help_names_the_shipped_model(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "'nuclei'" in capsys.readouterr().out
