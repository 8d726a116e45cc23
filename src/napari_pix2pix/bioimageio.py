"""Export to the bioimage.io model zoo's format (``bioimageio.spec`` 0.5), read by ilastik,
deepImageJ, QuPath, Fiji and ``bioimageio.core``.

The package holds the network twice: as a PyTorch state dict with the architecture named by its
import path in this package (``napari_pix2pix.models``) and its keyword arguments, and as
TorchScript (runs without this package). The stored intensity scaling becomes the spec's
preprocessing (``scale_linear`` for the training data's numbers, ``scale_range`` per image for the
per-image rule) and ``softmax`` its postprocessing, so a consumer gets class probabilities. The test
input is a tile of an image the user gives (the training image, typically) and the test output the
engine's own result for it. The seed U-Net's smaller output (valid convolutions) is described by the
spec's size reference with an offset: its inputs are ``minimum + k·step`` pixels, over which the
output is a constant number of pixels smaller, with output pixel 0 under input pixel ``margin``.

A 3D model (``unet-3d``) is exported with z, y and x axes: its inputs are multiples of the network's
z and in-plane steps (z may step differently: the first levels pool in-plane only), its output has
the input's size with a halo per axis (the context the engine's own 3D blocks drop), the voxel size
is the axes' scale in micrometres, and the test input is a block from the middle of the volume.

``bioimageio.spec`` is an optional dependency (the ``bioimageio`` extra).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .errors import InputError
from .io.atomic import atomic_write
from .models.networks import build_model
from .models.trained import TrainedModel
from .models.unet3d import UNet3D
from .prediction.tiling import round_up
from .prediction.volume import IN_PLANE_HALO, Z_HALO

TEST_TILE = 256
TEST_BLOCK = (32, 96, 96)  # 3D: the largest test block (z, y, x) taken from the middle of the volume


class InputSizes:
    """The input sides a network takes as the spec describes them (``minimum + k·step``), and how much
    smaller its output is over them (``shrink`` pixels in all, output pixel 0 under input pixel
    ``margin``): 0 and 0 for same-size networks."""

    def __init__(self, model: TrainedModel):
        sizes = model.sizes
        if sizes.padded:
            self.minimum = self.step = sizes.size_multiple
        else:
            # Valid convolutions and 2×2 poolings: sides that stay even down to the bottleneck all
            # lose the same number of pixels.
            self.step = 2**model.config.depth
            self.minimum = round_up(sizes.min_input_size(), self.step)
        family = [self.minimum + k * self.step for k in range(4)]
        shrinks = {n - sizes.output_size(n) for n in family}
        margins = {sizes.output_offset(n) for n in family}
        if len(shrinks) != 1 or len(margins) != 1:  # not the case for the registered networks
            raise InputError(f"{model.architecture} networks cannot be exported: their output size is irregular")
        self.shrink, self.margin = shrinks.pop(), margins.pop()


@dataclass(frozen=True)
class SpatialAxis:
    """One spatial axis of a package: inputs of ``minimum + k·step`` pixels, the output ``shrink``
    pixels smaller with its pixel 0 under input pixel ``margin`` (valid convolutions), ``halo``
    pixels at each end of the output that are context only (3D blocks), ``scale`` micrometres per
    pixel (None: unknown)."""

    id: str
    minimum: int
    step: int
    shrink: int = 0
    margin: int = 0
    halo: int = 0
    scale: float | None = None

    def largest(self, side: int) -> int:
        """The largest input side up to ``side``, or 0 if even the smallest is larger."""
        return 0 if side < self.minimum else self.minimum + (side - self.minimum) // self.step * self.step


def spatial_axes(model: TrainedModel) -> list[SpatialAxis]:
    """The spatial axes of ``model``'s package: y and x for a 2D network; z, y and x for a 3D one,
    each with its own step (z's is larger when the first levels pool in-plane only), the halo the
    engine's 3D blocks drop (``prediction.volume``) and the voxel size as the scale."""
    if model.config.dims != 3:
        sizes = InputSizes(model)
        return [SpatialAxis(a, sizes.minimum, sizes.step, sizes.shrink, sizes.margin) for a in ("y", "x")]
    network = cast(UNet3D, model.network)
    steps = (network.z_multiple, network.size_multiple, network.size_multiple)
    halos = (Z_HALO, IN_PLANE_HALO, IN_PLANE_HALO)
    scales = model.voxel_size or (None, None, None)
    return [  # the smallest input that keeps a voxel once the halo is dropped (as the spec asks)
        SpatialAxis(a, round_up(2 * halo + 1, step), step, halo=halo, scale=None if scale is None else float(scale))
        for a, step, halo, scale in zip(("z", "y", "x"), steps, halos, scales)
    ]


class ProbabilityNetwork(nn.Module):
    """The network as exported: the same weights, under ``network.``, giving class logits."""

    def __init__(self, architecture: str, in_channels: int, out_channels: int, width: int, depth: int, z_skip: int = 0):
        super().__init__()
        from .models.networks import ModelConfig

        self.network = build_model(ModelConfig(architecture, in_channels, out_channels, width, depth, z_skip))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def _test_tensors(model: TrainedModel, image: np.ndarray, axes: list[SpatialAxis]) -> tuple[np.ndarray, np.ndarray]:
    """A raw float32 test input from the middle of ``image`` (the package's): a (1, C, Y, X) tile of
    its middle slice, or for a 3D model a (1, C, Z, Y, X) block of the volume; and the same input
    normalised as the package's preprocessing normalises it (what the network sees)."""
    from .prediction.reading import volume_geometry

    geometry = volume_geometry(image.shape, model)
    volume = model.config.dims == 3
    if volume and not geometry.is_stack:
        raise InputError("a 3D model's test image must be a volume (z, y, x), not a single image")
    plane = image[geometry.n_slices // 2] if geometry.is_stack and not volume else image
    targets = TEST_BLOCK if volume else (TEST_TILE, TEST_TILE)
    extents = plane.shape[: len(axes)]
    sides = [a.largest(min(max(t, a.minimum), e)) for a, t, e in zip(axes, targets, extents)]
    if not all(sides):
        need = "×".join(str(a.minimum) for a in axes) if volume else str(axes[0].minimum)
        kind = f"block of at least {need} voxels" if volume else f"tile of at least {need} pixels"
        raise InputError(f"the test image is too small: a {kind} is needed")
    window = tuple(slice((e - s) // 2, (e - s) // 2 + s) for e, s in zip(extents, sides))
    raw = np.asarray(plane[window], dtype=np.float32)
    raw = raw[..., None] if geometry.channels == 1 else raw
    normalised = model.normalisation.for_image(raw).apply(raw)  # per image: the input's own percentiles
    as_tensor = lambda a: np.ascontiguousarray(np.moveaxis(a, -1, 0)[None], dtype=np.float32)  # noqa: E731
    return as_tensor(raw), as_tensor(normalised)


def export(
    model: TrainedModel,
    out: str | Path,
    image: np.ndarray,
    *,
    name: str = "napari-pix2pix model",
    description: str = "A segmentation network trained with napari-pix2pix.",
    authors: tuple[str, ...] = ("napari-pix2pix user",),
    license: str = "CC-BY-4.0",
    cite: tuple[tuple[str, str], ...] = (("Ronneberger et al. 2015, U-Net", "10.1007/978-3-319-24574-4_28"),),
) -> Path:
    """Write ``model`` as a bioimage.io model package (a .zip) to ``out``; ``image`` gives the test
    input (a tile of an image or of a stack's middle slice; for a 3D model, a block of a volume)."""
    try:
        from bioimageio.spec import save_bioimageio_package
    except ImportError:
        raise InputError("exporting needs bioimageio.spec: pip install 'napari-pix2pix[bioimageio]'") from None
    out = Path(out)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # TorchScript weights are what bioimage.io consumers read today; torch's notice that
        # torch.jit is deprecated is not the user's business.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        descr = _description(model, Path(folder), image, name, description, authors, license, cite)
        with atomic_write(out, suffix=".tmp.zip") as tmp:
            save_bioimageio_package(descr, output_path=tmp)
    return out


def _description(
    model: TrainedModel,
    folder: Path,
    image: np.ndarray,
    name: str,
    description: str,
    authors: tuple[str, ...],
    license: str,
    cite: tuple[tuple[str, str], ...],
) -> Any:
    from bioimageio.spec.model import v0_5 as spec

    exported = ProbabilityNetwork(**model.config.to_dict())
    exported.network.load_state_dict(model.network.state_dict())
    exported.eval()
    axes = spatial_axes(model)
    raw, tile = _test_tensors(model, image, axes)
    with torch.no_grad():
        logits = exported(torch.from_numpy(tile)).numpy()
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", probabilities)
    (folder / "README.md").write_text(_documentation(model, description, axes))
    channel = spec.AxisId("channel")
    return spec.ModelDescr(
        name=name,
        description=description,
        authors=[spec.Author(name=a) for a in authors],
        cite=[spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in cite],
        license=spec.LicenseId(license),
        documentation=spec.FileDescr(source=folder / "README.md"),
        inputs=[_input_description(model, spec, axes, folder, channel)],
        outputs=[_output_description(model, spec, axes, folder, channel)],
        weights=_weights(model, spec, exported, tile, folder),
        tags=["segmentation", "napari-pix2pix", model.architecture, *(["3d"] if model.config.dims == 3 else [])],
        config={"napari_pix2pix": _own_config(model)},  # type: ignore[arg-type]
    )


def _weights(model: TrainedModel, spec: Any, exported: ProbabilityNetwork, tile: np.ndarray, folder: Path) -> Any:
    """The state dict (with the architecture's import path and arguments) and its TorchScript trace."""
    torch.save(exported.state_dict(), folder / "weights.pt")
    torch.jit.trace(exported, torch.from_numpy(tile)).save(str(folder / "weights_torchscript.pt"))
    torch_version = spec.Version(torch.__version__.split("+")[0])
    architecture = spec.ArchitectureFromLibraryDescr(
        callable=spec.Identifier("ProbabilityNetwork"),
        import_from="napari_pix2pix.bioimageio",
        kwargs=model.config.to_dict(),  # z_skip only for 3D networks that pool in-plane first
    )
    return spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt", architecture=architecture, pytorch_version=torch_version
        ),
        torchscript=spec.TorchscriptWeightsDescr(
            source=folder / "weights_torchscript.pt", pytorch_version=torch_version, parent="pytorch_state_dict"
        ),
    )


def _physical(axis: SpatialAxis) -> dict:
    """An axis' scale and unit, when the pixel or voxel size is known."""
    return {} if axis.scale is None else {"scale": axis.scale, "unit": "micrometer"}


def _input_description(model: TrainedModel, spec: Any, axes: list[SpatialAxis], folder: Path, channel: Any) -> Any:
    """The raw image: (batch, channel, [z,] y, x), each spatial side ``minimum + k·step``."""
    space = [
        spec.SpaceInputAxis(
            id=spec.AxisId(a.id), size=spec.ParameterizedSize(min=a.minimum, step=a.step), **_physical(a)
        )
        for a in axes
    ]
    return spec.InputTensorDescr(
        id=spec.TensorId("raw"),
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=_names("c", model.config.in_channels)), *space],
        test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=_scaling(model, spec, channel, axes),
    )


