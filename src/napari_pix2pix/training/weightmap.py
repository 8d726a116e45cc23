"""The U-Net paper's boundary weight map (Ronneberger et al. 2015, eq. 2), for the loss:

    w(x) = 1 + w₀ · exp(−(d₁(x) + d₂(x))² / 2σ²)

where d₁ and d₂ are the distances from pixel x to the nearest and the second nearest object. The
thin gaps between two objects (a membrane between two cells, the background between touching
nuclei) weigh up to 1 + w₀, so the network is pushed to keep them open; elsewhere the weight is 1.
The paper's class-balancing term w_c is left at 1: it would trade pixel accuracy for thicker
background everywhere.

Computed once per training slice (or volume, ``volume_boundary_weights``), on the CPU, with one
distance transform per object restricted to its bounding box grown by 3σ (beyond which the term is
below w₀·e⁻¹⁸). In a volume the distances are physical: σ is 5 in-plane pixels, and a step along z
counts as the z spacing over the in-plane spacing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SIGMA = 5.0  # pixels, as in the paper


def boundary_weights(
    targets: np.ndarray, object_classes: tuple[int, ...], weight: float, sigma: float = SIGMA
) -> np.ndarray:
    """(N, H, W) float32 weights for class targets (N, H, W); objects are the 4-connected regions of
    ``object_classes`` in each slice."""
    weights = np.ones(targets.shape, np.float32)
    if weight <= 0:
        return weights
    for plane, out in zip(targets, weights):
        _add_gap_weights(out, ndi.label(np.isin(plane, object_classes))[0], weight, sigma, (1.0, 1.0))
    return weights


def volume_boundary_weights(
    targets: np.ndarray,
    object_classes: tuple[int, ...],
    weight: float,
    voxel_size: tuple[float, float, float] | None,
    sigma: float = SIGMA,
) -> np.ndarray:
    """(Z, Y, X) float32 weights for the class targets of a volume; objects are the face-connected
    regions of ``object_classes`` in 3D, distances measured in in-plane pixels (``voxel_size``
    (z, y, x) tells how long a step along z is; isotropic when None)."""
    weights = np.ones(targets.shape, np.float32)
    if weight > 0:
        z, y, x = voxel_size if voxel_size is not None else (1.0, 1.0, 1.0)
        _add_gap_weights(weights, ndi.label(np.isin(targets, object_classes))[0], weight, sigma, (z / y, 1.0, x / y))
    return weights


def _add_gap_weights(
    out: np.ndarray, objects: np.ndarray, weight: float, sigma: float, sampling: tuple[float, ...]
) -> None:
    """Add w₀·exp(−(d₁ + d₂)²/2σ²) to ``out`` where two of the labelled ``objects`` are near."""
    if objects.max() < 2:
        return
    d1, d2 = _two_nearest(objects, 3 * sigma, sampling)
    gap = d1 + d2
    near = np.isfinite(gap)
    out[near] += weight * np.exp(-(gap[near] ** 2) / (2 * sigma**2))


def _two_nearest(objects: np.ndarray, reach: float, sampling: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second nearest object (inf farther than about ``reach``,
    in the units ``sampling`` gives each axis's step)."""
    d1 = np.full(objects.shape, np.inf, np.float32)
    d2 = np.full(objects.shape, np.inf, np.float32)
    margins = [int(np.ceil(reach / step)) for step in sampling]
    for index, box in enumerate(ndi.find_objects(objects), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(b.start - m, 0), min(b.stop + m, n)) for b, m, n in zip(box, margins, objects.shape))
        distance = ndi.distance_transform_edt(objects[grown] != index, sampling=sampling).astype(np.float32)
        first, second = d1[grown], d2[grown]
        d2[grown] = np.minimum(second, np.maximum(first, distance))
        d1[grown] = np.minimum(first, distance)
    return d1, d2
