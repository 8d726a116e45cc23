"""The command line's arguments: one ``add_*`` function per command (see ``build_parser``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..devices import DEVICES
from ..io.pretrained import model_help
from ..labels.encodings import ANNOTATION_CHOICES, AUTO
from ..labels.outputs import OUTPUTS
from ..models.networks import ARCHITECTURES
from ..prediction.settings import AUTO_SIZE, DEFAULT_OBJECT_SIZE, DEFAULT_TTA
from ..training.binning import MAX_BINNING, MIN_BINNED_OBJECT
from ..training.config import DATASET, DEFAULT_BATCH, DIMS, MAX_3D_ANISOTROPY, MIN_3D_SLICES, NORMALISATIONS


def _object_size(text: str) -> float | str | None:
    if text.lower() in ("auto", "none"):
        return AUTO_SIZE if text.lower() == "auto" else None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or a number of pixels, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the object size must be positive, got {text}")
    return value


def _architecture_help() -> str:
    lines = [
        f"{name} ({spec.label}; patch {spec.patch_size}, learning rate {spec.learning_rate:g})"
        for name, spec in ARCHITECTURES.items()
    ]
    return "network: " + "; ".join(lines) + " (default: unet)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-pix2pix",
        description="Train a U-Net or pix2pix network on annotated images and predict labels (TIFF in, TIFF out).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    _add_train_command(commands)
    _add_predict_command(commands)
    _add_export_command(commands)
    gui = commands.add_parser("gui", help="open napari with the Train and Predict widgets and a sample")
    gui.add_argument(
        "--sample",
        choices=["nuclei", "membranes", "none"],
        default="nuclei",
        help="sample data to open (default: nuclei)",
    )

    demo = commands.add_parser("demo", help="train on the bundled nuclei sample and predict, headless")
    demo.add_argument("--out", default="demo-output", help="folder for the model and labels (default: demo-output)")
    demo.add_argument("--max-minutes", type=float, default=3.0)
    demo.add_argument("--device", choices=DEVICES, default="auto")
    return parser


def _depth_help() -> str:
    unet, unet_3d = ARCHITECTURES["unet"].depth, ARCHITECTURES["unet-3d"].depth
    return f"number of pooling levels (default: {unet}; the 3D U-Net {unet_3d})"


def _add_train_command(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a model on images and their labels",
        description="Train on IMAGE LABELS [IMAGE LABELS ...] (pairs of TIFF files), or on IMAGES_DIR LABELS_DIR "
        "(two folders; labels matched to images by file name, also as NAME_labels.tif). Images may differ in "
        "size and slice count; intensities are scaled by the training images' percentiles (see --normalise).",
    )
    train.add_argument(
        "paths",
        nargs="+",
        metavar="IMAGE LABELS",
        help="TIFF image ((Y,X) or (Z,Y,X), optionally channels last) then TIFF integer labels of the same "
        "shape (0 = background, or not annotated); several pairs, or two folders",
    )
    train.add_argument("--out", required=True, help="model file to write (e.g. model.pt)")
    # None when not given (as --width and --depth), so that --resume can tell a setting given from a default
    train.add_argument("--model", choices=list(ARCHITECTURES), default=None, help=_architecture_help())
    train.add_argument(
        "--annotation",
        choices=ANNOTATION_CHOICES,
        default=AUTO,
        help="how to read the labels: dense classes, sparse scribbles (0 = not annotated), "
        "or instances (default: auto)",
    )
    train.add_argument(
        "--max-minutes",
        type=float,
        default=10.0,
        help="time budget: training runs until it, the learning rate decaying to its end (default: 10)",
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="optional extra limit: stop after N epochs (default: until the time budget)",
    )
    train.add_argument("--steps-per-epoch", type=int, default=20)
    train.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"samples per step (default: {DEFAULT_BATCH}, fewer when the device's free memory asks for it)",
    )
    train.add_argument("--patch-size", type=int, default=None, help="training patch side (default: the network's)")
    train.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: the network's; a third of it with --start-from)"
    )
    train.add_argument("--val-fraction", type=float, default=0.2)
    train.add_argument("--width", type=int, default=None, help="channels of the first layer (default: 16)")
    train.add_argument("--depth", type=int, default=None, help=_depth_help())
    train.add_argument("--no-augment", action="store_true", help="turn data augmentation off")
    train.add_argument(
        "--boundary-weight",
        type=float,
        default=None,
        metavar="W0",
        help="weigh the thin gaps between objects up to 1 + W0 times in the loss (the U-Net paper's weight "
        "map, sigma 5 px; 0: off; default: 10 for instance labels, 0 for the other kinds)",
    )
    pixel_size_argument(
        train,
        "physical size of the images' pixels (e.g. in µm), stored in the model so that images with other "
        "pixels can be rescaled to it (default: the y, x of --voxel-size, else the files' own: OME-Zarr, "
        "ImageJ or OME-TIFF metadata; else unknown)",
    )
    _add_dims_options(train)
    train.add_argument(
        "--normalise",
        choices=list(NORMALISATIONS),
        default=DATASET,
        help="intensity scaling: 'dataset' (the training images' 1st-99.8th percentiles, for every image; "
        "default) or 'per-image' (each image by its own, for data whose brightness varies between images)",
    )
    train.add_argument("--device", choices=DEVICES, default="auto")
    train.add_argument("--seed", type=int, default=0)
    _add_run_options(train)


def _add_run_options(train: argparse.ArgumentParser) -> None:
    """Where a run starts from (a new model, one to continue or one to fine-tune), its checkpoints, its bar."""
    start = train.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="MODEL", help="continue training this model file (or a .partial checkpoint)")
    start.add_argument(
        "--start-from",
        metavar="MODEL",
        help=model_help(
            "fine-tune this model on the given pairs (a new run from its weights, keeping its network, "
            "classes, intensity scaling, object size and batch-norm statistics, at a third of the network's "
            "learning rate unless --lr is given, ending halfway between its weights and the fine-tuned ones): "
            "a model file"
        ),
    )
    train.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=5.0,
        metavar="MINUTES",
        help="save the run so far to OUT.partial this often, for --resume after a crash (0: never; default: 5)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_dims_options(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--dims",
        choices=DIMS,
        default=DIMS[0],
        help="train slice by slice (2d) or on volumes with a 3D U-Net (3d). auto (the default): 3d when every "
        f"image is a stack of at least {MIN_3D_SLICES} slices whose voxel size is known (--voxel-size, or the "
        f"files' metadata) and whose slices are at most {MAX_3D_ANISOTROPY:g}× the pixel size apart, so "
        "neighbouring slices show the same objects; else 2d (single images, short stacks, slices far apart "
        "as in serial-section EM, or an unknown voxel size). Training starts with a line saying which, and why",
    )
    voxel_size_argument(
        train,
        "physical (z, y, x) size of the stacks' voxels (e.g. in µm), for --dims auto and the 3D network's "
        "shape, and stored in a 3D model (default: the files' own: OME-Zarr, ImageJ or OME-TIFF metadata; "
        "with several stacks, the first's)",
    )
    train.add_argument(
        "--binning",
        type=_binning,
        default=None,
        metavar="auto|N",
        help="3D: bin the stacks' y and x N times before the network, which then learns (and predicts at) "
        "that voxel size; 1: never. auto (the default): up to "
        f"{MAX_BINNING}× while the binned pixels stay no wider than the slice spacing and the objects at "
        f"least {MIN_BINNED_OBJECT:g} pixels across (0.284 µm slices of 0.128 µm pixels bin 2×)",
    )


def _binning(text: str) -> int | None:
    """``--binning``'s value: None for auto, else a whole number."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number, got {text!r}") from None