def _output_description(model: TrainedModel, spec: Any, axes: list[SpatialAxis], folder: Path, channel: Any) -> Any:
    """The class probabilities: one channel per class, the input's size less the network's shrink,
    with the halo (3D) that a consumer predicting in blocks should drop."""

    def space(a: SpatialAxis) -> Any:
        size = spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId(a.id), offset=-a.shrink)
        fields = dict(id=spec.AxisId(a.id), size=size, description=_alignment(a), **_physical(a))
        return spec.SpaceOutputAxisWithHalo(halo=a.halo, **fields) if a.halo else spec.SpaceOutputAxis(**fields)

    return spec.OutputTensorDescr(
        id=spec.TensorId("probabilities"),
        axes=[
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=[spec.Identifier(f"class_{v}") for v in model.encoding.class_values]),
            *(space(a) for a in axes),
        ],
        test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=channel))],
    )


def _alignment(axis: SpatialAxis) -> str:
    """The output axis' description (the spec allows 128 characters)."""
    if axis.halo:
        return f"the input's size; in blocks, drop {axis.halo} px at each end (context, as napari-pix2pix does)"
    if not axis.shrink:
        return "aligned with the input pixel for pixel"
    return f"valid convolutions: {axis.shrink} px smaller than the input, pixel 0 under input pixel {axis.margin}"


