"""Export to bioimage.io: the package passes bioimage.io's own model test and loads back."""

import numpy as np
import pytest
import tifffile

from napari_pix2pix.cli import main
from napari_pix2pix.errors import ModelFileError
from napari_pix2pix.io import load_model, save_model
from napari_pix2pix.prediction import predict

pytest.importorskip("bioimageio.core")


@pytest.mark.parametrize(
    ("architecture", "normalisation"), [("unet", "dataset"), ("unet", "per-image"), ("seed-unet", "dataset")]
)
def test_an_exported_package_passes_the_bioimageio_model_test_and_loads_back(
    tmp_path, monkeypatch, membranes, architecture, normalisation
):
    from bioimageio.core import test_model
    from conftest import tiny_config

    from napari_pix2pix.training import fit

    monkeypatch.chdir(tmp_path)
    patch = 64 if architecture == "seed-unet" else 32  # valid convolutions need a larger patch
    model = fit(*membranes, tiny_config(model=architecture, normalisation=normalisation, patch_size=patch))
    save_model(model, tmp_path / "m.pt")
    tifffile.imwrite(tmp_path / "image.tif", membranes[0], photometric="minisblack")
    command = ["export", "m.pt", "m.zip", "--image", "image.tif", "--author", "A. Biologist",
               "--cite", "Our lab 2026", "10.1000/xyz123"]  # fmt: skip
    assert main(command) == 0
    summary = test_model(str(tmp_path / "m.zip"))
    failures = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failures
    loaded = load_model(tmp_path / "m.zip")  # round trip
    assert loaded.encoding == model.encoding and loaded.normalisation == model.normalisation
    image = membranes[0][:2]
    np.testing.assert_array_equal(predict(loaded, image, device="cpu"), predict(model, image, device="cpu"))
    assert main(["predict", "m.zip", "image.tif", "--out", "p.tif", "--device", "cpu", "--quiet"]) == 0
    if architecture == "seed-unet":  # valid convolutions: a smaller output, described by its offset
        import zipfile

        import yaml

        with zipfile.ZipFile(tmp_path / "m.zip") as package:
            description = yaml.safe_load(package.read("rdf.yaml"))
        (inputs,), (outputs,) = description["inputs"], description["outputs"]
        assert inputs["axes"][2]["size"] == {"min": 28, "step": 4}
        assert outputs["axes"][2]["size"]["offset"] == -27  # depth 2: 64² in, 37² out
        assert "pixel 0 under input pixel 14" in outputs["axes"][2]["description"]


def test_export_problems_are_one_line(tmp_path, monkeypatch, capsys, tiny_model):
    monkeypatch.chdir(tmp_path)
    save_model(tiny_model, tmp_path / "m.pt")
    tifffile.imwrite(tmp_path / "tiny.tif", np.zeros((2, 2), np.float32))
    assert main(["export", "m.pt", "m.tif", "--image", "tiny.tif"]) == 2
    assert "is a .zip file" in capsys.readouterr().err
    assert main(["export", "m.pt", "m.zip", "--image", "tiny.tif"]) == 2
    assert "too small" in capsys.readouterr().err
    (tmp_path / "other.zip").write_bytes(b"PK not really")
    with pytest.raises(ModelFileError, match="not a bioimage.io package exported by napari-pix2pix"):
        load_model(tmp_path / "other.zip")