def voxel_size_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--voxel-size Z Y X``, for training and prediction."""
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"), help=help)


def pixel_size_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--pixel-size Y X``, for training and prediction."""
    parser.add_argument("--pixel-size", type=float, nargs=2, metavar=("Y", "X"), help=help)


def _add_pixel_size_options(predict: argparse.ArgumentParser) -> None:
    pixel_size_argument(
        predict,
        "physical size of the image's pixels (default: the file's own: OME-Zarr, ImageJ or OME-TIFF "
        "metadata; else unknown); a warning says when it differs from the model's",
    )
    voxel_size_argument(
        predict,
        "a stack's (z, y, x) voxel size, for a 3D model (default: the file's own, as for --pixel-size; else "
        "taken as the training volumes'); a volume with other voxels is rescaled to the model's and the "
        "result scaled back, with a line saying so",
    )
    predict.add_argument(
        "--match-pixel-size",
        action="store_true",
        help="rescale the image to the model's pixel size (when both are known) instead of by object size",
    )


def _add_cluster_options(predict: argparse.ArgumentParser) -> None:
    cluster = predict.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="predict on a local Dask cluster of N processes, slab by slab, into --out NAME.zarr",
    )
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="predict on a running Dask cluster (e.g. tcp://host:8786, started by dask-jobqueue on SLURM); "
        "the model, input and output must be on a file system its workers share",
    )