def _names(prefix: str, count: int) -> list:
    from bioimageio.spec.model import v0_5 as spec

    return [spec.Identifier(f"{prefix}{i}") for i in range(count)]


def _scaling(model: TrainedModel, spec: Any, channel: Any, axes: list[SpatialAxis]) -> list:
    """The stored intensity scaling as the spec's preprocessing (per image: over all spatial axes);
    none for the identity, which the spec refuses as a redundant ``scale_linear``."""
    normalisation = model.normalisation
    if normalisation.per_image:
        kwargs = spec.ScaleRangeKwargs(
            axes=[spec.AxisId(a.id) for a in axes],
            min_percentile=normalisation.lower,
            max_percentile=normalisation.upper,
            eps=1e-12,
        )
        return [spec.ScaleRangeDescr(kwargs=kwargs)]
    gain = [1.0 / (h - lo) for lo, h in zip(normalisation.low, normalisation.high)]
    offset = [-lo / (h - lo) for lo, h in zip(normalisation.low, normalisation.high)]
    if all(g == 1.0 for g in gain) and not any(offset):
        return []
    return [spec.ScaleLinearDescr(kwargs=spec.ScaleLinearAlongAxisKwargs(axis=channel, gain=gain, offset=offset))]


def _own_config(model: TrainedModel) -> dict:
    """What napari-pix2pix needs to load the package back as its own model."""
    return json.loads(
        json.dumps(
            {
                "version": __version__,
                "config": model.config.to_dict(),
                "encoding": model.encoding.to_dict(),
                "normalisation": model.normalisation.to_dict(),
                "patch_size": model.patch_size,
                "object_size": model.object_size,
                "pixel_size": list(model.pixel_size) if model.pixel_size else None,
                **({"voxel_size": list(model.voxel_size)} if model.voxel_size else {}),
                **({"binning": model.binning} if model.binning > 1 else {}),
            }
        )
    )


