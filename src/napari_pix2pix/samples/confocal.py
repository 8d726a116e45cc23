"""A deterministic synthetic confocal stack of stained nuclei with exact instance labels, for the 3D
network: ellipsoids placed in micrometres, so that anisotropic voxels make them flatter along z, as in
real stacks; some touching, some dim, blurred more along z, with photon and camera noise."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import SupportsIndex

import numpy as np
from scipy import ndimage

from .synthetic import check_seed, finite_float

# Fraction of the volume the nuclei fill (before they are cut by the borders).
_NUCLEUS_FRACTION = 0.15
# Radii vary by up to this fraction (±25 %); each semi-axis by ±20 % more around that radius.
_SIZE_SPREAD = 0.25
_ASPECT_SPREAD = 0.2
# Fraction of the nuclei placed against one placed before (touching, slightly overlapping).
_TOUCHING_FRACTION = 0.2
# Along the line joining two centres, the centres are at least this fraction of the sum of the two
# radii apart (random nuclei), or exactly this fraction (nuclei placed touching).
_MIN_GAP = 0.85
_TOUCH_GAP = 0.92
# Candidate centres tried per nucleus before giving up on filling the volume.
_PLACEMENT_TRIES = 30
# Brightness: log-normal spread between nuclei, and the fraction of dim nuclei with their range.
_BRIGHTNESS_SD = 0.2
_DIM_FRACTION = 0.1
_DIM_BRIGHTNESS = (0.25, 0.45)
# Chromatin texture: smooth noise over diameter / 16, relative standard deviation.
_CHROMATIN_SCALE = 1 / 16
_CHROMATIN_SD = 0.3
# Heterochromatin at the envelope: the rim is this much brighter than the centre.
_RIM_CONTRAST = 0.25
# Confocal-like point spread function, Gaussian sigma in micrometres (z, y, x): about three times
# longer along the optical axis than across.
_PSF_SIGMA_UM = (0.6, 0.2, 0.2)
# Detector: photons of an average nucleus and of the background, camera offset and read noise.
_SIGNAL_PHOTONS = 200.0
_BACKGROUND_PHOTONS = 15.0
_CAMERA_OFFSET = 100.0
_READ_NOISE_SD = 3.0
_MAX_NUCLEI = int(np.iinfo(np.uint16).max)


def nuclei_volume(
    shape: tuple[int, int, int] = (48, 128, 128),
    voxel_size: tuple[float, float, float] = (0.5, 0.25, 0.25),
    diameter_um: float = 4.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a fluorescence-like stack of nuclei with instance ground truth.

    Nuclei are randomly oriented ellipsoids placed in physical units
    (micrometres), so with anisotropic voxels they are flatter along z in
    voxels than in y and x.  Some touch each other, a few are dim, and
    each has a chromatin-like texture and a slightly brighter rim.  The
    image is blurred by an anisotropic Gaussian (stronger along z, like a
    confocal point spread function) and gets a background offset, photon
    (Poisson) noise and camera read (Gaussian) noise.

    Parameters
    ----------
    shape : tuple of int
        ``(Z, Y, X)`` of the stack.
    voxel_size : tuple of float
        ``(z, y, x)`` size of a voxel in micrometres.  The default,
        twice as deep as wide, makes nuclei about 2 times flatter along z
        in voxels.
    diameter_um : float
        Typical nucleus diameter in micrometres; single nuclei vary by
        ±25 % and are up to ±20 % longer or shorter along each axis.
        Must be at least twice the largest voxel side.
    seed : int
        Non-negative seed of the random generator; the same seed always
        gives the same arrays.

    Returns
    -------
    image : numpy.ndarray of uint16
        The fluorescence-like image, shape `shape`.
    labels : numpy.ndarray of uint16
        Nucleus id 1..N (consecutive), 0 for background.  Touching
        nuclei keep their own ids: a voxel inside two ellipsoids belongs
        to the one it is relatively deeper in.

    Raises
    ------
    ValueError
        If `shape`, `voxel_size`, `diameter_um` or `seed` is invalid, or
        the volume would hold more nuclei than uint16 labels can number.

    Examples
    --------
    >>> image, labels = nuclei_volume((16, 48, 48), seed=1)
    >>> image.shape, image.dtype, labels.dtype
    ((16, 48, 48), dtype('uint16'), dtype('uint16'))
    """
    volume_shape = _check_volume_shape(shape)
    voxel = _check_voxel_size(voxel_size)
    diameter_um = finite_float(diameter_um, "diameter_um")
    if diameter_um < 2 * voxel.max():
        raise ValueError(
            f"diameter_um must be at least twice the largest voxel side ({2 * voxel.max():g}), got {diameter_um:g}"
        )
    seed = check_seed(seed)

    rng = np.random.default_rng(seed)
    extent = np.array(volume_shape) * voxel
    centres, forms = _place_nuclei(rng, extent, diameter_um / 2)
    labels, depth = _draw_nuclei(centres, forms, volume_shape, voxel)
    image = _render_nuclei(rng, labels, depth, voxel, diameter_um)
    return image, labels


