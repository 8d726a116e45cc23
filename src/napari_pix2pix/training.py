"""Training a U-Net, the seed U-Net or pix2pix on an annotated image or stack.

``train`` is a generator: it yields small ``TrainingEvent``s (step, epoch, losses, validation,
preview) and returns the ``TrainedModel``. The napari widget runs it in a worker thread and only
draws the events; the command line prints them. Setting the ``stop`` event ends training after
the current step and still returns the model trained so far.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .augment import augment_batch
from .data import (
    IGNORE,
    InputError,
    LabelEncoding,
    Normalisation,
    PatchSampler,
    SliceSet,
    annotated_slices,
    as_channels_last,
    check_finite,
    check_labels,
    make_encoding,
    split_train_validation,
)
from .devices import amp_dtype, autocast, describe, resolve_device
from .modelfile import TrainedModel
from .models import ARCHITECTURES, ModelConfig, build_discriminator, build_model, crop
from .prediction import iter_probabilities, output_converter


@dataclass
class TrainingConfig:
    """Every training setting, with defaults that learn well in minutes on two CPU cores."""

    model: str = "unet"
    annotation: str = "auto"
    epochs: int = 50
    max_minutes: float | None = 10.0
    steps_per_epoch: int = 20
    batch_size: int = 4
    patch_size: int | None = None  # None: 128, or 256 for the seed U-Net (whose output is 117²)
    learning_rate: float | None = None  # None: 3e-4 (steadier validation than 1e-3, same end point), 2e-4 for pix2pix
    val_fraction: float = 0.2
    augment: bool = True
    device: str = "auto"
    seed: int = 0
    width: int = 16
    depth: int = 4
    l1_weight: float = 100.0
    mixed_precision: bool = True
    preview_every: int = 10

    def check(self) -> None:
        """Raise ``InputError`` naming the first setting that is out of range."""
        if self.model not in ARCHITECTURES:
            raise InputError(f"model must be one of {ARCHITECTURES}, got {self.model!r}")
        for name in ("epochs", "steps_per_epoch", "batch_size", "patch", "width", "depth", "preview_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise InputError(f"the time budget must be positive, got {self.max_minutes} minutes")
        if self.learning_rate is not None and not (0 < self.learning_rate < 1):
            raise InputError(f"learning rate must be between 0 and 1, got {self.learning_rate}")
        if self.model != "seed-unet" and self.patch % 2**self.depth:
            raise InputError(
                f"patch size must be a multiple of {2**self.depth} for a depth-{self.depth} U-Net, got {self.patch}"
            )
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"validation fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def patch(self) -> int:
        if self.patch_size is not None:
            return self.patch_size
        return 256 if self.model == "seed-unet" else 128

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.model == "pix2pix" else 3e-4


@dataclass
class TrainingEvent:
    """A progress report from ``train``; fields that do not apply are None."""

    kind: str  # 'start', 'step', 'epoch', 'preview' or 'finished'
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    epochs: int = 0
    elapsed: float = 0.0
    remaining: float | None = None
    loss: float | None = None
    generator_loss: float | None = None
    discriminator_loss: float | None = None
    val_loss: float | None = None
    val_dice: float | None = None
    device: str = ""
    message: str = ""
    preview: np.ndarray | None = field(default=None, repr=False)


class TrainingError(InputError):
    """Training could not run (the message says why and what to try)."""


@dataclass
class _Prepared:
    encoding: LabelEncoding
    normalisation: Normalisation
    train: SliceSet
    validation: SliceSet | None
    in_channels: int


def prepare_data(image, labels, config: TrainingConfig, resume: TrainedModel | None, rng) -> _Prepared:
    """Check the inputs and turn them into normalised slices with class targets."""
    labels = check_labels(labels)
    image = as_channels_last(image, labels_shape=labels.shape)
    check_finite(image)
    labels = labels[None] if labels.ndim == 2 else labels
    min_side = 2**config.depth
    if min(labels.shape[1:]) < min_side:
        raise InputError(
            f"the image is {labels.shape[1]}×{labels.shape[2]} pixels; this model needs at least {min_side}×{min_side}"
        )
    if resume is not None:
        encoding, normalisation = resume.encoding, resume.normalisation
        kind = encoding.kind if config.annotation == "auto" else config.annotation
        fresh = make_encoding(labels, kind)
        if fresh.kind != encoding.kind or not set(fresh.class_values) <= set(encoding.class_values):
            raise InputError(
                f"the model to resume was trained on {encoding.kind} labels {list(encoding.class_values)}, "
                f"but these labels are {fresh.kind} {list(fresh.class_values)}; start a new model instead"
            )
    else:
        encoding = make_encoding(labels, config.annotation)
        normalisation = Normalisation.fit(image)
    slices = annotated_slices(labels)
    images = np.moveaxis(normalisation.apply(image[slices]), -1, 1)
    targets = encoding.encode(labels[slices])
    if encoding.kind == "sparse":
        targets[labels[slices] == 0] = IGNORE
    train, validation = split_train_validation(images, targets, config.val_fraction, rng)
    return _Prepared(encoding, normalisation, train, validation, image.shape[-1])


def train(
    image,
    labels,
    config: TrainingConfig | None = None,
    stop: threading.Event | None = None,
    preview_source: Callable[[], np.ndarray | None] | None = None,
    resume: TrainedModel | None = None,
) -> Generator[TrainingEvent, None, TrainedModel]:
    """Train on ``image`` with ``labels``; yields ``TrainingEvent``s and returns the ``TrainedModel``.

    Parameters
    ----------
    image : array-like
        (Y, X) or (Z, Y, X), optionally with a trailing channel axis.
    labels : array-like of int
        Same spatial shape. Slices without any label are skipped; see ``data.make_encoding`` for
        how dense, sparse and instance annotations are read.
    config : TrainingConfig
    stop : threading.Event, optional
        Checked every step; once set, training ends and the best model so far is returned.
    preview_source : callable, optional
        Returns the 2D image (Y, X[, C]) to preview on, or None; every ``preview_every`` steps the
        current model's labels for it are yielded in a 'preview' event.
    resume : TrainedModel, optional
        Continue training this model (same architecture, channels and classes).

    Examples
    --------
    >>> from napari_pix2pix.training import TrainingConfig, fit
    >>> model = fit(image, labels, TrainingConfig(epochs=5))  # doctest: +SKIP
    """
    config = copy.copy(config or TrainingConfig())
    if resume is not None:
        config.model, config.width, config.depth = resume.architecture, resume.config.width, resume.config.depth
    config.check()
    device = resolve_device(config.device)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    augment_generator = torch.Generator().manual_seed(config.seed)
    data = prepare_data(image, labels, config, resume, rng)

    model_config = ModelConfig(config.model, data.in_channels, data.encoding.n_classes, config.width, config.depth)
    network = build_model(model_config)
    if resume is not None:
        network.load_state_dict(resume.network.state_dict())
    network.to(device)
    patch_size = _patch_size(network, config.patch, data.train.images.shape[2:])
    output_size = network.output_size(patch_size)
    sampler = PatchSampler(data.train, patch_size, output_size, rng)
    history = list(resume.history) if resume is not None else []
    result = TrainedModel(model_config, network, data.encoding, data.normalisation, patch_size, history, None, str(device))

    pix2pix = config.model == "pix2pix"
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr, betas=(0.5, 0.999) if pix2pix else (0.9, 0.999))
    discriminator = d_optimiser = None
    if pix2pix:
        discriminator = build_discriminator(model_config).to(device)
        if resume is not None and resume.discriminator_state is not None:
            discriminator.load_state_dict(resume.discriminator_state)
        d_optimiser = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(0.5, 0.999))
    use_amp = config.mixed_precision and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype(device) == torch.float16)

    total_steps = config.epochs * config.steps_per_epoch
    budget = config.max_minutes * 60 if config.max_minutes else math.inf
    device_name = describe(device)
    start = time.monotonic()
    best_score, best_state = -math.inf, _snapshot(network, discriminator)
    yield TrainingEvent("start", 0, total_steps, 0, config.epochs, device=device_name,
                        message=f"training {config.model} on {device_name}, {len(data.train)} slice(s), "
                        f"{data.encoding.n_classes} classes ({data.encoding.kind})")

    step, epoch, message = 0, 0, ""
    epoch_losses: list[dict] = []
    while step < total_steps:
        if stop is not None and stop.is_set():
            message = "stopped by the user"
            break
        if time.monotonic() - start > budget:
            message = f"time budget of {config.max_minutes:g} minutes reached"
            break
        network.train()
        images, targets = sampler.sample(config.batch_size)
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if config.augment:
            images, targets = augment_batch(images, targets, augment_generator)
        if pix2pix:
            losses = _pix2pix_step(network, discriminator, optimiser, d_optimiser, images, targets,
                                   data.encoding.n_classes, config.l1_weight, device, use_amp, scaler)
        else:
            losses = _segmentation_step(network, optimiser, images, targets, device, use_amp, scaler)
        step += 1
        if not all(math.isfinite(v) for v in losses.values()):
            _restore(network, discriminator, best_state)
            message = (f"training stopped at step {step}: the loss became {losses['loss']} (not a number); "
                       "the last good weights are kept. Try a lower learning rate")
            break
        epoch_losses.append(losses)
        elapsed = time.monotonic() - start
        remaining = min(budget - elapsed, (total_steps - step) * elapsed / step)
        yield TrainingEvent("step", step, total_steps, epoch + 1, config.epochs, elapsed, max(0.0, remaining),
                            device=device_name, **_rename(losses))

        if preview_source is not None and step % config.preview_every == 0:
            preview = _preview(result, preview_source, device)
            if preview is not None:
                yield TrainingEvent("preview", step, total_steps, epoch + 1, config.epochs, elapsed,
                                    device=device_name, preview=preview)

        if step % config.steps_per_epoch == 0 or step == total_steps:
            epoch += 1
            record = {k: float(np.mean([l[k] for l in epoch_losses])) for k in epoch_losses[0]}
            epoch_losses.clear()
            val_loss = val_dice = None
            if data.validation is not None:
                val_loss, val_dice = evaluate(result, data.validation, device)
            score = val_dice if val_dice is not None else -record["loss"]
            if score > best_score:
                best_score, best_state = score, _snapshot(network, discriminator)
            record.update(epoch=len(history) + 1, step=step, val_loss=val_loss, val_dice=val_dice,
                          elapsed=time.monotonic() - start)
            history.append(record)
            yield TrainingEvent("epoch", step, total_steps, epoch, config.epochs, record["elapsed"],
                                max(0.0, min(budget - record["elapsed"], (total_steps - step) * record["elapsed"] / step)),
                                val_loss=val_loss, val_dice=val_dice, device=device_name, **_rename(record))

    if epoch_losses and data.validation is None:
        # A partial last epoch still counts when there is no validation to choose by.
        best_state = _snapshot(network, discriminator)
    _restore(network, discriminator, best_state)
    network.eval()
    if discriminator is not None:
        result.discriminator_state = {k: v.cpu() for k, v in discriminator.state_dict().items()}
    summary = message or f"finished {step} steps"
    if history and history[-1].get("val_dice") is not None:
        summary += f"; best validation Dice {max(h['val_dice'] for h in history if h['val_dice'] is not None):.3f}"
    yield TrainingEvent("finished", step, total_steps, epoch, config.epochs, time.monotonic() - start, 0.0,
                        device=device_name, message=summary)
    return result


def fit(image, labels, config: TrainingConfig | None = None, callback=None, **options) -> TrainedModel:
    """Run ``train`` to the end (optionally calling ``callback(event)``) and return the model."""
    generator = train(image, labels, config, **options)
    while True:
        try:
            event = next(generator)
        except StopIteration as done:
            return done.value
        if callback is not None:
            callback(event)


def _patch_size(network, requested: int, slice_shape: tuple[int, int]) -> int:
    """The training patch: the requested size, shrunk for small images (padded U-Net only)."""
    if not network.padded:
        minimum = network.min_input_size()
        if requested < minimum:
            raise InputError(f"patch size {requested} is too small for the seed U-Net; use at least {minimum}")
        return requested
    multiple = network.size_multiple
    fits = -(-max(slice_shape) // multiple) * multiple
    return min(requested, fits)


def _rename(losses: dict) -> dict:
    names = {"loss": "loss", "g_loss": "generator_loss", "d_loss": "discriminator_loss"}
    return {names[k]: v for k, v in losses.items() if k in names}


def _segmentation_step(network, optimiser, images, targets, device, use_amp, scaler) -> dict:
    with autocast(device, use_amp):
        logits = network(images)
    loss = segmentation_loss(logits.float(), crop(targets, logits.shape))
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()
    return {"loss": loss.item()}


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over annotated pixels (Dice keeps thin or rare classes alive)."""
    annotated = targets != IGNORE
    # Sum over the annotated pixels / their count, not a branch on ``annotated.any()``: the same
    # mean, 0 when nothing is annotated, and no wait for the device in the middle of the step.
    ce = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum") / annotated.sum().clamp_min(1)
    probabilities = torch.softmax(logits, dim=1) * annotated.unsqueeze(1)
    one_hot = F.one_hot(targets.clamp_min(0), logits.shape[1]).permute(0, 3, 1, 2) * annotated.unsqueeze(1)
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
    denominator = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    dice = (2 * intersection + 1.0) / (denominator + 1.0)
    return ce + (1 - dice.mean())


