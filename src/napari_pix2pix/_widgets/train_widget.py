"""The Train dock widget: pick an image and its labels, start training in a worker, watch it learn."""

from __future__ import annotations

from collections.abc import Generator

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox
from magicgui.widgets.bases import CategoricalWidget
from napari.layers import Image, Labels
from napari.qt.threading import GeneratorWorker, create_worker
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QWidget,
)
from superqt import QCollapsible

from ..checks import common_pixel_size, common_voxel_size
from ..errors import InputError
from ..io import save_model
from ..labels.encodings import ANNOTATION_CHOICES, AUTO, ENCODINGS
from ..models.networks import ARCHITECTURES
from ..models.trained import TrainedModel
from ..training.config import TrainingConfig
from ..training.events import EventKind, TrainingEvent
from ..training.loop import Trainer
from ._autosave import autosave
from ._dims import DimsHint
from ._layers import keep_pickers_in_sync, layer_array, layer_picker, layer_pixel_size, layer_voxel_size
from ._layout import scrolling_layout
from ._models import load_model_dialog, model_store
from ._notify import notify, report_error, run_reporting_failures
from ._workers import WorkerGuard
from .loss_plot import LossPlot
from .pairs import TrainingPairs
from .preview import LivePreview, PreviewPicture
from .train_settings import AdvancedTrainingSettings

_PROGRESS_STEPS = 1000  # the progress bar counts thousandths of the run (its time budget or its epochs)


def _annotation_label(choice: str) -> str:
    return ENCODINGS[choice].label if choice in ENCODINGS else "Automatic"


NEW_MODEL = ""  # the Start from choice of a new model (not None: a ComboBox does not report a change to None)


def _start_choices(_widget: CategoricalWidget | None = None) -> list[tuple[str, str]]:
    return [
        ("A new model", NEW_MODEL),
        *((f"Continue '{name}'", name) for name in model_store.names()),
        *((f"Fine-tune '{name}'", name) for name in model_store.shipped()),
    ]


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _prepare_torch() -> None:
    """Import what training's first optimiser would import (torch's compiler stack, ≈ 0.3–1.5 s of
    module loading that holds the interpreter): here, when the dock opens, not when Start is pressed."""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


