"""The pieces one training step is made of: mixed precision, the segmentation loss, one step object
per kind of training (``SegmentationStep``, ``Pix2PixStep``), the learning-rate schedule and the
copy of the best weights. ``training.Trainer`` puts them together."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import amp_dtype, autocast, memory_format
from ..labels.encodings import IGNORE
from ..models.networks import ModelConfig, build_discriminator, crop
from ..models.trained import TrainedModel
from .config import TrainingConfig

# ----------------------------------------------------------------------------- steps


class Precision:
    """Mixed precision on CUDA (with a gradient scaler for float16); plain float32 elsewhere."""

    def __init__(self, device: torch.device, mixed_precision: bool):
        self.device = device
        self.enabled = mixed_precision and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and amp_dtype(device) == torch.float16)

    def autocast(self) -> AbstractContextManager[None]:
        return autocast(self.device, self.enabled)


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy plus soft Dice over annotated pixels (Dice keeps thin or rare classes alive).

    ``weights`` (B, H, W), when given, weigh each pixel's cross-entropy (the boundary weight map);
    the weighted sum is divided by the weights' sum over the annotated pixels, so the loss keeps its scale.
    """
    annotated = targets != IGNORE
    # Sum over the annotated pixels / their count, not a branch on ``annotated.any()``: the same
    # mean, 0 when nothing is annotated, and no wait for the device in the middle of the step.
    if weights is None:
        ce = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum") / annotated.sum().clamp_min(1)
    else:
        per_pixel = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")
        weights = weights * annotated
        ce = (per_pixel * weights).sum() / weights.sum().clamp_min(1e-6)
    probabilities = torch.softmax(logits, dim=1) * annotated.unsqueeze(1)
    one_hot = F.one_hot(targets.clamp_min(0), logits.shape[1]).movedim(-1, 1) * annotated.unsqueeze(1)
    pixels = (0, *range(2, logits.dim()))  # every axis but the classes: (B, H, W) or (B, Z, Y, X)
    intersection = (probabilities * one_hot).sum(dim=pixels)
    denominator = probabilities.sum(dim=pixels) + one_hot.sum(dim=pixels)
    dice = (2 * intersection + 1.0) / (denominator + 1.0)
    return ce + (1 - dice.mean())


class SegmentationStep:
    """One supervised update of ``network``: ``segmentation_loss`` on its (cropped) output."""

    def __init__(
        self,
        network: nn.Module,
        config: TrainingConfig,
        precision: Precision,
        wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    ):
        self.network = network
        self.forward = wrap(network)  # DistributedDataParallel in a torchrun group
        self.precision = precision
        self.optimiser = torch.optim.Adam(network.parameters(), lr=config.lr, betas=config.architecture.betas)
        self.modules: dict[str, nn.Module] = {"network": network}
        self.optimisers = [self.optimiser]

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        with self.precision.autocast():
            logits = self.forward(images)
        weights = None if weights is None else crop(weights, logits.shape)
        loss = segmentation_loss(logits.float(), crop(targets, logits.shape), weights)
        self.optimiser.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        scaler.scale(loss).backward()
        scaler.step(self.optimiser)
        scaler.update()
        return {"loss": loss.detach()}  # read by the trainer when it is ready (no wait here)


