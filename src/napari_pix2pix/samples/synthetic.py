"""A deterministic synthetic serial-section electron microscopy (EM) volume.

`membrane_volume` imitates the look of the ISBI 2012 serial-section EM stack:
tightly packed cells separated by thin dark membranes, grey textured
cytoplasm with a few small dark organelles, blur and noise.  It comes with
exact membrane and cell ground truth, so the membrane-segmentation workflow
can be demonstrated and tested without downloading data.

Cells are the sections of a 3D Voronoi tessellation: every voxel belongs to
its nearest seed point.  Because the tessellation is 3D, consecutive slices
are related like real serial sections: outlines drift, cells appear, split
and vanish smoothly.

The synthetic 3D nuclei are in ``confocal.py``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import SupportsIndex

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.segmentation import find_boundaries

# Grey levels (0-255) of the clean image before blur and noise.
_CYTOPLASM = 170.0
_MEMBRANE = 15.0
_ORGANELLE = 70.0
# Standard deviations of the random grey-level variations.
_CELL_BRIGHTNESS_SD = 10.0
_SECTION_BRIGHTNESS_SD = 4.0
_FINE_TEXTURE_SD = 9.0
_COARSE_TEXTURE_SD = 7.0
_NOISE_SD = 10.0
_BLUR_SIGMA = 1.0
# Smallest cell size that still leaves interior pixels between 2-px membranes.
_MIN_CELL_SIZE = 6.0
# Cells are this many times longer along z than across, like neurites running
# through the sections, so consecutive sections look alike.
_Z_ELONGATION = 6.0
# Number of sine waves in the smooth random field that bends the membranes.
_WOBBLE_MODES = 8
# Root-mean-square displacement of that field along each axis, in units of
# the cell size.
_WOBBLE_RMS = 0.06
# Mean number of dark organelles per cell-sized volume (before elongation).
_ORGANELLES_PER_CELL = 2.0


def membrane_volume(
    shape: tuple[int, ...] = (8, 256, 256),
    cell_size: float = 40.0,
    z_step: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate an EM-like stack of cells with membrane and cell ground truth.

    Parameters
    ----------
    shape : tuple of int
        ``(Z, Y, X)`` for a stack of sections or ``(Y, X)`` for one section.
    cell_size : float
        Typical cell diameter in pixels (the spacing of the Voronoi seeds).
        Must be at least 6.
    z_step : float
        Distance between consecutive sections, as a fraction of
        `cell_size`.  Cells are elongated along z (about 6 cell sizes
        long, like neurites crossing the sections), so with the default
        0.25 most membranes move by at most a pixel between neighbouring
        slices, while slices 8 apart differ clearly; values around 6 give
        unrelated neighbouring slices.  Ignored for a 2D `shape` but
        still validated.
    seed : int
        Non-negative seed of the random generator; the same seed always
        gives the same arrays.

    Returns
    -------
    image : numpy.ndarray of uint8
        The EM-like grey-level image, shape `shape`.
    membranes : numpy.ndarray of uint8
        1 on membranes (about 2 pixels wide), 0 inside cells.
    cells : numpy.ndarray of int32
        Cell id 1..N, consistent across slices (a cell keeps its id in every
        section it crosses), 0 on membranes.

    Raises
    ------
    ValueError
        If `shape`, `cell_size`, `z_step` or `seed` is invalid.

    Examples
    --------
    >>> image, membranes, cells = membrane_volume((2, 64, 64), seed=1)
    >>> image.shape, image.dtype, int(membranes.max())
    ((2, 64, 64), dtype('uint8'), 1)
    """
    volume_shape, is_2d = _check_shape(shape)
    cell_size = finite_float(cell_size, "cell_size")
    if cell_size < _MIN_CELL_SIZE:
        raise ValueError(f"cell_size must be >= {_MIN_CELL_SIZE:g} pixels, got {cell_size:g}")
    z_step = finite_float(z_step, "z_step")
    if z_step <= 0:
        raise ValueError(f"z_step must be > 0, got {z_step:g}")
    seed = check_seed(seed)

    rng = np.random.default_rng(seed)
    # Compressing z is the same as stretching an isotropic tessellation along z.
    z_positions = np.arange(volume_shape[0]) * (z_step * cell_size / _Z_ELONGATION)
    seeds = _jittered_seeds(rng, volume_shape[1:], z_positions, cell_size)
    wobble = _WobbleField(rng, cell_size)
    voronoi = _voronoi_sections(seeds, wobble, z_positions, volume_shape[1:])
    membranes = np.stack([_section_membranes(s, cell_size) for s in voronoi])
    cells = _consecutive_ids(voronoi, membranes, len(seeds))
    image = _render(rng, voronoi, membranes, len(seeds), z_positions, cell_size)

    result = (image, membranes.astype(np.uint8), cells)
    if is_2d:
        result = tuple(a[0] for a in result)
    return result


