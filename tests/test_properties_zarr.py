"""Property tests of the OME-Zarr reader (hypothesis): for any shape, axes and chunking, with chunks
intact, missing or damaged, reading an image gives exactly the stored values in the engine's axis
order, or one ``InputError`` line; the store is never changed and nothing is left beside it."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_pix2pix.errors import InputError
from napari_pix2pix.io import read_image

common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
AXES = {  # NGFF axis names of a layout, and the order the engine sees: (z,) y, x, then channels
    "yx": ("yx", (0, 1)),
    "zyx": ("zyx", (0, 1, 2)),
    "cyx": ("cyx", (1, 2, 0)),
    "czyx": ("czyx", (1, 2, 3, 0)),
    "tczyx": ("tczyx", (2, 3, 4, 1, 0)),
}


def write_store(folder: Path, data: np.ndarray, axes: str, chunks: tuple[int, ...]) -> Path:
    path = folder / "image.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array(
        "0", shape=data.shape, chunks=chunks, dtype=data.dtype, fill_value=0, config={"write_empty_chunks": True}
    )
    array[...] = data
    kinds = {"t": "time", "c": "channel"}
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": a, "type": kinds.get(a, "space")} for a in axes],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}]}],
        }
    ]
    return path


def digest(folder: Path) -> dict[str, str]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def engine_view(data: np.ndarray, axes: str, order: tuple[int, ...]) -> np.ndarray:
    """``data`` as the engine reads it: (z,) y, x, channels last, time and channel axes of one dropped."""
    names = [axes[i] for i in order]
    view = np.transpose(data, order)
    drop = tuple(i for i, (name, n) in enumerate(zip(names, view.shape)) if name in "tc" and n == 1)
    return view.squeeze(drop) if drop else view


@st.composite
def stores(draw):
    layout = draw(st.sampled_from(sorted(AXES)))
    axes, _ = AXES[layout]
    sizes = {"t": draw(st.integers(1, 2)), "c": draw(st.integers(1, 3)), "z": draw(st.integers(1, 4))}
    shape = tuple(sizes[a] if a in sizes else draw(st.integers(1, 12)) for a in axes)
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32]))
    seed = draw(st.integers(0, 2**16))
    data = (np.random.default_rng(seed).random(shape) * 200).astype(dtype)
    damage = draw(st.sampled_from(["none", "missing", "truncated", "garbage"]))
    return layout, data, chunks, damage


@settings(max_examples=400 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 40, **common)
@given(case=stores())
def test_reading_any_store_gives_its_values_or_one_line(case):
    layout, data, chunks, damage = case
    axes, order = AXES[layout]
    with tempfile.TemporaryDirectory() as folder:
        path = write_store(Path(folder), data, axes, chunks)
        chunk_files = sorted(p for p in (path / "0").iterdir() if not p.name.startswith("."))
        if damage != "none":
            victim = chunk_files[len(chunk_files) // 2]
            if damage == "missing":
                victim.unlink()
            elif damage == "truncated":
                victim.write_bytes(victim.read_bytes()[:-3])
            else:
                victim.write_bytes(os.urandom(len(victim.read_bytes())))
        before = digest(Path(folder))
        try:
            image, _ = read_image(path)
            values = np.asarray(image[...])
        except InputError as error:
            assert "\n" not in str(error)
            expected_refusal = damage != "none" or (axes[0] == "t" and data.shape[0] > 1)
            assert expected_refusal, f"refused an intact store: {error}"
        else:
            assert damage == "none", f"a {damage} chunk was read without a word"
            np.testing.assert_array_equal(values, engine_view(data, axes, order))
        assert digest(Path(folder)) == before  # read-only: nothing changed or added