def _pix2pix_step(generator, discriminator, g_optimiser, d_optimiser, images, targets, n_classes, l1_weight,
                  device, use_amp, scaler) -> dict:
    """One pix2pix update: the conditional-GAN loss plus λ·L1 between class maps (Isola et al. 2017)."""
    annotated = (targets != IGNORE).unsqueeze(1)
    real = F.one_hot(targets.clamp_min(0), n_classes).permute(0, 3, 1, 2).float()
    with autocast(device, use_amp):
        fake = torch.softmax(generator(images).float(), dim=1)
    # Where nothing is annotated the "real" map is the generator's own, so D learns nothing there.
    real = torch.where(annotated, real, fake.detach())

    with autocast(device, use_amp):
        real_logits = discriminator(images, real)
        fake_logits = discriminator(images, fake.detach())
    d_loss = 0.5 * (
        F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits, dtype=torch.float32))
        + F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    )
    d_optimiser.zero_grad(set_to_none=True)
    scaler.scale(d_loss).backward()
    scaler.step(d_optimiser)

    with autocast(device, use_amp):
        judged = discriminator(images, fake)
    adversarial = F.binary_cross_entropy_with_logits(judged.float(), torch.ones_like(judged, dtype=torch.float32))
    l1 = (torch.abs(fake - real) * annotated).sum() / (annotated.sum() * n_classes).clamp_min(1)
    g_loss = adversarial + l1_weight * l1
    g_optimiser.zero_grad(set_to_none=True)
    scaler.scale(g_loss).backward()
    scaler.step(g_optimiser)
    scaler.update()
    return {"loss": l1.item(), "g_loss": g_loss.item(), "d_loss": d_loss.item()}


