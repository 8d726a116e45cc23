"""Batched data augmentation applied identically to images and label targets.

The whole batch is transformed with a handful of tensor operations on the training device, so
augmentation costs little next to the network step (see ``benchmarks/``): flips and 90° rotations,
the U-Net paper's elastic deformation (random displacements on a coarse 3×3 grid, smoothly
interpolated), and mild brightness / contrast / gamma changes of the image only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import IGNORE


def augment_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    elastic_strength: float = 0.06,
    intensity: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly transform a batch of images (B, C, H, W) and class targets (B, H, W).

    Parameters
    ----------
    images, targets : torch.Tensor
        Square patches; targets hold class indices with ``IGNORE`` for unannotated pixels.
    generator : torch.Generator
        Source of randomness (CPU), so a seed reproduces the run.
    elastic_strength : float
        Standard deviation of the coarse-grid displacements, as a fraction of the patch side.
    intensity : float
        Scale of the random gain, offset and gamma applied to the image.
    """
    batch = images.shape[0]
    device = images.device

    def uniform(*shape):
        return torch.rand(*shape, generator=generator).to(device)

    # Flips and 90° rotations: exact, so labels stay crisp.
    flip_y, flip_x, turns = uniform(batch) < 0.5, uniform(batch) < 0.5, (uniform(batch) * 4).long()
    images, targets = images.clone(), targets.clone()
    for i in range(batch):
        dims = [d for d, flip in ((-2, flip_y[i]), (-1, flip_x[i])) if flip]
        if dims:
            images[i], targets[i] = images[i].flip(dims), targets[i].flip(dims)
        if turns[i]:
            images[i] = images[i].rot90(int(turns[i]), dims=(-2, -1))
            targets[i] = targets[i].rot90(int(turns[i]), dims=(-2, -1))

    if elastic_strength > 0:
        images, targets = _elastic(images, targets, generator, elastic_strength)

    if intensity > 0:
        gain = 1 + intensity * (2 * uniform(batch, 1, 1, 1) - 1)
        offset = intensity * (2 * uniform(batch, 1, 1, 1) - 1)
        gamma = torch.exp(intensity * (2 * uniform(batch, 1, 1, 1) - 1))
        images = images.clamp_min(0).pow(gamma) * gain + offset
    return images, targets


def _elastic(images, targets, generator, strength):
    """Warp with displacements drawn on a 3×3 grid and upsampled bicubically (Ronneberger et al. 2015)."""
    batch, _, height, width = images.shape
    coarse = torch.randn(batch, 2, 3, 3, generator=generator).to(images.device) * (2 * strength)
    flow = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
    ys = torch.linspace(-1, 1, height, device=images.device)
    xs = torch.linspace(-1, 1, width, device=images.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    grid = base.unsqueeze(0) + flow.permute(0, 2, 3, 1)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    labels = F.grid_sample(
        targets.unsqueeze(1).float(), grid, mode="nearest", padding_mode="border", align_corners=True
    )
    return warped, labels.squeeze(1).round().long().clamp_min(IGNORE)