def _check_shape(shape: Iterable[SupportsIndex]) -> tuple[tuple[int, int, int], bool]:
    """Return `shape` as a 3-tuple of positive ints and whether it was 2D."""
    message = f"shape must be 2 or 3 positive integers, (Y, X) or (Z, Y, X), got {shape!r}"
    try:
        dims = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise ValueError(message) from None
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise ValueError(message)
    if len(dims) == 2:
        return (1, dims[0], dims[1]), True
    return (dims[0], dims[1], dims[2]), False


def finite_float(value: float, name: str) -> float:
    """Return `value` as a finite float or raise a ValueError naming `name`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_seed(seed: SupportsIndex) -> int:
    """Return `seed` as a non-negative int (what `default_rng` accepts)."""
    try:
        value = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}") from None
    if value < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return value


def _jittered_seeds(
    rng: np.random.Generator,
    plane_shape: tuple[int, int],
    z_positions: np.ndarray,
    cell_size: float,
) -> np.ndarray:
    """Return Voronoi seed points ``(N, 3)`` as ``(z, y, x)`` in pixel units.

    One seed falls uniformly inside each box of a cubic grid with spacing
    `cell_size`.  Compared with fully random points this avoids the tiny
    sliver cells and huge cells of a Poisson-Voronoi tessellation, while
    the outlines stay irregular polygons.  The grid reaches one cell beyond
    the volume so that cells touching the border are cut, not stretched.
    """
    low = np.array([z_positions[0], 0.0, 0.0]) - cell_size
    high = np.array([z_positions[-1], plane_shape[0] - 1, plane_shape[1] - 1]) + cell_size
    counts = np.ceil((high - low) / cell_size).astype(int)
    boxes = np.stack(np.meshgrid(*(np.arange(n) for n in counts), indexing="ij"), -1)
    boxes = boxes.reshape(-1, 3)
    return low + (boxes + rng.random(boxes.shape)) * cell_size


class _WobbleField:
    """Smooth random 3D displacement field: a sum of random sine waves.

    Displacing the query points before the nearest-seed search bends the
    straight Voronoi facets into gently curved membranes.  Being a smooth
    function of 3D position, it bends consecutive sections consistently.
    """

    def __init__(self, rng: np.random.Generator, cell_size: float):
        directions = rng.normal(size=(_WOBBLE_MODES, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = cell_size * rng.uniform(0.3, 1.0, _WOBBLE_MODES)
        self.wave_vectors = directions * (2 * np.pi / wavelengths)[:, None]
        self.phases = rng.uniform(0, 2 * np.pi, _WOBBLE_MODES)
        # Longer waves get larger amplitudes, as in natural membrane shapes.
        amplitudes = rng.normal(size=(_WOBBLE_MODES, 3)) * wavelengths[:, None]
        rms = np.sqrt(np.sum(amplitudes**2) / 2 / 3)
        self.amplitudes = amplitudes * (_WOBBLE_RMS * cell_size / rms)

    def displace(self, z: float, plane_shape: tuple[int, int]) -> np.ndarray:
        """Return displaced ``(Y*X, 3)`` ``(z, y, x)`` points of section `z`."""
        y = np.arange(plane_shape[0], dtype=np.float64)[:, None]
        x = np.arange(plane_shape[1], dtype=np.float64)[None, :]
        points = np.empty((*plane_shape, 3))
        points[..., 0], points[..., 1], points[..., 2] = z, y, x
        for k, phase, amplitude in zip(self.wave_vectors, self.phases, self.amplitudes):
            wave = np.sin(k[0] * z + k[1] * y + k[2] * x + phase)
            points += wave[..., None] * amplitude
        return points.reshape(-1, 3)


def _voronoi_sections(
    seeds: np.ndarray,
    wobble: _WobbleField,
    z_positions: np.ndarray,
    plane_shape: tuple[int, int],
) -> np.ndarray:
    """Return the nearest-seed index of every pixel, ``(Z, Y, X)`` int32.

    Sections are queried one at a time to keep memory at one slice of
    coordinates even for large stacks.
    """
    tree = cKDTree(seeds)
    voronoi = np.empty((len(z_positions), *plane_shape), dtype=np.int32)
    for index, z in enumerate(z_positions):
        _, nearest = tree.query(wobble.displace(z, plane_shape))
        voronoi[index] = nearest.reshape(plane_shape)
    return voronoi


def _section_membranes(section: np.ndarray, cell_size: float) -> np.ndarray:
    """Return the 2-px membranes of one Voronoi section, boolean ``(Y, X)``.

    Interior pieces smaller than ``(cell_size / 8) ** 2`` pixels (single
    pixels left between thick boundaries at junctions, tips of cells that
    barely reach the section) become membrane: they would read as noise,
    not as cells.
    """
    membranes = find_boundaries(section, mode="thick")
    pieces, _ = ndimage.label(~membranes)
    too_small = np.bincount(pieces.ravel()) < (cell_size / 8) ** 2
    too_small[0] = False
    return membranes | too_small[pieces]


def _consecutive_ids(voronoi: np.ndarray, membranes: np.ndarray, n_seeds: int) -> np.ndarray:
    """Relabel the seeds visible off-membrane as 1..N; membranes become 0.

    A lookup table is much faster than ``np.unique`` on large stacks.
    """
    interior = ~membranes
    visible = np.zeros(n_seeds, dtype=bool)
    visible[voronoi[interior]] = True
    lookup = np.cumsum(visible, dtype=np.int32)
    return np.where(interior, lookup[voronoi], 0).astype(np.int32)


def _render(
    rng: np.random.Generator,
    voronoi: np.ndarray,
    membranes: np.ndarray,
    n_seeds: int,
    z_positions: np.ndarray,
    cell_size: float,
) -> np.ndarray:
    """Paint the EM-like uint8 image from the tessellation."""
    cell_offsets = rng.normal(0, _CELL_BRIGHTNESS_SD, n_seeds).astype(np.float32)
    image = _CYTOPLASM + cell_offsets[voronoi]
    _paint_organelles(rng, image, voronoi, z_positions, cell_size)
    image[membranes] = _MEMBRANE
    # Texture is added everywhere so that membranes are not uniformly dark.
    image += _texture(rng, image.shape, sigma=1.0, sd=_FINE_TEXTURE_SD)
    image += _texture(rng, image.shape, sigma=0.15 * cell_size, sd=_COARSE_TEXTURE_SD)
    # Sections differ slightly in thickness, hence in overall brightness.
    image += rng.normal(0, _SECTION_BRIGHTNESS_SD, (len(image), 1, 1)).astype(np.float32)
    image = ndimage.gaussian_filter(image, sigma=(0, _BLUR_SIGMA, _BLUR_SIGMA))
    image += rng.normal(0, _NOISE_SD, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, sd: float) -> np.ndarray:
    """Return in-plane noise smoothed over `sigma` pixels, standard deviation `sd`.

    Each section gets its own texture: sections are thicker than the
    granules that make the texture, so it does not continue across them.
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma=(0, sigma, sigma))
    # The floor avoids dividing by zero for a single-pixel image.
    return smooth * (sd / max(float(smooth.std()), 1e-6))