def _add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="export a model as a bioimage.io package (ilastik, deepImageJ, QuPath, Fiji, bioimageio.core)",
        description="Write MODEL as a bioimage.io model package (.zip, spec 0.5): PyTorch state dict and "
        "TorchScript weights, the intensity scaling as preprocessing, softmax as postprocessing, and a test "
        "tile from IMAGE with the engine's output for it. Needs bioimageio.spec (the 'bioimageio' extra).",
    )
    export.add_argument("model", help=model_help())
    export.add_argument("out", help="package to write (.zip)")
    export.add_argument(
        "--image", required=True, help="TIFF or OME-Zarr image whose middle tile becomes the test input"
    )
    export.add_argument("--name", default="napari-pix2pix model")
    export.add_argument("--description", default="A segmentation network trained with napari-pix2pix.")
    export.add_argument("--author", action="append", help="an author's name (repeat for several)")
    export.add_argument("--license", default="CC-BY-4.0", help="SPDX licence id (default: CC-BY-4.0)")
    export.add_argument(
        "--cite", nargs=2, action="append", metavar=("TEXT", "DOI"), help="a reference (repeat for several)"
    )


def _add_predict_command(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="predict labels for an image or stack, or for many (--out-dir)",
        description="Predict one image into --out FILE, or many (files, folders of TIFFs, glob patterns) into "
        "--out-dir FOLDER, one output per input named <input>_<output>.tif. In a batch, inputs whose output "
        "exists are skipped (--overwrite to redo them), a file that fails is reported and the rest go on, and "
        "the exit status is 1 if any failed.",
    )
    predict.add_argument("model", help=model_help())
    predict.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="TIFF or OME-Zarr (.zarr) image or stack; with --out-dir also folders and globs",
    )
    where = predict.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out", help="file to write (one input): TIFF, or OME-Zarr for a name ending in .zarr (written slice by slice)"
    )
    where.add_argument("--out-dir", type=Path, metavar="FOLDER", help="folder for the outputs of many inputs")
    predict.add_argument("--overwrite", action="store_true", help="with --out-dir: redo inputs whose output exists")
    _add_cluster_options(predict)
    predict.add_argument(
        "--output",
        choices=list(OUTPUTS),
        default=None,
        help="; ".join(f"{name}: {kind.label.lower()}" for name, kind in OUTPUTS.items())
        + " (default: instances for a model trained on instance labels, else labels)",
    )
    predict.add_argument(
        "--no-link-slices",
        action="store_true",
        help="instances: number each slice's objects separately instead of following "
        "objects from slice to slice (for time series rather than z-stacks)",
    )
    predict.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_TTA,
        help="test-time augmentation: average the 8 flips and turns of each tile (8x the work; "
        f"default: {'on' if DEFAULT_TTA else 'off'})",
    )
    predict.add_argument(
        "--separate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw watershed lines between touching objects, so a faint membrane still separates two cells "
        "(labels and instances of class models; default: on)",
    )
    predict.add_argument(
        "--object-size",
        type=_object_size,
        default=DEFAULT_OBJECT_SIZE,
        metavar="auto|none|PIXELS",
        help="typical diameter of the objects in this image: the image is rescaled to the size the model was "
        "trained on ('auto': estimated; 'none': predict at the image's own scale; default: none, which "
        "scored better than 'auto' on images of other experiments: README, Quality on real data)",
    )
    predict.add_argument("--min-size", type=int, default=0, help="remove objects smaller than this many pixels")
    predict.add_argument("--fill-holes", type=int, default=0, metavar="PIXELS", help="fill holes up to this size")
    _add_pixel_size_options(predict)
    predict.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        metavar="P",
        help="object probability from which a pixel is part of an object (default 0.5: the likeliest class)",
    )
    predict.add_argument("--tile-size", type=int, default=None)
    predict.add_argument("--overlap", type=int, default=None)
    predict.add_argument(
        "--batch-size", type=int, default=None, help="tiles per forward pass (default: 4 on the CPU, 16 on a GPU)"
    )
    predict.add_argument("--device", choices=DEVICES, default="auto")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
