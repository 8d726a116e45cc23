"""The Predict dock widget: apply a trained model to an Image layer and add the result as a layer."""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from magicgui.widgets.bases import CategoricalWidget
from napari.layers import Image, Labels, Layer
from napari.qt.threading import create_worker
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget
from superqt import QCollapsible

from ..errors import Cancelled, InputError
from ..labels.outputs import OUTPUTS, get_output
from ..labels.postprocess import Cleanup
from ..models.trained import TrainedModel
from ..prediction.pipeline import (
    SliceResult,
    convert_probabilities,
    iter_predict,
    output_dtype,
    output_shape,
    predict_keeping_probabilities,
    write_slices,
)
from ..prediction.reading import volume_geometry
from ..prediction.settings import AUTO_SIZE, DEFAULT_OBJECT_SIZE, DEFAULT_TTA, PredictionSettings
from ..prediction.sinks import ArraySink, ZarrSink
from ._autosave import file_name
from ._devices import DEVICE_CHOICES
from ._layers import channel_groups, keep_pickers_in_sync, layer_array, layer_picker, layer_pixel_size, layer_voxel_size
from ._layout import scrolling_layout
from ._models import load_model_dialog, model_store
from ._notify import notify, report_error, run_reporting_failures
from ._workers import WorkerGuard
from .pairs import track_corrections

KEEP_PROBABILITIES_BYTES = 2 * 10**9  # class probabilities kept for "Re-apply" up to this size


def predict_volume(
    model: TrainedModel, image: Any, settings: PredictionSettings, stop: threading.Event, keep: bool, store: str | None
) -> Generator[SliceResult, None, tuple[Any, np.ndarray | None]]:
    """Worker body: yields each finished slice (for the progress bar) and returns (the result, the
    class probabilities it was made from when ``keep``, else None). With ``store`` (a path ending in
    .zarr, for a lazily loaded image) the result is written there and returned as a lazy Zarr array."""
    if keep:
        return (yield from predict_keeping_probabilities(model, image, settings, stop))
    geometry = volume_geometry(image.shape, model)
    output = settings.output_for(model)
    shape, dtype = output_shape(model, output, geometry), output_dtype(model, output)
    sink = (
        ArraySink(shape, dtype, geometry.is_stack)
        if store is None
        else ZarrSink(store, shape, dtype, geometry.is_stack)
    )
    return (yield from write_slices(iter_predict(model, image, settings=settings, stop=stop), sink)), None


def _result_store(name: str, output: str) -> str:
    """A new Zarr store for a lazy image's result, in the user's cache folder."""
    import tempfile

    from platformdirs import user_cache_path

    folder = user_cache_path("napari-pix2pix") / "results"
    folder.mkdir(parents=True, exist_ok=True)
    safe = file_name(f"{name} {output}", "result")
    return str(Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=folder)) / f"{safe}.zarr")


def reconvert(
    model: TrainedModel, probabilities: np.ndarray, settings: PredictionSettings
) -> Generator[None, None, np.ndarray]:
    """Worker body for "Re-apply": the output from kept probabilities, without the network."""
    return convert_probabilities(
        model, probabilities, settings.output_for(model), settings.cleanup, settings.link_slices
    )
    yield  # a generator, so it runs like the other workers


def _model_names(_widget: CategoricalWidget | None = None) -> list[str]:
    return model_store.choices()