def _documentation(model: TrainedModel, description: str, axes: list[SpatialAxis]) -> str:
    unit = "voxel" if model.config.dims == 3 else "pixel"
    return (
        f"# {model.architecture} trained with napari-pix2pix\n\n{description}\n\n"
        f"- Classes: {', '.join(str(v) for v in model.encoding.class_values)} ({model.encoding.describe()})\n"
        f"- Output: the probability of each class, per {unit} (softmax over the channel axis)\n"
        f"{_size_note(axes)}"
        + (
            f"- The network learned its volumes binned {model.binning}× in y and x (the voxel size of its axes): "
            "bin or rescale a volume to that voxel size before it, and its output back\n"
            if model.binning > 1
            else ""
        )
        + f"- Trained for {len(model.history)} epochs with napari-pix2pix {__version__}\n"
    )


def _size_note(axes: list[SpatialAxis]) -> str:
    if len(axes) == 3:
        z, y, _ = axes
        size = "" if z.scale is None else f"- Voxel size (z, y, x): {' × '.join(f'{a.scale:g}' for a in axes)} µm\n"
        return (
            f"- Input: a volume of {z.minimum} + k·{z.step} slices (z) and {y.minimum} + k·{y.step} pixels per "
            f"side (y, x); the output has the same size. Predicting a larger volume in blocks, napari-pix2pix "
            f"overlaps them and drops {z.halo} slices and {y.halo} pixels at each end of every block (the halo, "
            "context only; the volume is mirrored at its borders)\n"
            f"{size}"
        )
    sizes = axes[0]
    if not sizes.shrink:
        return f"- Input: any size that is a multiple of {sizes.step} pixels; the output has the same size\n"
    return (
        f"- Input: {sizes.minimum} + k·{sizes.step} pixels per side. The network uses valid convolutions, so its "
        f"output is {sizes.shrink} pixels smaller, and output pixel 0 lies under input pixel {sizes.margin}: pad "
        f"the input by {sizes.margin} pixels before and {sizes.shrink - sizes.margin} after (by reflection, as "
        "napari-pix2pix does at image borders) for an output covering the whole image\n"
    )
