"""Edited or damaged bioimage.io packages go through the same schema and limits as model files: a
correct model or one line naming the problem; nothing is built from an absurd field, no code runs."""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_pix2pix.errors import ModelFileError
from napari_pix2pix.io import load_model

pytest.importorskip("bioimageio.spec")


@pytest.fixture(scope="module")
def package(tmp_path_factory, tiny_model, membranes) -> Path:
    from napari_pix2pix.bioimageio import export

    path = tmp_path_factory.mktemp("package") / "m.zip"
    export(tiny_model, path, membranes[0][0])
    return path


def edited(package: Path, folder: Path, change_rdf=None, weights: bytes | None = None) -> Path:
    """A copy of ``package`` with its description changed by ``change_rdf(description)`` and/or its
    state-dict weights replaced by ``weights``."""
    out = folder / f"edited-{len(list(folder.iterdir()))}.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(out, "w") as target:
        description = yaml.safe_load(source.read("rdf.yaml"))
        weights_name = description["weights"]["pytorch_state_dict"]["source"]
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "rdf.yaml" and change_rdf is not None:
                change_rdf(description)
                data = yaml.safe_dump(description).encode()
            elif item.filename == weights_name and weights is not None:
                data = weights
            target.writestr(item, data)
    return out


def own(description: dict) -> dict:
    return description["config"]["napari_pix2pix"]


def set_field(path: tuple, value):
    def change(description: dict) -> None:
        node = own(description)
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def test_an_unedited_package_loads(package):
    assert load_model(package).config.depth == 2


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("config", "depth"), 40, "config.depth must be from 1 to 10"),  # once allocated 24 GB
        (("config", "width"), 1100, "config.width must be from 1 to 1024"),
        (("config", "depth"), "4", "config.depth must be a whole number"),
        (("normalisation", "low"), [math.nan], "normalisation.low must be a finite number"),
        (("normalisation", "high"), [0.0], "normalisation.high must be above normalisation.low"),
        (("pixel_size",), [0.0, 0.5], "pixel_size must be positive"),
        (("pixel_size",), "0.5 um", "pixel_size must be two numbers"),
        (("encoding", "kind"), "magic", "encoding.kind must be one of"),
        (("patch_size",), 1, "patch_size must be from"),
    ],
)
def test_an_edited_field_is_refused_in_one_line(package, tmp_path, path, value, message):
    with pytest.raises(ModelFileError, match=message) as error:
        load_model(edited(package, tmp_path, set_field(path, value)))
    assert "\n" not in str(error.value)


class Payload:
    def __reduce__(self):  # what a malicious pickle does: call something on load
        return (os.system, ("echo pwned > pwned.txt",))


def test_weights_that_carry_code_are_refused_without_running_it(package, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError) as error:
        load_model(edited(package, tmp_path, weights=pickle.dumps({"w": Payload()})))
    assert "hold code, which is refused" in str(error.value) and "weights_only" not in str(error.value)
    assert not (tmp_path / "pwned.txt").exists()


def test_weights_of_the_wrong_shape_or_type_are_one_line(package, tmp_path):
    buffer = io.BytesIO()
    torch.save({"network.not_a_layer": torch.zeros(3)}, buffer)
    with pytest.raises(ModelFileError, match="do not match its architecture"):
        load_model(edited(package, tmp_path, weights=buffer.getvalue()))
    buffer = io.BytesIO()
    torch.save({"network.x": [1, 2]}, buffer)
    with pytest.raises(ModelFileError, match="must map names to tensors"):
        load_model(edited(package, tmp_path, weights=buffer.getvalue()))


FIELDS = [
    ("config", "architecture"),
    ("config", "in_channels"),
    ("config", "out_channels"),
    ("config", "width"),
    ("config", "depth"),
    ("encoding", "kind"),
    ("encoding", "class_values"),
    ("encoding", "background"),
    ("normalisation", "low"),
    ("normalisation", "high"),
    ("normalisation", "per_image"),
    ("patch_size",),
    ("object_size",),
    ("pixel_size",),
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
    st.lists(st.integers(-5, 5), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_any_edit_of_a_field_gives_a_model_or_one_line(package, tmp_path, field, value):
    path = edited(package, tmp_path, set_field(field, value))
    try:
        model = load_model(path)
    except ModelFileError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    finally:
        path.unlink()
    with torch.no_grad():  # a model that loads works: finite class probabilities for a small tile
        probabilities = model.network(torch.zeros(1, model.config.in_channels, 32, 32)).softmax(1)
    assert np.isfinite(probabilities.numpy()).all()
