import numpy as np
import pytest
import tifffile
import torch

from napari_pix2pix.cli import main
from napari_pix2pix.io import load_model

TINY = [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "2",
    "--patch-size",
    "32",
    "--width",
    "4",
    "--depth",
    "2",
    "--device",
    "cpu",
    "--quiet",
]


# Enough training (a few seconds) for the model to find the cells, so its outputs can be checked.
LEARNS = [
    "--epochs",
    "4",
    "--steps-per-epoch",
    "10",
    "--batch-size",
    "4",
    "--patch-size",
    "32",
    "--width",
    "8",
    "--depth",
    "2",
    "--lr",
    "3e-3",
    "--device",
    "cpu",
    "--quiet",
]


def test_train_then_predict(files, capsys):
    labels_before = (files / "labels.tif").read_bytes()
    assert (
        main(["train", str(files / "image.tif"), str(files / "labels.tif"), "--out", str(files / "m.pt"), *LEARNS]) == 0
    )
    assert "saved" in capsys.readouterr().out
    out = files / "out"
    out.mkdir()
    for output, dtype in [("labels", np.uint8), ("instances", np.uint32), ("probability", np.float32)]:
        code = main(
            [
                "predict",
                str(files / "m.pt"),
                str(files / "image.tif"),
                "--out",
                str(out / f"{output}.tif"),
                "--output",
                output,
                "--no-separate",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        assert code == 0
        result = tifffile.imread(out / f"{output}.tif")
        assert result.shape == (3, 48, 48) and result.dtype == dtype
    labels, probability = tifffile.imread(out / "labels.tif"), tifffile.imread(out / "probability.tif")
    # The probability map is that of the objects: of any class but the model's background.
    encoding = load_model(files / "m.pt").encoding
    background = encoding.class_values[encoding.background]
    clear = np.abs(probability - 0.5) > 1e-4
    np.testing.assert_array_equal(labels[clear] != background, probability[clear] > 0.5)
    assert (files / "labels.tif").read_bytes() == labels_before  # the inputs are untouched
    separate = out / "separate.tif"
    assert (
        main(
            [
                "predict",
                str(files / "m.pt"),
                str(files / "image.tif"),
                "--out",
                str(separate),
                "--output",
                "instances",
                "--no-link-slices",
                "--quiet",
            ]
        )
        == 0
    )
    slices = tifffile.imread(separate)
    objects = [set(np.unique(plane)) - {0} for plane in slices]
    assert all(objects), "every slice should have objects"
    assert not objects[0] & objects[1] and not objects[1] & objects[2]


def test_resume_and_seed_unet(files):
    model = str(files / "m.pt")
    weighed = [*TINY, "--boundary-weight", "10"]  # the U-Net paper's weight map on
    assert main(["train", str(files / "image.tif"), str(files / "labels.tif"), "--out", model, *weighed]) == 0
    assert (
        main(["train", str(files / "image.tif"), str(files / "labels.tif"), "--out", model, "--resume", model, *TINY])
        == 0
    )
    seed = str(files / "seed.pt")
    args = [
        "--model",
        "seed-unet",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--batch-size",
        "1",
        "--patch-size",
        "140",
        "--width",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(["train", str(files / "image.tif"), str(files / "labels.tif"), "--out", seed, *args]) == 0
    assert main(["predict", seed, str(files / "image.tif"), "--out", str(files / "s.tif"), "--quiet"]) == 0
    assert tifffile.imread(files / "s.tif").shape == (3, 48, 48)


def bad_inputs(folder):
    """(description, files to write, command) for each kind of bad input."""
    image, labels = folder / "image.tif", folder / "labels.tif"
    return {
        "shape mismatch": ({"other.tif": np.zeros((3, 40, 48), np.uint8)}, ["train", image, folder / "other.tif"]),
        "labels all zero": ({"zero.tif": np.zeros((3, 48, 48), np.uint8)}, ["train", image, folder / "zero.tif"]),
        "float labels": ({"float.tif": np.ones((3, 48, 48), np.float32)}, ["train", image, folder / "float.tif"]),
        "NaN pixels": ({"nan.tif": np.full((3, 48, 48), np.nan, np.float32)}, ["train", folder / "nan.tif", labels]),
        "too small": (
            {"small.tif": np.ones((3, 3), np.uint8), "small_l.tif": np.ones((3, 3), np.uint8)},
            ["train", folder / "small.tif", folder / "small_l.tif"],
        ),
        "missing file": ({}, ["train", folder / "missing.tif", labels]),
        "corrupt file": ({"corrupt.tif": b"II*\x00garbage"}, ["train", folder / "corrupt.tif", labels]),
    }


@pytest.mark.parametrize(
    "case",
    ["shape mismatch", "labels all zero", "float labels", "NaN pixels", "too small", "missing file", "corrupt file"],
)
def test_bad_training_input_exits_2_with_one_line(files, capsys, case):
    written, command = bad_inputs(files)[case]
    for name, content in written.items():
        if isinstance(content, bytes):
            (files / name).write_bytes(content)
        else:
            tifffile.imwrite(files / name, content, photometric="minisblack")
    out = files / "model.pt"
    assert main([str(c) for c in command] + ["--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-pix2pix train: error:") and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_bad_model_files_exit_2(files, capsys):
    foreign = files / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    corrupt = files / "corrupt.pt"
    corrupt.write_bytes(b"not a model")
    for model in (foreign, corrupt, files / "absent.pt"):
        out = files / "out.tif"
        assert main(["predict", str(model), str(files / "image.tif"), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "error:" in err and "\n" not in err
        assert not out.exists()


def test_model_of_another_architecture_exits_2(files, capsys):
    model = files / "m.pt"
    assert main(["train", str(files / "image.tif"), str(files / "labels.tif"), "--out", str(model), *TINY]) == 0
    payload = torch.load(model, weights_only=True)
    payload["config"]["architecture"] = "pix2pix"
    payload["config"]["depth"] = 3
    torch.save(payload, model)
    assert main(["predict", str(model), str(files / "image.tif"), "--out", str(files / "o.tif"), "--quiet"]) == 2
    assert "do not match" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--max-minutes" in capsys.readouterr().out


def test_predict_output_follows_the_model_and_takes_cleanup_options(files, tmp_path):
    from conftest import tiny_config

    from napari_pix2pix.io import save_model
    from napari_pix2pix.samples import nuclei_stack
    from napari_pix2pix.training import fit

    image, labels = nuclei_stack()
    model = fit(image[:2, :64, :64], labels[:2, :64, :64], tiny_config(epochs=1))
    save_model(model, tmp_path / "nuclei.pt")
    tifffile.imwrite(tmp_path / "nuclei.tif", image[2, :64, :64])
    out = tmp_path / "predicted.tif"
    args = ["predict", str(tmp_path / "nuclei.pt"), str(tmp_path / "nuclei.tif"), "--out", str(out), "--quiet"]
    assert main([*args, "--tta", "--min-size", "5", "--fill-holes", "10"]) == 0
    assert tifffile.imread(out).dtype == np.uint32  # an instance model predicts instances by default
    assert main([*args, "--min-size", "-3"]) == 2


@pytest.mark.parametrize("out", ["image.tif", "labels.tif", "folder"])
def test_an_output_that_would_replace_an_input_or_is_not_a_file_is_refused(files, capsys, out):
    (files / "folder").mkdir()
    before = {name: (files / name).read_bytes() for name in ("image.tif", "labels.tif")}
    code = main(["train", str(files / "image.tif"), str(files / "labels.tif"), "--out", str(files / out), *TINY])
    assert code == 2 and "--out" in capsys.readouterr().err
    assert before == {name: (files / name).read_bytes() for name in ("image.tif", "labels.tif")}


def test_written_files_keep_the_umask_and_the_mode_of_a_replaced_file(files):
    import os
    import stat

    model = files / "m.pt"
    old = os.umask(0o022)
    try:
        assert main(["train", str(files / "image.tif"), str(files / "labels.tif"), "--out", str(model), *TINY]) == 0
        assert stat.S_IMODE(model.stat().st_mode) == 0o644
        model.chmod(0o640)
        assert main(["train", str(files / "image.tif"), str(files / "labels.tif"), "--out", str(model), *TINY]) == 0
        assert stat.S_IMODE(model.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_bad_values_and_paths_exit_2_with_one_line(files, capsys):
    image, labels = str(files / "image.tif"), str(files / "labels.tif")
    rgb = files / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    assert main(["train", image, labels, "--out", str(files / "m.pt"), *TINY]) == 0
    capsys.readouterr()
    cases = [
        (["train", image, labels, "--out", str(files / "x.pt"), *TINY, "--seed", "-1"], "seed"),
        (["train", image, labels, "--out", str(files / "x.pt"), *TINY, "--boundary-weight", "-1"], "boundary weight"),
        (["train", str(files), labels, "--out", str(files / "x.pt"), *TINY], "is a folder"),
        (["predict", str(files / "m.pt"), str(rgb), "--out", str(files / "x.tif"), "--quiet"], "RGB"),
    ]
    for command, message in cases:
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