def evaluate(model: TrainedModel, validation: SliceSet, device) -> tuple[float, float]:
    """Validation loss (cross-entropy) and Dice of the foreground classes, on whole held-out slices."""
    identity = TrainedModel(model.config, model.network, model.encoding,
                            Normalisation((0.0,) * model.config.in_channels, (1.0,) * model.config.in_channels),
                            model.patch_size)
    images = np.moveaxis(validation.images, 1, -1)
    images = images if model.config.in_channels > 1 else images[..., 0]
    losses, intersection, total = [], 0.0, 0.0
    for index, probabilities in iter_probabilities(identity, images, batch_size=4, device=str(device)):
        target = validation.targets[index]
        annotated = target != IGNORE
        if not annotated.any():
            continue
        picked = np.take_along_axis(probabilities, np.clip(target, 0, None)[None], axis=0)[0]
        losses.append(float(-np.log(np.clip(picked[annotated], 1e-7, 1)).mean()))
        # Foreground: every class after the first (instances: interior and boundary together).
        predicted = probabilities.argmax(axis=0)[annotated] > 0
        truth = target[annotated] > 0
        intersection += float((predicted & truth).sum())
        total += float(predicted.sum() + truth.sum())
    if not losses:
        return None, None
    return float(np.mean(losses)), (2 * intersection / total if total else 1.0)


def _preview(model: TrainedModel, source, device) -> np.ndarray | None:
    """The current network's prediction for the 2D image ``source()`` returns (None to skip):
    instance labels for an instance model, class labels otherwise."""
    image = source()
    if image is None:
        return None
    try:
        (_, probabilities), = iter_probabilities(model, np.asarray(image), device=str(device))
    except InputError:
        return None  # a slice the model cannot take (e.g. wrong channels): no preview, training goes on
    return output_converter(model, "instances" if model.encoding.kind == "instances" else "labels")(probabilities)


def _snapshot(network, discriminator) -> dict:
    state = {"network": {k: v.detach().clone() for k, v in network.state_dict().items()}}
    if discriminator is not None:
        state["discriminator"] = {k: v.detach().clone() for k, v in discriminator.state_dict().items()}
    return state


def _restore(network, discriminator, state: dict) -> None:
    network.load_state_dict(state["network"])
    if discriminator is not None and "discriminator" in state:
        discriminator.load_state_dict(state["discriminator"])
