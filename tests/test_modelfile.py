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