def _check_volume_shape(shape: Iterable[SupportsIndex]) -> tuple[int, int, int]:
    """Return `shape` as a 3-tuple of positive ints ``(Z, Y, X)``."""
    message = f"shape must be 3 positive integers (Z, Y, X), got {shape!r}"
    try:
        dims = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise ValueError(message) from None
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(message)
    return dims[0], dims[1], dims[2]


def _check_voxel_size(voxel_size: Iterable[float]) -> np.ndarray:
    """Return `voxel_size` as three positive finite floats ``(z, y, x)``."""
    message = f"voxel_size must be 3 positive numbers (z, y, x), got {voxel_size!r}"
    try:
        sizes = [finite_float(v, "voxel_size") for v in voxel_size]
    except TypeError:
        raise ValueError(message) from None
    if len(sizes) != 3 or min(sizes) <= 0:
        raise ValueError(message)
    return np.array(sizes)


def _random_ellipsoid(rng: np.random.Generator, radius: float) -> np.ndarray:
    """Return the ``(3, 3)`` form ``A`` of a randomly oriented ellipsoid, ``q·Aq <= 1`` inside.

    The semi-axes vary around ``radius`` (see ``_SIZE_SPREAD`` and
    ``_ASPECT_SPREAD``); the orientation is uniform over rotations.
    """
    size = radius * rng.uniform(1 - _SIZE_SPREAD, 1 + _SIZE_SPREAD)
    aspect = rng.uniform(1 - _ASPECT_SPREAD, 1 + _ASPECT_SPREAD, 3)
    semi_axes = size * aspect / np.prod(aspect) ** (1 / 3)
    # QR of a Gaussian matrix, signs fixed by R's diagonal, is a uniform random rotation.
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.diag(r))
    return (rotation / semi_axes**2) @ rotation.T


