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

``bioimageio.spec`` is an optional dependency (the ``bioimageio`` extra).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .errors import InputError
from .io.atomic import atomic_write
from .models.networks import build_model
from .models.trained import TrainedModel
from .prediction.tiling import round_up

TEST_TILE = 256


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

    def largest(self, side: int) -> int:
        """The largest input side up to ``side``, or 0 if even the smallest is larger."""
        return 0 if side < self.minimum else self.minimum + (side - self.minimum) // self.step * self.step


class ProbabilityNetwork(nn.Module):
    """The network as exported: the same weights, under ``network.``, giving class logits."""

    def __init__(self, architecture: str, in_channels: int, out_channels: int, width: int, depth: int):
        super().__init__()
        from .models.networks import ModelConfig

        self.network = build_model(ModelConfig(architecture, in_channels, out_channels, width, depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def _test_tiles(model: TrainedModel, image: np.ndarray, sizes: InputSizes) -> tuple[np.ndarray, np.ndarray]:
    """A raw (1, C, T, T) float32 tile from the middle of ``image`` (the package's test input) and
    the same tile normalised as the package's preprocessing normalises it (what the network sees)."""
    from .prediction.reading import volume_geometry

    geometry = volume_geometry(image.shape, model)
    plane = np.asarray(image[geometry.n_slices // 2] if geometry.is_stack else image, dtype=np.float32)
    plane = plane[..., None] if geometry.channels == 1 else plane
    side = sizes.largest(min(max(TEST_TILE, sizes.minimum), *plane.shape[:2]))
    if not side:
        raise InputError(f"the test image is too small: a tile of at least {sizes.minimum} pixels is needed")
    top, left = (plane.shape[0] - side) // 2, (plane.shape[1] - side) // 2
    raw = plane[top : top + side, left : left + side]
    normalised = model.normalisation.for_image(raw).apply(raw)  # per image: the tile's own percentiles
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
    """Write ``model`` as a bioimage.io model package (a .zip) to ``out``; ``image`` gives the test tile."""
    try:
        from bioimageio.spec import save_bioimageio_package
    except ImportError:
        raise InputError("exporting needs bioimageio.spec: pip install 'napari-pix2pix[bioimageio]'") from None
    if model.config.dims == 3:
        raise InputError("exporting 3D models to bioimage.io is not supported yet; 2D models export")
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

    exported = ProbabilityNetwork(
        model.architecture, model.config.in_channels, model.config.out_channels, model.config.width, model.config.depth
    )
    exported.network.load_state_dict(model.network.state_dict())
    exported.eval()
    sizes = InputSizes(model)
    raw, tile = _test_tiles(model, image, sizes)
    with torch.no_grad():
        logits = exported(torch.from_numpy(tile)).numpy()
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", probabilities)
    torch.save(exported.state_dict(), folder / "weights.pt")
    torch.jit.trace(exported, torch.from_numpy(tile)).save(str(folder / "weights_torchscript.pt"))
    (folder / "README.md").write_text(_documentation(model, description, sizes))
    torch_version = spec.Version(torch.__version__.split("+")[0])
    channel = spec.AxisId("channel")
    space = [
        spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=sizes.minimum, step=sizes.step))
        for a in ("y", "x")
    ]
    inputs = spec.InputTensorDescr(
        id=spec.TensorId("raw"),
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=_names("c", model.config.in_channels)), *space],
        test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[_scaling(model, spec, channel)],
    )
    outputs = _output_description(model, spec, sizes, folder, channel)
    architecture = spec.ArchitectureFromLibraryDescr(
        callable=spec.Identifier("ProbabilityNetwork"),
        import_from="napari_pix2pix.bioimageio",
        kwargs={
            "architecture": model.architecture,
            "in_channels": model.config.in_channels,
            "out_channels": model.config.out_channels,
            "width": model.config.width,
            "depth": model.config.depth,
        },
    )
    weights = spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt", architecture=architecture, pytorch_version=torch_version
        ),
        torchscript=spec.TorchscriptWeightsDescr(
            source=folder / "weights_torchscript.pt", pytorch_version=torch_version, parent="pytorch_state_dict"
        ),
    )
    return spec.ModelDescr(
        name=name,
        description=description,
        authors=[spec.Author(name=a) for a in authors],
        cite=[spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in cite],
        license=spec.LicenseId(license),
        documentation=spec.FileDescr(source=folder / "README.md"),
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
        tags=["segmentation", "napari-pix2pix", model.architecture],
        config={"napari_pix2pix": _own_config(model)},  # type: ignore[arg-type]
    )