def _paint_organelles(
    rng: np.random.Generator,
    image: np.ndarray,
    voronoi: np.ndarray,
    z_positions: np.ndarray,
    cell_size: float,
) -> None:
    """Darken small ellipsoids (mitochondria-like) scattered in the cells, in place.

    Centres are uniform in the volume; each organelle belongs to the cell
    under its centre in the nearest section and is clipped to that cell,
    so it never crosses a membrane.
    """
    # Semi-axes (z, y, x); different y and x give elongated outlines, like
    # mitochondria cut at an angle.
    low_radii, high_radii = np.array([(0.1, 0.08, 0.12), (0.3, 0.15, 0.3)]) * cell_size
    z_low, z_high = z_positions[0] - high_radii[0], z_positions[-1] + high_radii[0]
    plane_shape = voronoi.shape[1:]
    cell_volumes = (z_high - z_low) * plane_shape[0] * plane_shape[1] / cell_size**3
    count = rng.poisson(_ORGANELLES_PER_CELL * cell_volumes)
    centres = rng.uniform((z_low, 0, 0), (z_high, *plane_shape), (count, 3))
    radii = rng.uniform(low_radii, high_radii, (count, 3))
    angles = rng.uniform(0, np.pi, count)
    for centre, radius, angle in zip(centres, radii, angles):
        nearest = np.abs(z_positions - centre[0]).argmin()
        owner = voronoi[(nearest, int(centre[1]), int(centre[2]))]
        for index in np.flatnonzero(np.abs(z_positions - centre[0]) < radius[0]):
            scale = math.sqrt(1 - ((z_positions[index] - centre[0]) / radius[0]) ** 2)
            _paint_ellipse(image[index], voronoi[index], owner, centre[1:], radius[1:] * scale, angle)


def _paint_ellipse(
    section: np.ndarray,
    owner_map: np.ndarray,
    owner: int,
    centre: np.ndarray,
    radii: np.ndarray,
    angle: float,
) -> None:
    """Paint a rotated filled ellipse, clipped to cell `owner`, in place."""
    reach = float(radii.max())
    low = np.maximum(np.floor(centre - reach).astype(int), 0)
    high = np.minimum(np.ceil(centre + reach).astype(int) + 1, section.shape)
    y, x = np.ogrid[low[0] : high[0], low[1] : high[1]]
    dy, dx = y - centre[0], x - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    u = (cos * dy + sin * dx) / radii[0]
    v = (-sin * dy + cos * dx) / radii[1]
    box = (slice(low[0], high[0]), slice(low[1], high[1]))
    inside = (u**2 + v**2 <= 1) & (owner_map[box] == owner)
    section[box][inside] = _ORGANELLE