def _radius_along(forms: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Distance from the centre to the surface of ellipsoid(s) `forms` along unit `directions`."""
    return 1 / np.sqrt(np.einsum("...i,...ij,...j->...", directions, forms, directions))


def _place_nuclei(rng: np.random.Generator, extent: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Return centres ``(N, 3)`` in micrometres and forms ``(N, 3, 3)`` of non-crowding nuclei.

    Candidates are either uniform in the volume or placed against a
    nucleus placed before (``_TOUCHING_FRACTION`` of them), so that some
    nuclei touch; a candidate closer to any other nucleus than
    ``_MIN_GAP`` of the two radii is dropped.
    """
    target = max(1, round(_NUCLEUS_FRACTION * float(np.prod(extent)) / (4 / 3 * math.pi * radius**3)))
    if target > _MAX_NUCLEI:
        raise ValueError(f"the volume would hold about {target} nuclei, more than uint16 labels allow: shrink it")
    centres, forms = np.empty((target, 3)), np.empty((target, 3, 3))
    count = 0
    for _ in range(_PLACEMENT_TRIES * target):
        if count == target:
            break
        form = _random_ellipsoid(rng, radius)
        if count and rng.random() < _TOUCHING_FRACTION:
            partner = rng.integers(count)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            reach = _radius_along(forms[partner], direction) + _radius_along(form, direction)
            centre = centres[partner] + _TOUCH_GAP * reach * direction
            if np.any(centre < 0) or np.any(centre >= extent):
                continue
        else:
            centre = rng.uniform(0, extent)
        offsets = centres[:count] - centre
        distances = np.maximum(np.linalg.norm(offsets, axis=1), 1e-9)
        directions = offsets / distances[:, None]
        reach = _radius_along(forms[:count], directions) + _radius_along(form, directions)
        if np.any(distances < _MIN_GAP * reach):
            continue
        centres[count], forms[count] = centre, form
        count += 1
    return centres[:count], forms[:count]


def _draw_nuclei(
    centres: np.ndarray, forms: np.ndarray, shape: tuple[int, int, int], voxel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Voxelise the ellipsoids: labels ``(Z, Y, X)`` uint16 1..N and the squared normalised depth.

    Each ellipsoid is evaluated only in its bounding box.  A voxel inside
    several ellipsoids goes to the one with the smallest ``q·Aq`` (the one
    it is relatively deepest in), so touching nuclei meet along a surface
    and never overlap.  The depth, ``q·Aq`` of the owner (0 at its centre,
    1 on its surface, 0 in the background), shapes the rendered intensity.
    """
    labels = np.zeros(shape, dtype=np.uint16)
    depth = np.full(shape, np.inf, dtype=np.float32)
    for index, (centre, form) in enumerate(zip(centres, forms), start=1):
        # Half-widths of the bounding box of the ellipsoid q·Aq <= 1: sqrt of diag(A⁻¹).
        half = np.sqrt(np.diag(np.linalg.inv(form)))
        low = np.maximum(np.floor((centre - half) / voxel).astype(int), 0)
        high = np.minimum(np.ceil((centre + half) / voxel).astype(int) + 1, shape)
        if np.any(high <= low):
            continue
        dz, dy, dx = (np.arange(lo, hi) * size - c for lo, hi, size, c in zip(low, high, voxel, centre))
        dz, dy, dx = dz[:, None, None], dy[None, :, None], dx[None, None, :]
        inside = (
            form[0, 0] * dz**2
            + form[1, 1] * dy**2
            + form[2, 2] * dx**2
            + 2 * (form[0, 1] * dz * dy + form[0, 2] * dz * dx + form[1, 2] * dy * dx)
        ).astype(np.float32)
        box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
        owned = (inside <= 1) & (inside < depth[box])
        labels[box][owned] = index
        depth[box][owned] = inside[owned]
    depth[labels == 0] = 0
    # Nuclei that no voxel centre falls in (tiny caps at the border) are dropped: ids stay 1..N.
    present = np.bincount(labels.ravel(), minlength=len(centres) + 1) > 0
    present[0] = False
    lookup = np.cumsum(present).astype(np.uint16)
    return lookup[labels], depth


def _render_nuclei(
    rng: np.random.Generator, labels: np.ndarray, depth: np.ndarray, voxel: np.ndarray, diameter: float
) -> np.ndarray:
    """Paint the fluorescence-like uint16 image from the labels and depth."""
    count = int(labels.max())
    brightness = rng.lognormal(0.0, _BRIGHTNESS_SD, count + 1).astype(np.float32)
    dim = rng.choice(count, size=round(_DIM_FRACTION * count), replace=False) + 1
    brightness[dim] *= rng.uniform(*_DIM_BRIGHTNESS, len(dim)).astype(np.float32)
    brightness[0] = 0
    chromatin = rng.standard_normal(labels.shape, dtype=np.float32)
    chromatin = ndimage.gaussian_filter(chromatin, sigma=tuple(_CHROMATIN_SCALE * diameter / voxel))
    chromatin *= _CHROMATIN_SD / max(float(chromatin.std()), 1e-6)
    signal = brightness[labels] * (1 - _RIM_CONTRAST + _RIM_CONTRAST * depth) * np.maximum(1 + chromatin, 0.2)
    signal = ndimage.gaussian_filter(signal, sigma=tuple(np.array(_PSF_SIGMA_UM) / voxel))
    photons = rng.poisson(_BACKGROUND_PHOTONS + _SIGNAL_PHOTONS * np.maximum(signal, 0))
    image = photons + _CAMERA_OFFSET + rng.normal(0, _READ_NOISE_SD, labels.shape)
    return np.clip(np.rint(image), 0, np.iinfo(np.uint16).max).astype(np.uint16)
