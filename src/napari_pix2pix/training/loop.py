"""The training loop, ``Trainer``: a U-Net, the seed U-Net or pix2pix on annotated images or stacks.

``Trainer`` sets a run up and ``Trainer.run()`` yields small ``TrainingEvent``s (step, epoch, losses,
validation, preview) and returns the ``TrainedModel``; callers may read the live model
(``trainer.model``) or wrap ``trainer.step``. ``train`` and ``fit`` (``fitting.py``) are the loop as a
generator and as one call.

The pieces: ``prepare_data`` (checks, encoding, normalisation, validation split), a step object
per kind of training (``SegmentationStep``, ``Pix2PixStep``), ``BestWeights`` (which weights to
keep) and ``Trainer.run`` (the loop, its stop reasons and epoch bookkeeping).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..devices import available_memory, batch_bytes, describe, memory_format, resolve_device
from ..errors import InputError
from ..models.networks import (
    ModelConfig,
    SizeContract,
    build_model,
)
from ..models.trained import TrainedModel
from ..models.unet3d import plan_z_skip
from ..scale.distributed import Group, agree, join, wrapper
from .augment import augment_batch
from .binning import binned_pixel_size, binning_note, network_voxel_size
from .config import FINE_TUNE_MIX, FINE_TUNE_RATE, TrainingConfig
from .data import PatchSampler, VolumeSet
from .evaluation import evaluate
from .events import EventKind, TrainingEvent, loss_fields
from .planning import fit_in_memory, patch_plan, training_dims
from .preparation import as_pairs, prepare_data
from .preview import PREVIEW_SHARE, preview_labels
from .steps import (
    BestWeights,
    LearningRateSchedule,
    Pix2PixStep,
    Precision,
    SegmentationStep,
    copy_weights,
    keep_batch_norm_statistics,
    mix_weights,
    refresh_batch_norm_statistics,
)
from .volumes import (
    VOLUME_CONTRAST,
    VOLUME_ELASTIC,
    VOLUME_STATISTICS_BATCHES,
    VOLUME_ZOOM,
    VolumePatchSampler,
    augment_volumes,
    evaluate_volumes,
    prepare_volumes,
)

# ----------------------------------------------------------------------------- the loop


class Trainer:
    """Sets a training run up (data, network, step, sampler) and runs it with ``run()``.

    ``model`` is the live ``TrainedModel`` (its network trains in place); ``step`` is the callable
    doing one update, ``step(images, targets, weights) -> {"loss": …}``, which callers may wrap.
    """

    # The time the last preview took and the training time since (a 3D preview takes a share of it).
    preview_seconds = trained_since_preview = 0.0

    def __init__(
        self,
        image: Any,
        labels: Any = None,
        config: TrainingConfig | None = None,
        *,
        stop: threading.Event | None = None,
        preview_source: Callable[[], np.ndarray | None] | None = None,
        resume: TrainedModel | None = None,
        start_from: TrainedModel | None = None,
        group: Group | None = None,
    ) -> None:
        if isinstance(labels, TrainingConfig):  # Trainer(pairs, config)
            labels, config = None, labels
        config, base, self.fine_tuning = _settled(config, resume, start_from)
        self.config, self.stop, self.preview_source, self.group = config, stop, preview_source, group
        self.device = resolve_device(config.device)
        if group is not None:
            self.device = join(group, self.device)
        rank = group.rank if group is not None else 0
        rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.augment_generator = torch.Generator().manual_seed(config.seed + rank)
        self.dims, self.dims_reason = training_dims(config, as_pairs(image, labels), base)
        prepare = prepare_volumes if self.dims == 3 else prepare_data
        self.data = data = prepare(image, labels, config, base, rng)  # the same split on every rank
        if rank:
            rng = np.random.default_rng([config.seed, rank])  # each rank samples its own patches

        voxel_size = network_voxel_size(config.voxel_size, data.binning, base) if self.dims == 3 else None
        z_skip = plan_z_skip(voxel_size, config.levels) if self.dims == 3 else 0
        model_config = ModelConfig(
            config.model,
            data.in_channels,
            data.encoding.n_classes,
            config.width,
            config.levels,
            base.config.z_skip if base is not None else z_skip,
        )
        network = build_model(model_config)
        if base is not None:
            network.load_state_dict(base.network.state_dict())
        self.memory_format = memory_format(self.device) if self.dims == 2 else torch.contiguous_format
        network.to(self.device).to(memory_format=self.memory_format)
        # Fine-tuning from another model ends partway back toward its weights (``FINE_TUNE_MIX``).
        self.start_weights = copy_weights(network) if start_from is not None else None
        self.sampler, patch_size = self._make_sampler(network, rng)
        history = list(resume.history) if resume is not None else []
        # A continued run numbers its steps on from the model's history (events count this run's).
        self.step_offset = int(history[-1].get("step", 0)) if history else 0
        self.model = TrainedModel(
            model_config,
            network,
            data.encoding,
            data.normalisation,
            patch_size,
            history,
            device=str(self.device),
            object_size=data.object_size,
            pixel_size=binned_pixel_size(config.pixel_size, data.binning) or (base.pixel_size if base else None),
            voxel_size=voxel_size,
            binning=data.binning,  # 1 for slices
        )
        step = self._make_step(network, model_config, base)
        self.step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], Mapping[str, torch.Tensor | float]] = (
            step
        )
        self.schedule = LearningRateSchedule(step.optimisers)
        self.best = BestWeights(step.modules)  # the weights that make the model: kept, restored, saved
        self.total_steps = config.epochs * config.steps_per_epoch if config.epochs is not None else None
        self.budget = config.max_minutes * 60 if config.max_minutes else math.inf
        self.device_name = describe(self.device)
        self.steps_done = self.epochs_done = 0
        self.finished = False  # True once the best weights are restored and the model is final
        self.read_late = self.device.type == "cuda"  # read each loss one step late (see ``run``)
        self.agreed_progress = 0.0  # in a group: the run's progress as the group agreed it
        self.failure = ""  # why the loss became unusable, once it did
        self.validated_at = 0  # the step whose weights were last validated
        self.validation_seconds = self.trained_since_validation = 0.0
        self.start = time.monotonic()

    def _make_sampler(
        self, network: nn.Module, rng: np.random.Generator
    ) -> tuple[PatchSampler | VolumePatchSampler, int]:
        """The patch sampler of the training data, and the patch side, for the batch and patch that
        fit the device's memory (``self.batch_size``; ``self.memory_note`` says what was shrunk)."""
        config, data = self.config, self.data
        start, steps = patch_plan(network, config, data.train)

        def per_sample(patch: tuple[int, ...]) -> int:
            return batch_bytes(int(np.prod(patch)) * data.in_channels, config.width, training=True)

        self.batch_size, patch, self.memory_note = fit_in_memory(
            per_sample, self._free_memory(), config.batch_size, start, config.patch_size is not None, steps,
            self.device.type,
        )  # fmt: skip
        if isinstance(data.train, VolumeSet):
            volume = cast(tuple[int, int, int], patch)
            return VolumePatchSampler(data.train, volume, rng, self.device), volume[1]
        side = patch[0]
        return PatchSampler(data.train, side, cast(SizeContract, network).output_size(side), rng, self.device), side

    def _free_memory(self) -> int | None:
        """The bytes free on the device; in a group the fewest of any rank, so that every rank trains
        the same batch and patch."""
        free = available_memory(self.device)
        if self.group is None:
            return free
        fewest = -agree([-math.inf if free is None else -float(free)], self.device)[0]
        return None if math.isinf(fewest) else int(fewest)

    def _make_step(
        self, network: nn.Module, model_config: ModelConfig, resume: TrainedModel | None
    ) -> SegmentationStep | Pix2PixStep:
        """The update of one training step: supervised, or pix2pix's two networks."""
        config, group = self.config, self.group
        precision = Precision(self.device, config.mixed_precision)
        if config.architecture.adversarial:
            if group is not None:
                raise InputError(f"{config.model} cannot be trained by several processes yet; use unet or seed-unet")
            return Pix2PixStep(network, model_config, config, precision, resume)
        return SegmentationStep(network, config, precision, wrapper(group, self.device))

    def run(self) -> Generator[TrainingEvent, None, TrainedModel]:
        """Train until the time budget, the epochs or ``stop`` end it; yield events, return the model."""
        data, config = self.data, self.config
        self.start = time.monotonic()
        yield self._event(
            EventKind.START,
            message=f"training {config.model} on {self.device_name}, {len(data.train)} annotated slice(s), "
            f"{data.encoding.n_classes} classes ({data.encoding.kind}); {self.dims_reason}"
            + binning_note(self.model.binning, self.model.voxel_size)
            + (f"; {self.memory_note}" if self.memory_note else "")
            + (
                f"; fine-tuning at learning rate {config.lr:.2g}, keeping the starting model's batch-norm statistics"
                if self.fine_tuning
                else ""
            ),
        )
        epoch_losses: list[dict] = []
        # On a GPU the step is only queued; its loss is read once the next step is queued too, so
        # the host samples the next batch while the device computes (no wait after every step).
        pending: list[tuple[int, Mapping[str, torch.Tensor | float]]] = []
        while not (message := self._limit_reached()):
            self.schedule.update(self.progress())
            pending.append((self.steps_done + 1, self._train_one_step()))
            boundary = self.steps_done % config.steps_per_epoch == 0 or self._preview_due()
            ready, pending = (pending, []) if boundary or not self.read_late else (pending[:-1], pending[-1:])
            for step, raw in ready:
                losses = {k: float(v) for k, v in raw.items()}
                if not all(math.isfinite(v) for v in losses.values()):
                    self.failure = f"training stopped at step {step}: the loss became {losses['loss']} (not a number)"
                    break
                epoch_losses.append(losses)
                yield self._event(EventKind.STEP, step=step, epoch=self.epochs_done + 1, **loss_fields(losses))
            if self.failure and self.group is None:
                break  # (in a group, every rank stops together at the next agreement)
            if self._preview_due():
                preview = self._preview()
                if preview is not None:
                    yield self._event(EventKind.PREVIEW, epoch=self.epochs_done + 1, preview=preview)
            if self.steps_done % config.steps_per_epoch == 0:
                # The last weights are always validated: at the end of the schedule they are often the best.
                yield self._end_epoch(epoch_losses, final=bool(self._limit_reached()))
                epoch_losses = []
        if self.failure:
            self.best.restore()
            yield self._finish(f"{self.failure}; the last good weights are kept. Try a lower learning rate")
            return self.model
        for step, raw in pending:  # the limit came while a step's loss was unread
            losses = {k: float(v) for k, v in raw.items()}
            epoch_losses.append(losses)
            yield self._event(EventKind.STEP, step=step, epoch=self.epochs_done + 1, **loss_fields(losses))
        if epoch_losses:
            yield self._end_epoch(epoch_losses, final=True)
        yield self._finish(message)
        return self.model

    def _preview_due(self) -> bool:
        if self.preview_source is None or self.steps_done % self.config.preview_every:
            return False
        # A 3D network's preview (a block of slices) costs seconds on a CPU: at most a fifth of the time.
        return self.dims == 2 or self.trained_since_preview >= PREVIEW_SHARE * self.preview_seconds

    def checkpoint(self) -> TrainedModel:
        """The model as it is now (live weights, and the discriminator's), to save in the middle of a run."""
        discriminator = self.best.modules.get("discriminator")
        if discriminator is not None:
            self.model.discriminator_state = {k: v.detach().cpu() for k, v in discriminator.state_dict().items()}
        return self.model

    def progress(self) -> float:
        """The fraction of the run done: by time against the budget, or by steps against the limit
        (in a group, as the group last agreed, so every rank follows the same schedule)."""
        if self.group is not None:
            return self.agreed_progress
        return self._local_progress()

    def _local_progress(self) -> float:
        by_time = (time.monotonic() - self.start) / self.budget
        by_steps = self.steps_done / self.total_steps if self.total_steps else 0.0
        return min(1.0, max(by_time, by_steps))

    def _limit_reached(self) -> str:
        """Why training must end before the next step ('' to go on); in a group, the ranks agree."""
        stopped = self.stop is not None and self.stop.is_set()
        finished = self.total_steps is not None and self.steps_done >= self.total_steps
        timed_out = time.monotonic() - self.start > self.budget
        failed = bool(self.failure)
        if self.group is not None:
            flags = [stopped, finished, timed_out, failed, self._local_progress()]
            *agreed, self.agreed_progress = agree([float(f) for f in flags], self.device)
            stopped, finished, timed_out, failed = (bool(f) for f in agreed)
            if failed and not self.failure:
                self.failure = (
                    f"training stopped at step {self.steps_done}: the loss became not a number on another process"
                )
        if failed:
            return self.failure
        if stopped:
            return "stopped by the user"
        if finished:
            return f"finished {self.steps_done} steps"
        if timed_out:
            return f"time budget of {self.config.max_minutes:g} minutes reached"
        return ""

    def _train_one_step(self) -> Mapping[str, torch.Tensor | float]:
        started = time.monotonic()
        self.model.network.train()
        if self.fine_tuning:
            keep_batch_norm_statistics(self.model.network)
        images, targets, weights = self.sampler.sample(self.batch_size)
        if images.device.type == "cpu" and self.device.type != "cpu":
            images, targets = _to_device(images, self.device), _to_device(targets, self.device)
            weights = None if weights is None else _to_device(weights, self.device)
        if self.config.augment and self.dims == 3:
            images, targets, weights = augment_volumes(
                images, targets, self.augment_generator, elastic_strength=VOLUME_ELASTIC, zoom=VOLUME_ZOOM,
                weights=weights, contrast=VOLUME_CONTRAST,
            )  # fmt: skip
        elif self.config.augment:
            images, targets, weights = augment_batch(images, targets, self.augment_generator, weights=weights)
        images = images.contiguous(memory_format=self.memory_format)
        losses = self.step(images, targets, weights)
        self.steps_done += 1
        self.trained_since_validation += time.monotonic() - started
        self.trained_since_preview += time.monotonic() - started
        return losses

    def _end_epoch(self, epoch_losses: list[dict], final: bool = False) -> TrainingEvent:
        """Record the epoch in the history and, when it is due, validate and keep the best weights."""
        self.epochs_done += 1
        record: dict = {k: float(np.mean([losses[k] for losses in epoch_losses])) for k in epoch_losses[0]}
        val_loss = val_dice = None
        if final or (self.data.validation is not None and self._validation_due()):
            started = time.monotonic()
            self._refresh_statistics()
            if isinstance(self.data.validation, VolumeSet):
                val_loss, val_dice = evaluate_volumes(self.model, self.data.validation, self.device)
            elif self.data.validation is not None:
                val_loss, val_dice = evaluate(self.model, self.data.validation, self.device)
            self.validation_seconds = time.monotonic() - started
            self.trained_since_validation = 0.0
            self.validated_at = self.steps_done
            if val_dice is not None:
                self.best.offer(val_dice)
        record.update(
            epoch=len(self.model.history) + 1,
            step=self.step_offset + self.steps_done,
            val_loss=val_loss,
            val_dice=val_dice,
            elapsed=time.monotonic() - self.start,
        )
        if self.fine_tuning:  # so that a run continuing this model fine-tunes too (TrainedModel.fine_tuned)
            record["fine_tuning"] = True
        self.model.history.append(record)
        return self._event(
            EventKind.EPOCH, epoch=self.epochs_done, val_loss=val_loss, val_dice=val_dice, **loss_fields(record)
        )

    def _refresh_statistics(self) -> None:
        """3D networks: batch-norm statistics from unaugmented training patches before each validation
        (``VOLUME_STATISTICS_BATCHES``), so validation, the best weights and the model judge the
        network as it will predict. Fine-tuning keeps the starting model's."""
        if self.dims != 3 or self.fine_tuning:
            return
        batches = (self.sampler.sample(self.batch_size)[0] for _ in range(VOLUME_STATISTICS_BATCHES))
        on_device = (_to_device(b, self.device) if b.device.type == "cpu" else b for b in batches)
        refresh_batch_norm_statistics(self.model.network, on_device)

    def _validation_due(self) -> bool:
        """Validate at most about a tenth of the time: after the first epoch, then once the training
        since the last validation took nine times as long as validating."""
        return self.validated_at == 0 or self.trained_since_validation >= 9 * self.validation_seconds

    def _finish(self, message: str) -> TrainingEvent:
        if self.data.validation is None or self.best.score == -math.inf:
            self.best.keep_current()  # nothing to choose by: the weights at the end of the schedule
        self.best.restore()
        if self.start_weights is not None:
            mix_weights(self.model.network, self.start_weights, FINE_TUNE_MIX)
            message += (
                f"; the weights end {FINE_TUNE_MIX:.0%} of the way from the starting model's to the fine-tuned ones"
            )
        self.model.network.eval()
        self.finished = True
        discriminator = self.best.modules.get("discriminator")
        if discriminator is not None:
            self.model.discriminator_state = {k: v.cpu() for k, v in discriminator.state_dict().items()}
        dices = [h["val_dice"] for h in self.model.history if h.get("val_dice") is not None]
        if dices:
            message += f"; best validation Dice {max(dices):.3f}"
        return self._event(EventKind.FINISHED, epoch=self.epochs_done, message=message)

    def _event(self, kind: EventKind, **fields: Any) -> TrainingEvent:
        elapsed = 0.0 if kind == EventKind.START else time.monotonic() - self.start
        fields.setdefault("step", self.steps_done)
        return TrainingEvent(
            kind=kind,
            total_steps=self.total_steps,
            epochs=self.config.epochs,
            progress=self.progress(),
            elapsed=elapsed,
            remaining=self._remaining(elapsed),
            device=self.device_name,
            **fields,
        )

    def _remaining(self, elapsed: float) -> float | None:
        """Seconds left: until the time budget or, at the pace so far, the last step, whichever is sooner."""
        by_pace = math.inf
        if self.total_steps is not None and self.steps_done:
            by_pace = (self.total_steps - self.steps_done) * elapsed / self.steps_done
        remaining = min(self.budget - elapsed, by_pace)
        return max(0.0, remaining) if math.isfinite(remaining) else None

    def _preview(self) -> np.ndarray | None:
        """The current network's labels for what the viewer shows (see ``preview.preview_labels``)."""
        assert self.preview_source is not None
        started = time.monotonic()
        try:
            return preview_labels(self.model, self.preview_source, self.dims, str(self.device))
        finally:
            self.preview_seconds, self.trained_since_preview = time.monotonic() - started, 0.0


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; on a GPU from page-locked memory, so the copy does not wait for queued work."""
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _settled(
    config: TrainingConfig | None, resume: TrainedModel | None, start_from: TrainedModel | None
) -> tuple[TrainingConfig, TrainedModel | None, bool]:
    """A checked copy of the settings, with what the model a run builds on fixes (its network, and
    for fine-tuning the gentler rate ``FINE_TUNE_RATE`` unless a rate is given), that model, and
    whether the run fine-tunes (it starts from a model, or continues a fine-tuning run)."""
    config = copy.copy(config or TrainingConfig())
    if resume is not None and start_from is not None:
        raise InputError("give a model to continue or a model to start from, not both")
    base = resume if resume is not None else start_from  # the model whose network, classes and scaling go on
    if base is not None:
        config.model, config.width, config.depth = base.architecture, base.config.width, base.config.depth
    fine_tuning = start_from is not None or (resume is not None and resume.fine_tuned)
    if fine_tuning and config.learning_rate is None:
        config.learning_rate = config.architecture.learning_rate * FINE_TUNE_RATE
    config.check()
    return config, base, fine_tuning
