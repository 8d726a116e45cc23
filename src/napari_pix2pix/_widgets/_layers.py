"""Layer pickers for the widgets: drop-downs of the viewer's layers, kept in sync with its layer
list, and channel groups (the channel layers opened from one file, used as one image)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox
from magicgui.widgets.bases import CategoricalWidget
from napari.layers import Layer


def layer_picker(viewer: napari.Viewer, layer_type: type[Layer], label: str, groups: bool = False) -> ComboBox:
    """A drop-down of the viewer's layers of ``layer_type`` (and, with ``groups``, of the channel
    layers opened from one file, as one image), refreshed by ``reset_choices``."""

    def choices(_widget: CategoricalWidget | None = None) -> list[tuple[str, Layer | ChannelGroup]]:
        layers = [(layer.name, layer) for layer in viewer.layers if isinstance(layer, layer_type)]
        return layers + ([(group.name, group) for group in channel_groups(viewer)] if groups else [])

    return ComboBox(label=label, choices=choices, nullable=False)


class ChannelGroup:
    """The Image layers napari made from the channels of one file (``channel_axis``), used together
    as one multi-channel image, channels last, in the layer list's order."""

    rgb = False

    def __init__(self, layers: list[napari.layers.Image], name: str) -> None:
        self.layers, self.name = layers, name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelGroup) and all(a is b for a, b in zip(self.layers, other.layers))

    def __hash__(self) -> int:
        return hash(tuple(id(layer) for layer in self.layers))

    @property
    def data(self) -> Any:  # a numpy array, or a dask array when a channel is lazy
        arrays = [layer_array(layer) for layer in self.layers]
        if all(isinstance(a, np.ndarray) for a in arrays):
            return np.stack(arrays, axis=-1)
        import dask.array as da

        return da.stack([da.asarray(a) for a in arrays], axis=-1)

    @property
    def scale(self) -> np.ndarray:
        return self.layers[0].scale

    @property
    def translate(self) -> np.ndarray:
        return self.layers[0].translate

    @property
    def ndim(self) -> int:
        return self.layers[0].ndim

    @property
    def multiscale(self) -> bool:
        return False


def channel_groups(viewer: napari.Viewer) -> list[ChannelGroup]:
    """Groups of two or more Image layers opened from the same file, with the same shape."""
    from napari.layers import Image

    by_file: dict[tuple, list] = {}
    for layer in viewer.layers:
        path = getattr(layer.source, "path", None)
        if isinstance(layer, Image) and path and not layer.rgb:
            by_file.setdefault((path, tuple(layer.data.shape)), []).append(layer)
    return [
        ChannelGroup(layers, f"{Path(path).stem} ({len(layers)} channels)")
        for (path, _), layers in by_file.items()
        if len(layers) > 1
    ]


def keep_pickers_in_sync(viewer: napari.Viewer, reset_choices: Callable[..., None]) -> None:
    """Refresh the pickers when layers are added, removed, reordered or renamed."""
    for name in ("inserted", "removed", "reordered"):
        getattr(viewer.layers.events, name).connect(reset_choices)

    def watch_renames(event: napari.utils.events.Event | None = None) -> None:
        for layer in viewer.layers:
            layer.events.name.connect(reset_choices)

    viewer.layers.events.inserted.connect(watch_renames)
    watch_renames()


def layer_pixel_size(layer: Layer | ChannelGroup) -> tuple[float, float] | None:
    """The (y, x) pixel size napari shows a layer at (its scale), or None for napari's default 1 × 1."""
    y, x = (float(v) for v in layer.scale[-2:])
    return None if (y, x) == (1.0, 1.0) else (y, x)


def layer_voxel_size(layer: Layer | ChannelGroup) -> tuple[float, float, float] | None:
    """The (z, y, x) voxel size napari shows a stack at (its scale), or None for a 2D layer or
    napari's default 1 × 1 × 1."""
    scale = [float(v) for v in layer.scale]
    spatial = scale[:-1] if getattr(layer, "rgb", False) else scale
    if len(spatial) < 3 or spatial[-3:] == [1.0, 1.0, 1.0]:
        return None
    z, y, x = spatial[-3:]
    return z, y, x


def layer_array(layer: Layer | ChannelGroup) -> np.ndarray:
    """The layer's data at full resolution, without loading a lazy (dask) array."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data
