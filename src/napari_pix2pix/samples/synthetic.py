"""Deterministic synthetic volumes: serial-section electron microscopy (EM) and fluorescent nuclei.

`membrane_volume` imitates the look of the ISBI 2012 serial-section EM stack:
tightly packed cells separated by thin dark membranes, grey textured
cytoplasm with a few small dark organelles, blur and noise.  It comes with
exact membrane and cell ground truth, so the membrane-segmentation workflow
can be demonstrated and tested without downloading data.

Cells are the sections of a 3D Voronoi tessellation: every voxel belongs to
its nearest seed point.  Because the tessellation is 3D, consecutive slices
are related like real serial sections: outlines drift, cells appear, split
and vanish smoothly.

`nuclei_volume` imitates a confocal stack of stained nuclei with exact
instance labels, for the 3D network: ellipsoids placed in micrometres, so
that anisotropic voxels make them flatter along z, as in real stacks.
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
    cell_size = _finite_float(cell_size, "cell_size")
    if cell_size < _MIN_CELL_SIZE:
        raise ValueError(f"cell_size must be >= {_MIN_CELL_SIZE:g} pixels, got {cell_size:g}")
    z_step = _finite_float(z_step, "z_step")
    if z_step <= 0:
        raise ValueError(f"z_step must be > 0, got {z_step:g}")
    seed = _check_seed(seed)

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


def _finite_float(value: float, name: str) -> float:
    """Return `value` as a finite float or raise a ValueError naming `name`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _check_seed(seed: SupportsIndex) -> int:
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


# --- Fluorescence nuclei (nuclei_volume) -------------------------------------------------------

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
    diameter_um = _finite_float(diameter_um, "diameter_um")
    if diameter_um < 2 * voxel.max():
        raise ValueError(
            f"diameter_um must be at least twice the largest voxel side ({2 * voxel.max():g}), got {diameter_um:g}"
        )
    seed = _check_seed(seed)

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
        sizes = [_finite_float(v, "voxel_size") for v in voxel_size]
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
