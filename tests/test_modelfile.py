import os
import pickle

import numpy as np
import pytest
import torch

from napari_pix2pix.errors import ModelFileError
from napari_pix2pix.io import load_model, save_model
from napari_pix2pix.prediction import predict


def test_round_trip_predicts_the_same(tiny_model, membranes, tmp_path):
    path = save_model(tiny_model, tmp_path / "model.pt")
    loaded = load_model(path)
    image = membranes[0][:1]
    assert np.array_equal(predict(tiny_model, image, device="cpu"), predict(loaded, image, device="cpu"))
    assert loaded.encoding == tiny_model.encoding
    assert loaded.normalisation == tiny_model.normalisation
    assert len(loaded.history) == len(tiny_model.history) > 0


def test_interrupted_save_keeps_the_old_file(tiny_model, tmp_path, monkeypatch):
    path = save_model(tiny_model, tmp_path / "model.pt")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny_model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left


def test_truncated_file_is_refused(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "model.pt")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model(path)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="not a napari-pix2pix model"):
        load_model(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError):
        load_model(text)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-pix2pix model", "payload": _Exploit()}, path, pickle_module=pickle)
    with pytest.raises(ModelFileError):
        load_model(path)
    assert not (tmp_path / "pwned").exists()


def test_weights_of_another_architecture_are_refused(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["architecture"] = "seed-unet"
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path)


def test_missing_folder_and_file(tiny_model, tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        save_model(tiny_model, tmp_path / "nowhere" / "model.pt")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_edited_and_empty_model_files_are_refused(tiny_model, tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model(empty)
    path = save_model(tiny_model, tmp_path / "m.pt")
    for field, value in [("class_values", [0, 2**70]), ("background", 5)]:
        payload = torch.load(path, weights_only=True)
        payload["encoding"][field] = value
        torch.save(payload, tmp_path / "edited.pt")
        with pytest.raises(ModelFileError):
            load_model(tmp_path / "edited.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["width"] = "wide"
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "edited.pt")


def test_a_flipped_bit_in_the_weights_is_refused(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.pt")
    weights = max(tiny_model.network.state_dict().values(), key=lambda t: t.numel())
    raw = bytearray(path.read_bytes())
    at = raw.find(weights.detach().contiguous().numpy().tobytes())
    assert at > 0
    raw[at + 5] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(format_version=99), "newer napari-pix2pix"),
        (lambda p: p.update(format_version="2"), "not a version number"),
        (lambda p: p["config"].update(width=10**9), "config.width must be from"),
        (lambda p: p["config"].update(depth=True), "config.depth must be a whole number"),
        (lambda p: p["normalisation"].update(low=[float("nan")]), "normalisation.low"),
        (lambda p: p.update(patch_size="big"), "patch_size"),
        (lambda p: p.update(object_size=-3.0), "object_size"),
        (lambda p: p["encoding"].update(class_values=[0]), "class_values"),
        (lambda p: p.update(history="lots"), "history"),
        (lambda p: p["state_dict"].update(extra=torch.zeros(2)), "checksum"),
    ],
)
def test_edited_fields_are_refused_by_name(tiny_model, tmp_path, edit, message):
    path = save_model(tiny_model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match=message) as error:
        load_model(path)
    assert "\n" not in str(error.value)


def test_a_seed_unet_file_with_a_too_small_patch_is_refused(tmp_path):
    from napari_pix2pix.labels.encodings import DenseEncoding
    from napari_pix2pix.models import ModelConfig, Normalisation, build_model
    from napari_pix2pix.models.trained import TrainedModel

    config = ModelConfig("seed-unet", 1, 2, 4, 2)
    model = TrainedModel(config, build_model(config), DenseEncoding((0, 1)), Normalisation((0.0,), (1.0,)), 64)
    path = save_model(model, tmp_path / "seed.pt")
    payload = torch.load(path, weights_only=True)
    payload["patch_size"] = 8
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="too small"):
        load_model(path)


def test_version_1_files_without_a_checksum_still_load(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 1
    del payload["weights_sha256"]
    torch.save(payload, path)
    assert load_model(path).describe() == tiny_model.describe()


def test_the_normalisation_rule_is_stored_and_old_fixed_numbers_still_load(tiny_model, membranes, tmp_path):
    from dataclasses import replace

    from napari_pix2pix.models import Normalisation

    ruled = replace(tiny_model, normalisation=Normalisation((0.1,), (0.9,), per_image=True, lower=2.0, upper=98.0))
    loaded = load_model(save_model(ruled, tmp_path / "rule.pt"))
    assert loaded.normalisation == ruled.normalisation
    numbers = tiny_model.normalisation
    fixed = replace(tiny_model, normalisation=Normalisation(numbers.low, numbers.high))
    path = save_model(fixed, tmp_path / "fixed.pt")  # a model of fixed numbers, as format 2 wrote them
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 2
    torch.save(payload, path)
    old = load_model(path)
    assert not old.normalisation.per_image
    image = membranes[0][:1] * 3.0  # fixed numbers: a brighter image is not rescaled to look alike
    np.testing.assert_array_equal(predict(old, image, device="cpu"), predict(fixed, image, device="cpu"))