class PredictWidget(QWidget):
    """Predict labels, instances or probabilities for an Image layer with a trained model."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self._guard = WorkerGuard(self)
        self._job: tuple[Image, PredictionSettings, str] | None = None
        self._last: dict | None = None  # the last prediction's layer and kept probabilities, for Re-apply

        self._make_settings(viewer)

        self.load_button = QPushButton("Load model…")
        self.run_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.reapply_button = QPushButton("Re-apply post-processing")
        self.reapply_button.setEnabled(False)
        self.reapply_button.setToolTip(
            "Apply the separation, threshold, minimum size and hole filling (advanced settings) to the last "
            "prediction again, from its kept probabilities, without running the network"
        )
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m slices")
        self.status = QLabel(self._idle_text())
        self.status.setWordWrap(True)

        advanced = QCollapsible("Advanced settings")
        advanced.addWidget(self.advanced_controls.native)
        # Predict right under the main choices, so it shows in a short dock; then what is used less.
        layout = scrolling_layout(self)
        layout.addWidget(self.controls.native)
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.load_button)
        layout.addWidget(advanced)
        layout.addWidget(self.reapply_button)
        layout.addStretch()

        self.load_button.clicked.connect(self.load)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.reapply_button.clicked.connect(self.reapply)
        keep_pickers_in_sync(viewer, self.reset_choices)
        # The store outlives this widget: disconnect when Qt deletes it.
        model_store.changed.connect(self._models_changed)
        callback = self._models_changed
        self.destroyed.connect(lambda *_: model_store.changed.disconnect(callback, missing_ok=True))
        self._model_changed(self.model_choice.value)  # the output the model first offered predicts

    def _make_settings(self, viewer: napari.viewer.Viewer) -> None:
        """The settings: the main ones, and the advanced ones shown on demand."""
        self.image_picker = layer_picker(viewer, Image, "Image", groups=True)
        self.model_choice = ComboBox(label="Model", choices=_model_names, nullable=False)
        self.output_choice = ComboBox(
            label="Output", choices=[(kind.label, name) for name, kind in OUTPUTS.items()], value="labels"
        )
        self.link_slices = CheckBox(text="Follow objects from slice to slice (3D instances)", value=True)
        self.separate = CheckBox(text="Separate touching objects (watershed lines)", value=Cleanup().separate)
        self.separate.tooltip = "A faint stretch of membrane still separates two cells (class models)"
        self.tta = CheckBox(text="Test-time augmentation (8× slower)", value=DEFAULT_TTA)
        self.tta.tooltip = "Average the 8 flips and turns of each tile: a little more accurate, 8× the work"
        self.rescale = CheckBox(
            text="Rescale to the object size the model learned", value=DEFAULT_OBJECT_SIZE is not None
        )
        self.rescale.tooltip = (
            "Measure the objects in the image and, when they are more than 25 % larger or smaller than the "
            "training objects, predict on a rescaled copy (off by default: on images of other experiments it "
            "scored lower and took 2.4x the time)"
        )
        self.match_pixel_size = CheckBox(text="Rescale to the model's pixel size (from the layers' scale)", value=True)
        self.match_pixel_size.tooltip = (
            "The model knows its training images' pixel size: an image with other pixels is rescaled to it"
        )
        self.rescale.tooltip = "For images at another magnification than the training images"
        self.controls = Container(
            widgets=[
                self.image_picker,
                self.model_choice,
                self.output_choice,
                self.link_slices,
                self.separate,
                self.rescale,
                self.match_pixel_size,
                self.tta,
            ]
        )
        self.output_choice.changed.connect(self._output_changed)
        self.model_choice.changed.connect(self._model_changed)
        self.match_pixel_size.visible = False  # until a model that knows its pixel size is chosen
        self._output_changed(self.output_choice.value)
        self.object_size = FloatSpinBox(
            label="Object size here (pixels, 0: estimate)", value=0, min=0, max=10_000, step=1
        )
        self.min_size = SpinBox(label="Minimum object size (pixels)", value=0, min=0, max=10**8)
        self.fill_holes = SpinBox(label="Fill holes up to (pixels)", value=0, min=0, max=10**8)
        self.threshold = FloatSpinBox(
            label="Probability threshold", value=Cleanup().threshold, min=0.01, max=0.99, step=0.05
        )
        self.threshold.tooltip = "A pixel is part of an object when its object probability reaches this"
        self.tile_size = SpinBox(label="Tile size (0 = automatic)", value=0, min=0, max=8192, step=16)
        self.overlap = SpinBox(label="Tile overlap (-1 = automatic)", value=-1, min=-1, max=4096, step=8)
        self.batch_size = SpinBox(label="Tiles per batch (0 = automatic)", value=0, min=0, max=256)
        self.device = ComboBox(label="Device", choices=DEVICE_CHOICES, value="auto")
        self.advanced_controls: Container = Container(
            widgets=[
                self.object_size,
                self.min_size,
                self.fill_holes,
                self.threshold,
                self.tile_size,
                self.overlap,
                self.batch_size,
                self.device,
            ]
        )

    def _output_changed(self, value: str) -> None:
        """Show only the options that act on this output with this model."""
        kind = OUTPUTS[value]
        name = self.model_choice.value
        model = model_store.get(name) if name else None
        separable = model.encoding.separable if model is not None else True
        # A 3D model finds its objects in 3D: there are no slices to link.
        self.link_slices.visible = kind.objects and (model is None or model.config.dims == 2)
        self.separate.visible = kind.layer_type == "labels" and separable

    def _model_changed(self, name: str | None) -> None:
        """Offer the output the chosen model's annotation kind is predicted as by default."""
        self.match_pixel_size.visible = name is not None and model_store.get(name).pixel_size is not None
        if name:
            model = model_store.get(name)
            self.output_choice.value = model.encoding.default_output
            if model.config.in_channels > 1:  # offer the channel layers of one file as its input
                for group in channel_groups(self.viewer):
                    if len(group.layers) == model.config.in_channels:
                        self.image_picker.value = group
                        break
            self._output_changed(self.output_choice.value)

    def reset_choices(self, event: napari.utils.events.Event | None = None) -> None:
        self.controls.reset_choices()

    @property
    def running(self) -> bool:
        return self._guard.running

    def _idle_text(self) -> str:
        if model_store.names():
            return "Choose an image and a model, then press Predict."
        if model_store.shipped():
            return (
                f"Choose an image, then press Predict: '{model_store.shipped()[0]}' segments fluorescence nuclei "
                "as it is. For other images, train a model in the Train widget or load a model file."
            )
        return "No model yet: train one in the Train widget, or load a model file (Load model… below)."

    def _models_changed(self) -> None:
        names = model_store.names()
        self.reset_choices()
        if names:
            self.model_choice.value = names[-1]  # the newest model is the likely choice
        if not self.running:
            self.status.setText(self._idle_text())

    def load(self) -> None:
        loaded = load_model_dialog(self)
        if loaded is not None:
            self.status.setText(f"Loaded '{loaded[0]}': {loaded[1].describe()}.")

    def run(self) -> None:
        """Predict in a worker; the result layer is added when it finishes (nothing if cancelled)."""
        if self.running:
            return
        layer = self.image_picker.value
        if layer is None:
            notify("Predict: choose an Image layer to predict on.", warning=True)
            return
        if not self.model_choice.value:
            notify("Predict: there is no model yet. Train one in the Train widget, or load a model file.", warning=True)
            return
        model = model_store.get(self.model_choice.value)
        if layer.rgb and model.config.in_channels == 1:
            notify(
                f"Predict: '{layer.name}' is an RGB image, but the model was trained on single-channel "
                "images. Convert the image to greyscale first, or train a model on RGB images.",
                warning=True,
            )
            return
        try:
            settings = self._settings(layer)
        except InputError as error:
            notify(f"Predict: {error}", warning=True)
            return
        output = settings.output_for(model)
        self._job = (layer, settings, self.model_choice.value)
        data = layer_array(layer)
        size = int(np.prod(data.shape)) * model.encoding.n_classes * 2
        keep = isinstance(data, np.ndarray) and not OUTPUTS[output].channels and size <= KEEP_PROBABILITIES_BYTES
        # A lazily loaded (dask/Zarr) image gets its result in a Zarr store on disk, not in memory.
        store = None if isinstance(data, np.ndarray) else _result_store(layer.name, output)
        stop = self._guard.new_stop_event()
        worker = create_worker(
            run_reporting_failures,
            predict_volume,
            model,
            data,
            settings,
            stop,
            keep,
            store,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._guard.start(worker)
        self.progress.setRange(0, 0)
        self.status.setText(f"Predicting {output} for '{layer.name}'…")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker.start()

    def cancel(self) -> None:
        if self.running:
            self._guard.stop_event.set()
            self.status.setText("Cancelling…")

    def _on_progress(self, part: SliceResult) -> None:
        self.progress.setRange(0, part.total)
        self.progress.setValue(part.done)

    def _settings(self, layer: Image) -> PredictionSettings:
        """The dock's choices as one ``PredictionSettings`` (checked when made)."""
        return PredictionSettings(
            output=self.output_choice.value,
            tta=self.tta.value,
            object_size=(self.object_size.value or AUTO_SIZE) if self.rescale.value else None,
            cleanup=self._cleanup(),
            link_slices=self.link_slices.value,
            pixel_size=layer_pixel_size(layer),
            voxel_size=layer_voxel_size(layer),  # a 3D model rescales a stack of other voxels to its own
            match_pixel_size=self.match_pixel_size.value,
            tile_size=self.tile_size.value or None,
            overlap=None if self.overlap.value < 0 else self.overlap.value,
            batch_size=self.batch_size.value or None,  # 0: the device's default
            device=self.device.value,
        )

    def _cleanup(self) -> Cleanup:
        return Cleanup(
            separate=self.separate.value,
            min_size=self.min_size.value,
            max_hole=self.fill_holes.value,
            threshold=self.threshold.value,
        )

    def reapply(self) -> None:
        """Redo the post-processing of the last prediction from its kept probabilities (no network)."""
        last = self._last
        if self.running or last is None or last["layer"] not in self.viewer.layers:
            notify("Predict: there is no prediction to re-apply; press Predict first.", warning=True)
            return
        model = model_store.get(last["model"])
        worker = create_worker(
            run_reporting_failures,
            reconvert,
            model,
            last["probabilities"],
            replace(last["settings"], cleanup=self._cleanup(), link_slices=self.link_slices.value),
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(self._on_reapplied)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._guard.start(worker)
        self.status.setText(f"Re-applying the post-processing to '{last['layer'].name}'…")
        self.run_button.setEnabled(False)
        self.reapply_button.setEnabled(False)
        worker.start()

    def _on_reapplied(self, result: np.ndarray) -> None:
        assert self._last is not None
        self._last["layer"].data = result
        self.status.setText(
            f"Re-applied to '{self._last['layer'].name}': threshold {self.threshold.value:g}, minimum size "
            f"{self.min_size.value}, holes up to {self.fill_holes.value}."
        )

    def _on_result(self, payload: tuple[np.ndarray, np.ndarray | None]) -> None:
        assert self._job is not None, "a result comes only from a started job"
        result, probabilities = payload
        layer, settings, model_name = self._job
        output = settings.output_for(model_store.get(model_name))
        name = f"{layer.name} predicted {output}"
        kind = get_output(output)
        options = dict(
            name=name,
            scale=layer.scale[: layer.ndim],
            translate=layer.translate[: layer.ndim],
            metadata={"napari-pix2pix model": model_name},
            **kind.layer_options,
        )
        if kind.channels:  # one layer per class
            channels = {k: v for k, v in options.items() if k not in ("name", "blending")}
            names = [f"{name} {value}" for value in model_store.get(model_name).encoding.class_values]
            added = self.viewer.add_image(result, channel_axis=-3, name=names, **channels)[0]
        else:
            added = self.viewer.add_layer(Layer.create(result, options, kind.layer_type))
        self._last = None
        if probabilities is not None:
            self._last = dict(layer=added, probabilities=probabilities, settings=settings, model=model_name)
        if isinstance(added, Labels):
            track_corrections(added)  # correct slices with the brush, then train on them (Train: Add pair)
        if not isinstance(result, np.ndarray):
            where = getattr(getattr(result, "store_path", None), "store", None)
            self.status.setText(
                f"Added '{name}', kept on disk in {getattr(where, 'root', 'a Zarr store')} "
                "(the image is loaded lazily, so its result is too; save the layer to keep it elsewhere)."
            )
            return
        self.status.setText(
            f"Added '{name}' ({' × '.join(map(str, result.shape))}). To improve the model, correct a few slices "
            "with the brush, then add it as a training pair in Train and continue training."
            if isinstance(added, Labels)
            else f"Added '{name}' ({' × '.join(map(str, result.shape))})."
        )

    def _on_error(self, error: Exception) -> None:
        if isinstance(error, Cancelled):
            self.status.setText("Prediction cancelled; no layer was added.")
        else:
            report_error(error, "Prediction")
            self.status.setText("Prediction failed; see the notification.")

    def _on_finished(self) -> None:
        self._guard.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.reapply_button.setEnabled(self._last is not None)
