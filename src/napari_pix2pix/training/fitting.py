"""Training as a generator (``train``) and as one call (``fit``): the public face of ``Trainer``.

``train`` yields small ``TrainingEvent``s (step, epoch, losses, validation, preview) and returns the
``TrainedModel``. The napari widget runs it in a worker thread and only draws the events; the command
line prints them. Setting the ``stop`` event ends training after the current step and still returns
the model trained so far.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..models.trained import TrainedModel
from .config import TrainingConfig
from .events import TrainingEvent
from .loop import Trainer


def train(
    image: Any,
    labels: Any = None,
    config: TrainingConfig | None = None,
    *,
    stop: threading.Event | None = None,
    preview_source: Callable[[], np.ndarray | None] | None = None,
    resume: TrainedModel | None = None,
    start_from: TrainedModel | None = None,
) -> Generator[TrainingEvent, None, TrainedModel]:
    """Train on ``image`` with ``labels`` (or on a list of (image, labels) pairs given as
    ``image``); yields ``TrainingEvent``s and returns the ``TrainedModel``.

    Parameters
    ----------
    image : array-like, or list of (image, labels) pairs
        (Y, X) or (Z, Y, X), optionally with a trailing channel axis. Pairs may differ in size,
        slice count and how much is annotated; intensities are scaled as ``config.normalisation``
        says (by default, by the training images' percentiles together).
    labels : array-like of int, optional (omit it when ``image`` is a list of pairs)
        Same spatial shape. Slices without any label are skipped; see ``encodings`` for how dense,
        sparse and instance annotations are read.
    config : TrainingConfig (may be given second when ``image`` is a list of pairs)
    stop : threading.Event, optional
        Checked every step; once set, training ends and the best model so far is returned.
    preview_source : callable, optional
        Returns the 2D image (Y, X[, C]) to preview on, or None; every ``preview_every`` steps the
        current model's labels for it are yielded in a 'preview' event. A 3D network calls it with
        ``depth=N`` for a block (Z, Y, X[, C]) of up to N slices around the slice to show, and yields
        the block's labels (previews of a 3D network take at most a fifth of the run).
    resume : TrainedModel, optional
        Continue training this model (same architecture, channels and classes; its history goes on).
    start_from : TrainedModel, optional
        Fine-tune this model on the annotations: a new run from its weights that keeps its network,
        classes, normalisation rule and object size, trains at ``FINE_TUNE_RATE`` of the usual
        learning rate (unless ``config.learning_rate`` is given) and keeps its batch-norm statistics;
        the weights end ``FINE_TUNE_MIX`` of the way from its weights to the fine-tuned ones.

    Returns
    -------
    generator of TrainingEvent, returning TrainedModel
        The events as training goes; the model is the generator's return value.

    Raises
    ------
    InputError
        Input that cannot be trained on; the message says what and how to fix it.

    Examples
    --------
    >>> from napari_pix2pix.training import TrainingConfig, fit
    >>> model = fit(image, labels, TrainingConfig(epochs=5))  # doctest: +SKIP
    >>> model = fit([(image_a, labels_a), (image_b, labels_b)], TrainingConfig())  # doctest: +SKIP
    """
    trainer = Trainer(
        image, labels, config, stop=stop, preview_source=preview_source, resume=resume, start_from=start_from
    )
    return (yield from trainer.run())


def fit(
    image: Any,
    labels: Any = None,
    config: TrainingConfig | None = None,
    callback: Callable[[TrainingEvent], None] | None = None,
    *,
    stop: threading.Event | None = None,
    preview_source: Callable[[], np.ndarray | None] | None = None,
    resume: TrainedModel | None = None,
    start_from: TrainedModel | None = None,
) -> TrainedModel:
    """Train a model to the end of its time budget (or epochs) and return it.

    Parameters
    ----------
    image : array-like, or list of (image, labels) pairs
        (Y, X) or (Z, Y, X), optionally with a trailing channel axis; see ``train``.
    labels : array-like of int, optional
        The annotation, same spatial shape (omit it when ``image`` is a list of pairs).
    config : TrainingConfig, optional
        Every training setting (default: ``TrainingConfig()``, a U-Net for 10 minutes).
    callback : callable, optional
        Called with every ``TrainingEvent`` (progress, losses, validation).
    stop, preview_source, resume, start_from
        As for ``train``.

    Returns
    -------
    TrainedModel
        The weights that validated best, with classes, normalisation and history.

    Raises
    ------
    InputError
        Input that cannot be trained on (shapes that disagree, empty or float labels, NaN pixels,
        a setting out of range); the message says what and how to fix it.

    Examples
    --------
    >>> model = fit(image, labels, TrainingConfig(max_minutes=5))  # doctest: +SKIP
    >>> model = fit([(image_a, labels_a), (image_b, labels_b)], TrainingConfig())  # doctest: +SKIP
    """
    generator = train(
        image, labels, config, stop=stop, preview_source=preview_source, resume=resume, start_from=start_from
    )
    while True:
        try:
            event = next(generator)
        except StopIteration as done:
            return done.value
        if callback is not None:
            callback(event)