class Pix2PixStep:
    """One pix2pix update: the conditional-GAN loss plus λ·L1 between class maps (Isola et al. 2017)."""

    def __init__(
        self,
        generator: nn.Module,
        model_config: ModelConfig,
        config: TrainingConfig,
        precision: Precision,
        resume: TrainedModel | None,
    ):
        self.generator = generator
        self.precision = precision
        self.n_classes = model_config.out_channels
        self.l1_weight = config.l1_weight
        betas = config.architecture.betas
        self.optimiser = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas)
        device = precision.device
        self.discriminator = build_discriminator(model_config).to(device).to(memory_format=memory_format(device))
        if resume is not None and resume.discriminator_state is not None:
            self.discriminator.load_state_dict(resume.discriminator_state)
        self.d_optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.modules = {"network": generator, "discriminator": self.discriminator}
        self.optimisers = [self.optimiser, self.d_optimiser]

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        annotated = (targets != IGNORE).unsqueeze(1)
        real = F.one_hot(targets.clamp_min(0), self.n_classes).permute(0, 3, 1, 2).float()
        with self.precision.autocast():
            fake = torch.softmax(self.generator(images).float(), dim=1)
        # Where nothing is annotated the "real" map is the generator's own, so D learns nothing there.
        real = torch.where(annotated, real, fake.detach())
        d_loss = 0.5 * (self._judge(images, real, True) + self._judge(images, fake.detach(), False))
        self._update(d_loss, self.d_optimiser)
        # λ·L1 over the annotated pixels, each weighed by the boundary weight map when it is on.
        weighed = annotated if weights is None else annotated * weights.unsqueeze(1)
        l1 = (torch.abs(fake - real) * weighed).sum() / (weighed.sum() * self.n_classes).clamp_min(1e-6)
        g_loss = self._judge(images, fake, True) + self.l1_weight * l1
        self._update(g_loss, self.optimiser)
        self.precision.scaler.update()
        return {"loss": l1.detach(), "g_loss": g_loss.detach(), "d_loss": d_loss.detach()}

    def _judge(self, images: torch.Tensor, maps: torch.Tensor, real: bool) -> torch.Tensor:
        """The discriminator's loss for calling ``maps`` real (or fake)."""
        with self.precision.autocast():
            logits = self.discriminator(images, maps).float()
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))

    def _update(self, loss: torch.Tensor, optimiser: torch.optim.Optimizer) -> None:
        optimiser.zero_grad(set_to_none=True)
        self.precision.scaler.scale(loss).backward()
        self.precision.scaler.step(optimiser)


# ----------------------------------------------------------------------------- bookkeeping


class LearningRateSchedule:
    """Linear warm-up, then cosine decay to ``floor`` × the base rate at the end of the run.

    Keyed on progress in [0, 1] (elapsed time over the budget, or steps over the step limit), since
    the number of steps a time budget allows is not known in advance.
    """

    def __init__(self, optimisers: Sequence[torch.optim.Optimizer], warmup: float = 0.03, floor: float = 0.02):
        self.optimisers = optimisers
        self.base = [[group["lr"] for group in optimiser.param_groups] for optimiser in optimisers]
        self.warmup, self.floor = warmup, floor

    def factor(self, progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        if progress < self.warmup:
            return self.floor + (1 - self.floor) * progress / self.warmup
        decay = (progress - self.warmup) / (1 - self.warmup)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * decay))

    def update(self, progress: float) -> None:
        factor = self.factor(progress)
        for optimiser, rates in zip(self.optimisers, self.base):
            for group, rate in zip(optimiser.param_groups, rates):
                group["lr"] = rate * factor


def _batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def keep_batch_norm_statistics(network: nn.Module) -> None:
    """Put ``network``'s batch-norm layers in evaluation mode (after ``network.train()``): they
    normalise with, and keep, the running statistics the model brought, while the rest trains."""
    for module in _batch_norms(network):
        module.eval()


def refresh_batch_norm_statistics(network: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set ``network``'s batch-norm running statistics to the plain mean over ``batches`` (forward
    passes in training mode, no gradients): "precise batch norm" (Wu & Johnson 2021, *Rethinking
    "Batch" in BatchNorm*), in place of the moving average of the augmented training batches."""
    norms = _batch_norms(network)
    if not norms:
        return
    was_training, momenta = network.training, [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average over the batches
    network.train()
    try:
        with torch.no_grad():
            for batch in batches:
                network(batch)
    finally:
        for module, momentum in zip(norms, momenta):
            module.momentum = momentum
        network.train(was_training)


def copy_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s weights and buffers, detached from it."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def mix_weights(network: nn.Module, start: dict[str, torch.Tensor], share: float) -> None:
    """Set each floating-point tensor of ``network`` to ``start + share · (current − start)``: ``share``
    of the way from the weights a run started from to those it reached (WiSE-FT, Wortsman et al. 2022)."""
    with torch.no_grad():
        for name, value in network.state_dict().items():  # the tensors themselves, changed in place
            if value.is_floating_point():
                origin = start[name].to(value.device)
                value.copy_(origin + share * (value - origin))


class BestWeights:
    """A copy of the best weights seen so far (by score), to restore at the end or after a failure."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules
        self.score = -math.inf
        self.state = self._snapshot()

    def _snapshot(self) -> dict:
        return {name: copy_weights(module) for name, module in self.modules.items()}

    def offer(self, score: float) -> None:
        if score > self.score:
            self.score, self.state = score, self._snapshot()

    def keep_current(self) -> None:
        self.state = self._snapshot()

    def restore(self) -> None:
        for name, module in self.modules.items():
            module.load_state_dict(self.state[name])
