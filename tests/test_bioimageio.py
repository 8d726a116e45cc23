"""Export to bioimage.io: the package passes bioimage.io's own model test and loads back."""

import io

import numpy as np
import pytest
import tifffile

from napari_pix2pix.cli import main
from napari_pix2pix.errors import InputError, ModelFileError
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


def test_a_3d_model_exports_with_z_y_x_axes_passes_the_model_test_and_loads_back(tmp_path, monkeypatch):
    import zipfile

    import yaml
    from bioimageio.core import test_model

    from napari_pix2pix import TrainingConfig, fit
    from napari_pix2pix.bioimageio import export
    from test_volumes import blobs

    monkeypatch.chdir(tmp_path)
    image, labels = blobs((16, 48, 48), count=6)
    config = TrainingConfig(
        dims="3d", voxel_size=(1.0, 0.25, 0.25), epochs=1, steps_per_epoch=2, batch_size=1, width=4, depth=2,
        patch_size=32, device="cpu", max_minutes=None,
    )  # fmt: skip
    model = fit(image, (labels > 0).astype(np.uint8), config)
    assert model.config.z_skip == 1  # z pooled at the second level only: z steps by 2, y and x by 4
    save_model(model, tmp_path / "m3d.pt")
    tifffile.imwrite(tmp_path / "volume.tif", image, photometric="minisblack")
    assert main(["export", "m3d.pt", "m3d.zip", "--image", "volume.tif"]) == 0
    summary = test_model(str(tmp_path / "m3d.zip"))
    failures = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failures
    with zipfile.ZipFile(tmp_path / "m3d.zip") as package:
        description = yaml.safe_load(package.read("rdf.yaml"))
        test_input = np.load(io.BytesIO(package.read(description["inputs"][0]["test_tensor"]["source"])))
    (inputs,), (outputs,) = description["inputs"], description["outputs"]
    assert test_input.shape == (1, 1, 16, 48, 48)  # the whole (small) volume: sides the network takes
    assert [a.get("id") for a in inputs["axes"]] == [None, None, "z", "y", "x"]
    sizes = [{"min": 10, "step": 2}, {"min": 36, "step": 4}, {"min": 36, "step": 4}]  # min: more than 2 halos
    assert [a["size"] for a in inputs["axes"][2:]] == sizes
    assert [(a["halo"], a["scale"], a["unit"]) for a in outputs["axes"][2:]] == [
        (4, 1.0, "micrometer"), (16, 0.25, "micrometer"), (16, 0.25, "micrometer")
    ]  # fmt: skip
    assert [a["scale"] for a in inputs["axes"][2:]] == [1.0, 0.25, 0.25]
    loaded = load_model(tmp_path / "m3d.zip")  # round trip
    assert loaded.config == model.config and loaded.voxel_size == (1.0, 0.25, 0.25)
    volume = image[:8, :40, :44]
    for output in ("labels", "probability"):
        np.testing.assert_array_equal(
            predict(loaded, volume, output, device="cpu"), predict(model, volume, output, device="cpu")
        )
    with pytest.raises(InputError, match="must be a volume"):
        export(model, tmp_path / "plane.zip", image[0])
    with pytest.raises(InputError, match=r"too small: a block of at least 10×36×36 voxels"):
        export(model, tmp_path / "thin.zip", image[:8])


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
