"""Property-based tests over the public API and the command line (hypothesis).

The property, for any shape, dtype, value range or option value: either a correct result, or an
``InputError`` (exit status 2 on the command line) with a one-line message; never another
exception, a hang, NaNs in a saved model, or a changed input.

The default profile keeps this to well under a minute on two cores; ``HYPOTHESIS_PROFILE=long``
runs many more examples locally.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_pix2pix.cli import main
from napari_pix2pix.errors import InputError
from napari_pix2pix.io import load_model, save_model
from napari_pix2pix.labels.encodings import DenseEncoding
from napari_pix2pix.models import ModelConfig, Normalisation, build_model
from napari_pix2pix.models.trained import TrainedModel
from napari_pix2pix.prediction import predict
from napari_pix2pix.training import TrainingConfig, fit

common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=25, **common)
settings.register_profile("long", max_examples=400, **common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = [
    np.bool_,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
]


def grey_model() -> TrainedModel:
    torch.manual_seed(0)
    config = ModelConfig("unet", 1, 2, 4, 2)
    return TrainedModel(config, build_model(config).eval(), DenseEncoding((0, 1)), Normalisation((0.0,), (1.0,)), 32)


MODEL = grey_model()


@st.composite
def arrays(draw, max_dims: int = 5, max_side: int = 24):
    """Arrays of 0–5 dimensions (zero-size and one-pixel sides included) of every kind of dtype,
    with extreme values (the dtype's limits, inf, nan) among ordinary ones."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))
    elements = None
    if dtype.kind == "f":
        elements = st.floats(width=dtype.itemsize * 8, allow_nan=True, allow_infinity=True)
    elif dtype.kind == "c":
        elements = st.complex_numbers(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    return draw(hnp.arrays(dtype, shape, elements=elements))


def assert_one_line(error: BaseException) -> None:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text


@given(image=arrays())
def test_predict_gives_labels_of_the_image_shape_or_one_line_input_error(image):
    before = image.copy()
    try:
        result = predict(MODEL, image, device="cpu")
    except InputError as error:
        assert_one_line(error)
    else:
        spatial = image.shape if image.ndim in (2, 3) else image.shape[:-1]
        assert result.shape == spatial and set(np.unique(result)) <= {0, 1}
    np.testing.assert_array_equal(image, before)


@st.composite
def training_pairs(draw):
    """An image and labels that match (most of the time) or not, in every dtype and value range."""
    image = draw(arrays(max_dims=4, max_side=40))
    if draw(st.booleans()):
        return image, draw(arrays(max_dims=4, max_side=40))
    shape = image.shape[:-1] if image.ndim == 4 or (image.ndim == 3 and draw(st.booleans())) else image.shape
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    values = [0, 1, 2, 255]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [v for v in (0, 1, 2, 255, info.max, info.min, -1) if info.min <= v <= info.max]
    elif dtype.kind == "b":
        values = [False, True]
    elements = st.sampled_from(values) if dtype.kind in "iub" else None
    return image, draw(hnp.arrays(dtype, shape, elements=elements))


@given(pair=training_pairs(), seed=st.integers(-5, 2**33))
def test_fit_gives_a_finite_model_or_one_line_input_error(pair, seed):
    image, labels = pair
    config = TrainingConfig(
        epochs=1, steps_per_epoch=1, batch_size=1, patch_size=16, width=2, depth=2, max_minutes=None, device="cpu"
    )
    config.seed = seed
    image_before, labels_before = image.copy(), labels.copy()
    try:
        model = fit(image, labels, config)
    except InputError as error:
        assert_one_line(error)
    else:
        assert all(torch.isfinite(p).all() for p in model.network.parameters())
        assert all(np.isfinite(model.normalisation.low)) and all(np.isfinite(model.normalisation.high))
        if model.encoding.kind != "instances":  # instance models predict ids of their own
            assert set(model.encoding.class_values) <= set(np.unique(labels).tolist()) | {0}
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(labels, labels_before)


OPTION_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-1", "1", "nan", "inf", "auto", "none", "", "1e309", "x", "16"]),
)
PREDICT_OPTIONS = ["--batch-size", "--tile-size", "--overlap", "--object-size", "--min-size", "--fill-holes"]


@contextlib.contextmanager
def quiet_folder():
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stderr(io.StringIO()) as err:
        yield Path(folder), err


@given(image=arrays(max_dims=4, max_side=20), option=st.sampled_from(PREDICT_OPTIONS), value=OPTION_VALUES)
def test_cli_predict_exits_0_or_2_with_one_line(image, option, value):
    with quiet_folder() as (folder, err):
        save_model(MODEL, folder / "m.pt")
        try:
            tifffile.imwrite(folder / "in.tif", image)
        except Exception:  # tifffile cannot store every dtype or shape: not this program's concern
            return
        try:
            status = main(["predict", "m.pt", str(folder / "in.tif"), "--out", str(folder / "out.tif"), "--quiet",
                           "--device", "cpu", option, value])  # fmt: skip
        except SystemExit as exit:  # argparse refusing the option value
            status = exit.code
        lines = err.getvalue().strip().splitlines()
        assert status in (0, 2), err.getvalue()
        if status == 2:
            assert "Traceback" not in err.getvalue() and lines and "error" in lines[-1]
            assert not (folder / "out.tif").exists()
        else:
            assert tifffile.imread(folder / "out.tif").size > 0


FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(-(2**70), 2**70), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = [
    ("format_version",),
    ("patch_size",),
    ("object_size",),
    ("history",),
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
    ("state_dict",),
]


@settings(max_examples=40)
@given(field=st.sampled_from(FIELDS), value=FIELD_VALUES)
def test_an_edited_model_file_loads_or_is_refused_in_one_line(field, value):
    from napari_pix2pix.errors import ModelFileError

    with tempfile.TemporaryDirectory() as folder:
        path = save_model(MODEL, Path(folder) / "m.pt")
        payload = torch.load(path, weights_only=True)
        target = payload
        for key in field[:-1]:
            target = target[key]
        target[field[-1]] = value
        torch.save(payload, path)
        try:
            model = load_model(path)
        except ModelFileError as error:
            assert_one_line(error)
        else:  # an edit that makes sense (e.g. a new object size) loads and predicts
            assert predict(model, np.zeros((32, 32), np.float32), device="cpu").shape == (32, 32)


@pytest.mark.parametrize("dtype", [np.uint64, np.int64, np.float64, np.float16, np.bool_])
def test_label_values_at_the_limits_of_their_dtype(dtype):
    """Regression examples kept from the property runs: labels at the extremes of their dtype."""
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    labels = np.zeros((32, 32), dtype)
    if info is not None:
        labels[:16] = info.max
        if info.min < 0:
            labels[16:20] = info.min
    else:
        labels[:16] = 1
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    config = TrainingConfig(
        epochs=1, steps_per_epoch=1, batch_size=1, patch_size=16, width=2, depth=2, max_minutes=None
    )
    config.device = "cpu"
    try:
        model = fit(image, labels, config)
    except InputError as error:
        assert_one_line(error)
    else:
        values = set(np.unique(predict(model, image, device="cpu")).tolist())
        assert values <= set(np.unique(labels).tolist())
