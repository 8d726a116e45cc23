"""Batched data augmentation applied identically to images and label targets.

The whole batch is transformed by one fused resampling on the training device, so augmentation
costs little next to the network step (see ``benchmarks/``): a random flip and 90° rotation, a
random zoom (so objects are seen at a range of sizes) and the U-Net paper's elastic deformation
(random displacements on a coarse 3×3 grid, smoothly interpolated) are folded into a single
sampling grid, read bilinearly for the image and nearest for the labels; then mild brightness /
contrast / gamma changes and Gaussian noise of the image only. Random numbers are drawn on the CPU,
so a GPU never waits on a Python decision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import IGNORE

# The eight symmetries of a square (flips and 90° rotations) as 2×2 matrices acting on (x, y).
SYMMETRIES = torch.tensor(
    [
        [[1, 0], [0, 1]],
        [[0, -1], [1, 0]],
        [[-1, 0], [0, -1]],
        [[0, 1], [-1, 0]],
        [[-1, 0], [0, 1]],
        [[0, 1], [1, 0]],
        [[1, 0], [0, -1]],
        [[0, -1], [-1, 0]],
    ],
    dtype=torch.float32,
)


def augment_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    elastic_strength: float = 0.06,
    intensity: float = 0.1,
    zoom: float = 1.25,
    noise: float = 0.02,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Randomly transform a batch of images (B, C, H, W), class targets (B, H, W) and, if given,
    per-pixel loss weights (B, H, W, moved with the targets). Returns the three (weights None if
    not given).

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
    zoom : float
        Patches are magnified or shrunk by a random factor between 1/zoom and zoom (log-uniform),
        so a model sees its objects at a range of sizes.
    noise : float
        Largest standard deviation of the Gaussian noise added to the (normalised) image.
    """
    batch, _, height, width = images.shape
    device = images.device
    symmetry = SYMMETRIES[torch.randint(0, len(SYMMETRIES), (batch,), generator=generator)]
    if zoom > 1:
        factors = torch.exp((2 * torch.rand(batch, generator=generator) - 1) * torch.log(torch.tensor(zoom)))
        symmetry = symmetry * factors.view(batch, 1, 1)
    coarse = torch.randn(batch, 2, 3, 3, generator=generator) * (2 * elastic_strength)
    jitter = intensity * (2 * torch.rand(batch, 3, generator=generator) - 1)
    sigma = noise * torch.rand(batch, 1, generator=generator) if noise > 0 else torch.zeros(batch, 1)
    # One small copy to the device for all the random parameters; from page-locked memory on a
    # GPU, so it is queued rather than waiting for the work already queued.
    params = torch.cat([symmetry.flatten(1), coarse.flatten(1), jitter, sigma], dim=1)
    if device.type == "cuda":
        params = params.pin_memory()
    params = params.to(device, non_blocking=True)
    symmetry, coarse = params[:, :4].view(batch, 2, 2), params[:, 4:22].view(batch, 2, 3, 3)
    gain, offset, gamma = params[:, 22:25].T.reshape(3, batch, 1, 1, 1)

    grid = sampling_grid(symmetry, coarse, height, width, elastic_strength > 0)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    labels = F.grid_sample(
        targets.unsqueeze(1).float(), grid, mode="nearest", padding_mode="border", align_corners=True
    )
    targets = labels.squeeze(1).round().long().clamp_min(IGNORE)
    if weights is not None:
        weights = F.grid_sample(
            weights.unsqueeze(1), grid, mode="nearest", padding_mode="border", align_corners=True
        ).squeeze(1)
    if intensity > 0:
        images = images.clamp_min(0).pow(torch.exp(gamma)) * (1 + gain) + offset
    if noise > 0:
        images = images + params[:, 25].view(batch, 1, 1, 1) * gaussian_field(images, generator)
    return images, targets, weights


def gaussian_field(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``images``: drawn on the CPU there; on a GPU drawn on the
    device by a generator seeded from ``generator`` (no host work or copy the size of the batch)."""
    if images.device.type == "cpu":
        return torch.randn(images.shape, generator=generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    device_generator = torch.Generator(images.device).manual_seed(seed)
    return torch.randn(images.shape, generator=device_generator, device=images.device)


def sampling_grid(matrices: torch.Tensor, coarse: torch.Tensor, height: int, width: int, elastic: bool) -> torch.Tensor:
    """(B, H, W, 2) grid: each output pixel's (x, y) in the input, symmetry then elastic warp.

    The symmetry maps pixel centres onto pixel centres, so without the warp labels stay exact.
    """
    ys = torch.linspace(-1, 1, height, device=matrices.device)
    xs = torch.linspace(-1, 1, width, device=matrices.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    grid = torch.einsum("bij,hwj->bhwi", matrices, base)
    if elastic:
        # Warp with displacements drawn on a 3×3 grid and upsampled bicubically (Ronneberger et al. 2015).
        flow = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
        grid = grid + flow.permute(0, 2, 3, 1)
    return grid