class TrainWidget(QWidget):
    """Train a U-Net, the seed U-Net or pix2pix on an Image layer annotated by a Labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        _prepare_torch()
        self.viewer = viewer
        self.model: TrainedModel | None = None
        self._training_layer = None
        self._unsaved = False  # a model trained here and not saved yet: kept if napari closes
        self._trainer: Trainer | None = None  # the run in progress (set by the worker)
        self._guard = WorkerGuard(self, on_close=self._keep_unsaved_model)

        self._make_settings(viewer)
        self.pairs = TrainingPairs(viewer, lambda: (self.image_picker.value, self.labels_picker.value))
        self.pairs.add_button.clicked.disconnect()
        self.pairs.add_button.clicked.connect(self._add_pair)
        self._step_offset = 0  # a continued model's steps so far, so its loss plot goes on

        self.start_button = QPushButton("Start training")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Stop after the current step and keep the model trained so far")
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        self.status = QLabel("Choose an image and its labels, then start training.")
        self.status.setWordWrap(True)
        self.plot = LossPlot()
        self.preview = PreviewPicture(
            "Live preview: while training, the network's labels for the slice you are viewing appear here"
        )
        self.live = LivePreview(viewer, self.preview)
        self.live_preview.changed.connect(self._show_or_hide_preview)
        self.save_button = QPushButton("Save model…")
        self.save_button.setEnabled(False)
        self.load_button = QPushButton("Load model…")
        self.export_button = QPushButton("Export to bioimage.io…")
        self.export_button.setEnabled(False)
        self.export_button.setToolTip(
            "Write the model as a bioimage.io package (.zip) for ilastik, deepImageJ, QuPath or Fiji; "
            "a tile of the training image is its test input"
        )

        advanced = QCollapsible("Advanced settings")
        advanced.addWidget(self.advanced.native)
        layout = scrolling_layout(self)
        layout.addWidget(self.controls.native)
        layout.addWidget(self.pairs)
        layout.addWidget(advanced)
        layout.addLayout(_row(self.start_button, self.stop_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addWidget(self.preview)
        layout.addLayout(_row(self.save_button, self.load_button))
        layout.addWidget(self.export_button)
        layout.addStretch()

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self.save)
        self.load_button.clicked.connect(self.load)
        self.export_button.clicked.connect(self.export)
        keep_pickers_in_sync(viewer, self.reset_choices)

    def _make_settings(self, viewer: napari.viewer.Viewer) -> None:
        """The settings: the main ones, and the advanced ones shown on demand."""
        defaults = TrainingConfig()
        self.image_picker = layer_picker(viewer, Image, "Image")
        self.labels_picker = layer_picker(viewer, Labels, "Labels")
        self.start_from = ComboBox(label="Start from", choices=_start_choices, nullable=False)
        self.start_from.tooltip = (
            "Continue a trained or loaded model (same network and classes; its history goes on), "
            "e.g. after correcting a prediction; or fine-tune a model that ships with the plugin on your "
            "annotations (it keeps its network, classes, intensity scaling and object size, and its weights "
            "end halfway between its own and the fine-tuned ones, so it forgets less of what it knew)"
        )
        self.model_choice = ComboBox(
            label="Model", choices=[(spec.label, name) for name, spec in ARCHITECTURES.items()], value=defaults.model
        )
        self.annotation_choice = ComboBox(
            label="Annotation", choices=[(_annotation_label(c), c) for c in ANNOTATION_CHOICES], value=AUTO
        )
        self.epochs = SpinBox(label="Epochs (0: until the time budget)", value=defaults.epochs or 0, min=0, max=100_000)
        self.epochs.tooltip = "Train until the time budget, or stop earlier after this many epochs"
        self.max_minutes = FloatSpinBox(
            label="Time budget (min)", value=defaults.max_minutes or 10.0, min=0.1, max=10_000, step=1
        )
        self.dims_choice = ComboBox(
            label="Network",
            choices=[("Automatic", "auto"), ("2D (slice by slice)", "2d"), ("3D (volume)", "3d")],
            value="auto",
        )
        self.dims_choice.tooltip = (
            "Train on slices (2D) or on the stack as a volume (3D U-Net). Automatic: 3D for a stack of 8 or more "
            "slices whose voxel size (the layer's scale) puts its slices at most 4× the pixel size apart"
        )
        self.live_preview = CheckBox(text="Live preview on the current slice", value=True)
        self.live_preview.tooltip = (
            "While training, show below the network's labels for the slice the viewer shows (in this panel, "
            "so napari's canvas is not redrawn)"
        )
        self.advanced = AdvancedTrainingSettings(defaults)
        self.dims_hint = DimsHint(self.dims_choice, self.image_picker, self.labels_picker, self.advanced.binning)
        self.controls = Container(
            widgets=[
                self.image_picker,
                self.labels_picker,
                self.start_from,
                self.model_choice,
                self.dims_choice,
                self.dims_hint,
                self.annotation_choice,
                self.epochs,
                self.max_minutes,
                self.live_preview,
            ]
        )
        self.model_choice.changed.connect(self._model_defaults)
        self.start_from.changed.connect(self._start_from_changed)
        # The store outlives this widget: disconnect when Qt deletes it.
        model_store.changed.connect(self.reset_choices)
        callback = self.reset_choices
        self.destroyed.connect(lambda *_: model_store.changed.disconnect(callback, missing_ok=True))

    # ------------------------------------------------------------------ napari hooks

    def reset_choices(self, event: napari.utils.events.Event | None = None) -> None:
        self.controls.reset_choices()
        self.dims_hint.update()

    @property
    def running(self) -> bool:
        return self._guard.running

    @property
    def worker(self) -> GeneratorWorker | None:
        """The training or saving worker of the current run (None before the first)."""
        return self._guard.worker

    @property
    def stop_requested(self) -> bool:
        """Whether the current run was asked to stop (Stop, or the dock or napari closing)."""
        return self._guard.stop_event.is_set()

    # ------------------------------------------------------------------ actions

    def config(self) -> TrainingConfig:
        """The settings shown in the widget."""
        return TrainingConfig(
            model=self.model_choice.value,
            annotation=self.annotation_choice.value,
            epochs=self.epochs.value or None,
            max_minutes=self.max_minutes.value,
            dims=self.dims_choice.value,
            **self.advanced.fields(),
        )

    def start(self) -> None:
        """Start training in a worker thread; problems are reported as notifications."""
        if self.running:
            return
        chosen = self.pairs.chosen()
        if not chosen and self.image_picker.value is None:
            notify("Train: choose an Image layer to train on (File > Open, or File > Open Sample).", warning=True)
            return
        if not chosen:
            notify("Train: add a Labels layer and paint some annotations (Layers > New Labels Layer).", warning=True)
            return
        try:
            base, fine_tune = self._base_model()
            config = self.config()
            config.check()
            # Copies of the labels: the user may keep painting while the worker reads them.
            pairs = self.pairs.arrays()
            # The layers' scale, stored in the model (a notification when the images' scales differ).
            config.pixel_size = common_pixel_size([layer_pixel_size(image) for image, _ in chosen])
            config.voxel_size = common_voxel_size([layer_voxel_size(image) for image, _ in chosen])
        except InputError as error:
            report_error(error, "Train")
            return
        self._training_layer = chosen[0][0]
        self.live.start(self._training_layer)
        resume = None if fine_tune else base  # a continued model's history goes on; a fine-tuned one's starts afresh
        self._step_offset = int(resume.history[-1].get("step", 0)) if resume is not None and resume.history else 0
        stop = self._guard.new_stop_event()
        preview_source = self.live.source if self.live_preview.value else None

        def training() -> Generator[TrainingEvent, None, TrainedModel]:  # in the worker: preparing the data is work too
            self._trainer = Trainer(
                pairs, config, stop=stop, preview_source=preview_source,
                resume=resume, start_from=base if fine_tune else None,
            )  # fmt: skip
            return (yield from self._trainer.run())

        worker = create_worker(run_reporting_failures, training, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_trained)
        worker.errored.connect(lambda error: report_error(error, "Training"))
        worker.finished.connect(self._on_finished)
        self._guard.start(worker)
        self.plot.clear()
        for record in resume.history if resume is not None else []:  # a continued model's curve goes on
            self.plot.add_point("training loss", record.get("step", 0), record.get("loss"))
            self.plot.add_point("validation loss", record.get("step", 0), record.get("val_loss"))
            self.plot.add_point("validation Dice", record.get("step", 0), record.get("val_dice"))
        self.progress.setRange(0, _PROGRESS_STEPS)
        self.progress.setValue(0)
        self.status.setText("Preparing the data…")
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        worker.start()

    def stop(self) -> None:
        """Ask training to stop after the current step; the model trained so far is kept."""
        if self.running:
            self._guard.stop_event.set()
            self.status.setText("Stopping after the current step…")

    def save(self) -> None:
        if self.model is None:
            notify("Train: there is no model to save yet; train or load one first.", warning=True)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save model", "model.pt", "napari-pix2pix model (*.pt)")
        if not path:
            return
        try:
            save_model(self.model, path)
        except (InputError, OSError) as error:
            report_error(error, "Saving the model")
            return
        self._unsaved = False
        notify(f"Model saved to {path}")

    def export(self) -> None:
        """Export the model as a bioimage.io package, a tile of the training (or chosen) image as its test."""
        layer = self._training_layer if self._training_layer in self.viewer.layers else self.image_picker.value
        if self.model is None or layer is None:
            notify("Train: train or load a model, and open an image for its test tile, before exporting.", warning=True)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export to bioimage.io", "model.zip", "bioimage.io package (*.zip)")
        if not path:
            return
        from ..bioimageio import export

        try:
            export(self.model, path, np.asarray(layer_array(layer)), name=f"{layer.name} {self.model.architecture}")
        except (InputError, OSError) as error:
            report_error(error, "Exporting the model")
            return
        notify(f"Model exported to {path} (bioimage.io package)")

    def load(self) -> None:
        loaded = load_model_dialog(self)
        if loaded is not None:
            name, self.model = loaded
            self.save_button.setEnabled(True)
            self.export_button.setEnabled(True)
            self.status.setText(f"Loaded '{name}': {self.model.describe()}. It is available in Predict.")

    # ------------------------------------------------------------------ worker events

    def _on_event(self, event: TrainingEvent) -> None:
        self.progress.setValue(round(event.progress * _PROGRESS_STEPS))
        if event.kind == EventKind.START:
            self.status.setText(f"Device: {event.device}. {event.message[0].upper()}{event.message[1:]}.")
        elif event.kind == EventKind.STEP:
            epochs = f"/{event.epochs}" if event.epochs else ""
            self.status.setText(
                f"Epoch {event.epoch}{epochs} · step {event.step} · {_minutes(event.remaining)} left · "
                f"device: {event.device}"
            )
            step = self._step_offset + event.step
            self.plot.add_point("training loss", step, event.loss if event.generator_loss is None else None)
            self.plot.add_point("generator loss", step, event.generator_loss)
            self.plot.add_point("discriminator loss", step, event.discriminator_loss)
        elif event.kind == EventKind.EPOCH:
            self.plot.add_point("validation loss", self._step_offset + event.step, event.val_loss)
            self.plot.add_point("validation Dice", self._step_offset + event.step, event.val_dice)
        elif event.kind == EventKind.PREVIEW and event.preview is not None:
            self.live.show(event.preview, event.epoch)
        elif event.kind == EventKind.FINISHED:
            self.status.setText(f"{event.message[0].upper()}{event.message[1:]} (device: {event.device}).")

    def _on_trained(self, model: TrainedModel) -> None:
        self.model, self._trainer, self._unsaved = model, None, True
        layer = self._training_layer
        name = model_store.add(f"{layer.name if layer is not None else 'model'} {model.architecture}", model)
        self.save_button.setEnabled(True)
        self.export_button.setEnabled(True)
        notify(f"Model '{name}' is trained ({model.describe()}); apply it with Predict, or save it.")

    def _on_finished(self) -> None:
        self._guard.worker = None
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def _add_pair(self) -> None:
        try:
            self.pairs.add_current()
        except InputError as error:
            report_error(error, "Train")

    def _base_model(self) -> tuple[TrainedModel | None, bool]:
        """The model a run builds on, and whether it fine-tunes it (a shipped model: a new run from its
        weights) rather than continues it."""
        name = self.start_from.value
        if name == NEW_MODEL:
            return None, False
        return model_store.get(name), model_store.is_shipped(name)

    def _start_from_changed(self, name: str) -> None:
        """A continued or fine-tuned model keeps its network and intensity scaling: they are shown, not offered."""
        self.model_choice.enabled = name == NEW_MODEL
        base = model_store.get(name) if name != NEW_MODEL else None
        if base is not None:
            self.model_choice.value = base.architecture
        # Fine-tuning a shipped model, or continuing a fine-tuned one, trains at a gentler rate.
        gentle = base is not None and (model_store.is_shipped(name) or base.fine_tuned)
        self.advanced.follow_base(self.model_choice.value, base, gentle)

    def _keep_unsaved_model(self) -> None:
        """napari is closing (or the process exiting): keep a model trained here and not saved,
        also one whose training the closing stopped, in the autosave folder."""
        trainer = self._trainer
        if self._unsaved and self.model is not None:
            model = self.model
        elif trainer is not None and trainer.steps_done > 0 and trainer.finished:
            model = trainer.model
        else:
            return
        layer = self._training_layer
        autosave(model, f"{getattr(layer, 'name', 'model')} {model.architecture}")
        self._unsaved = False

    # ------------------------------------------------------------------ live preview

    def _show_or_hide_preview(self, on: bool) -> None:
        self.preview.setVisible(bool(on))

    def _model_defaults(self, value: str) -> None:
        """Patch size and learning rate that suit the chosen model."""
        self.advanced.follow_architecture(value)


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row