def _output_description(model: TrainedModel, spec: Any, sizes: InputSizes, folder: Path, channel: Any) -> Any:
    """The class probabilities: one channel per class, the input's size less the network's shrink."""
    return spec.OutputTensorDescr(
        id=spec.TensorId("probabilities"),
        axes=[
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=[spec.Identifier(f"class_{v}") for v in model.encoding.class_values]),
            *(
                spec.SpaceOutputAxis(
                    id=spec.AxisId(a),
                    size=spec.SizeReference(
                        tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId(a), offset=-sizes.shrink
                    ),
                    description=_alignment(sizes),
                )
                for a in ("y", "x")
            ),
        ],
        test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=channel))],
    )


def _alignment(sizes: InputSizes) -> str:
    """The output axis' description (the spec allows 128 characters)."""
    if not sizes.shrink:
        return "aligned with the input pixel for pixel"
    return f"valid convolutions: {sizes.shrink} px smaller than the input, pixel 0 under input pixel {sizes.margin}"


def _names(prefix: str, count: int) -> list:
    from bioimageio.spec.model import v0_5 as spec

    return [spec.Identifier(f"{prefix}{i}") for i in range(count)]


def _scaling(model: TrainedModel, spec: Any, channel: Any) -> Any:
    """The stored intensity scaling as the spec's preprocessing."""
    normalisation = model.normalisation
    if normalisation.per_image:
        return spec.ScaleRangeDescr(
            kwargs=spec.ScaleRangeKwargs(
                axes=[spec.AxisId("y"), spec.AxisId("x")],
                min_percentile=normalisation.lower,
                max_percentile=normalisation.upper,
                eps=1e-12,
            )
        )
    gain = [1.0 / (h - lo) for lo, h in zip(normalisation.low, normalisation.high)]
    offset = [-lo / (h - lo) for lo, h in zip(normalisation.low, normalisation.high)]
    return spec.ScaleLinearDescr(kwargs=spec.ScaleLinearAlongAxisKwargs(axis=channel, gain=gain, offset=offset))


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
            }
        )
    )


def _documentation(model: TrainedModel, description: str, sizes: InputSizes) -> str:
    return (
        f"# {model.architecture} trained with napari-pix2pix\n\n{description}\n\n"
        f"- Classes: {', '.join(str(v) for v in model.encoding.class_values)} ({model.encoding.describe()})\n"
        f"- Output: the probability of each class, per pixel (softmax over the channel axis)\n"
        f"{_size_note(sizes)}"
        f"- Trained for {len(model.history)} epochs with napari-pix2pix {__version__}\n"
    )


def _size_note(sizes: InputSizes) -> str:
    if not sizes.shrink:
        return f"- Input: any size that is a multiple of {sizes.step} pixels; the output has the same size\n"
    return (
        f"- Input: {sizes.minimum} + k·{sizes.step} pixels per side. The network uses valid convolutions, so its "
        f"output is {sizes.shrink} pixels smaller, and output pixel 0 lies under input pixel {sizes.margin}: pad "
        f"the input by {sizes.margin} pixels before and {sizes.shrink - sizes.margin} after (by reflection, as "
        "napari-pix2pix does at image borders) for an output covering the whole image\n"
    )
