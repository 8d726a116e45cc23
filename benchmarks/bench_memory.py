"""Memory on a big volume: peak resident memory while predicting a lazily loaded stack.

A raw uint16 volume (2 GB by default) is written to a temporary folder and opened as a dask array
that reads one slice from disk when asked. Each measurement runs in a fresh process, which reports
its resident memory before predicting (Python, torch, the model) and its peak while the labels
stream to a file. Each depth is also run as the network alone on the same number of tile batches,
so the difference is the engine's own memory: it should be about one slice, whatever the depth.
The last rows run longer (``--long``) with a smaller network.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import numpy as np

SCRIPT = Path(__file__).resolve()


def write_volume(path: Path, depth: int, side: int) -> None:
    """A synthetic EM-like stack, one slice at a time (tiled from a 512² section, shifted per slice)."""
    from napari_pix2pix.samples.synthetic import membrane_volume

    section = membrane_volume((512, 512), seed=0)[0].astype(np.uint16) * 200
    plane = np.tile(section, (side // 512 + 1, side // 512 + 1))
    with open(path, "wb") as f:
        for z in range(depth):
            f.write(np.ascontiguousarray(plane[z % 512 : z % 512 + side, :side]).tobytes())


def lazy_volume(path: Path, depth: int, side: int):
    """A dask array over the raw file; each slice is read from disk only when computed."""
    import dask
    import dask.array as da

    def read(z):
        return np.fromfile(path, np.uint16, count=side * side, offset=z * side * side * 2).reshape(side, side)

    slices = [da.from_delayed(dask.delayed(read)(z), (side, side), np.uint16) for z in range(depth)]
    return da.stack(slices)


def rss_mb() -> float:
    """Current resident memory of this process in MB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux


def measure(args) -> dict:
    """Child process: predict ``args.slices`` slices of the volume, or (``--network-only``) push the
    same number of tile batches through the network alone, on zeros made once."""
    import torch

    from napari_pix2pix.labels.encodings import DenseEncoding
    from napari_pix2pix.models import ModelConfig, Normalisation, build_model
    from napari_pix2pix.models.trained import TrainedModel
    from napari_pix2pix.prediction import iter_predict
    from napari_pix2pix.prediction.tiling import tile_layout

    torch.set_num_threads(2)
    config = ModelConfig("unet", 1, 2, width=args.width, depth=args.net_depth)
    model = TrainedModel(
        config, build_model(config).eval(), DenseEncoding((0, 1)), Normalisation((0.0,), (4000.0,)), 128
    )
    volume = lazy_volume(args.volume, args.depth, args.side)[: args.slices]
    before = rss_mb()
    if args.network_only:
        layout = tile_layout(model, args.side, args.side, None, None)
        tiles = torch.zeros(4, 1, layout.in_h, layout.in_w)
        with torch.inference_mode():
            for _ in range(-(-args.slices * len(layout.tiles) // 4)):
                model.network(tiles)
    else:
        with open(args.volume.with_suffix(".labels"), "wb") as out:
            for result in iter_predict(model, volume, device="cpu"):
                out.write(result.data.tobytes())
    return {"before": before, "peak": peak_mb()}


def run_child(
    volume: Path,
    depth: int,
    side: int,
    slices: int,
    width: int,
    net_depth: int,
    network_only: bool = False,
    default_malloc: bool = False,
) -> dict:
    command = [
        sys.executable,
        str(SCRIPT),
        "--child",
        "--volume",
        str(volume),
        "--depth",
        str(depth),
        "--side",
        str(side),
        "--slices",
        str(slices),
        "--width",
        str(width),
        "--net-depth",
        str(net_depth),
    ]
    if network_only:
        command.append("--network-only")
    # glibc's dynamic mmap threshold keeps large freed blocks in the heap, so identical runs peak up to
    # ±100 MB apart; a fixed threshold hands every large block back when it is freed, and the peak is
    # then the memory really in use (identical runs agree within 2 MB). --default-malloc turns this off.
    environment = dict(os.environ) if default_malloc else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--gigabytes", type=float, default=2.0, help="size of the volume (default 2)")
    p.add_argument("--side", type=int, default=2048, help="slice side in pixels (default 2048)")
    p.add_argument(
        "--slices", type=int, nargs="+", default=[2, 8], help="depths predicted with the default U-Net (default: 2 8)"
    )
    p.add_argument(
        "--long",
        type=int,
        default=24,
        help="slices predicted with a small U-Net (width 4, depth 2); 0: the whole volume (default 24)",
    )
    p.add_argument("--label", default="", help="tag for the rows and the section, e.g. 'before'")
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="measure with glibc's default allocator settings (peaks then vary by ±100 MB between runs)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--volume", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--net-depth", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--network-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.slices = args.slices[0]
        print(json.dumps(measure(args)))
        return
    depth = max(1, int(args.gigabytes * 1e9 / (args.side**2 * 2)))
    with tempfile.TemporaryDirectory() as folder:
        volume = Path(folder) / "volume.raw"
        write_volume(volume, depth, args.side)
        rows = []
        slice_mb = args.side**2 * 4 / 1e6
        for width, net_depth, slices_list in ((16, 4, args.slices), (4, 2, [args.long or depth])):
            for slices in slices_list:
                alone = run_child(volume, depth, args.side, slices, width, net_depth, True, args.default_malloc)
                engine = run_child(volume, depth, args.side, slices, width, net_depth, False, args.default_malloc)
                network_mb = alone["peak"] - alone["before"]
                engine_mb = engine["peak"] - engine["before"]
                tag = {"engine": args.label} if args.label else {}
                rows.append(
                    {
                        **tag,
                        "network": f"U-Net width {width}, depth {net_depth}",
                        "slices predicted": slices,
                        "GB read": slices * args.side**2 * 2 / 1e9,
                        "network alone, extra MB": network_mb,
                        "engine, extra MB": engine_mb,
                        "engine − network alone, MB": engine_mb - network_mb,
                        "… in float32 slices": (engine_mb - network_mb) / slice_mb,
                    }
                )
                print(rows[-1], flush=True)
    notes = (
        f"Machine: {common.machine_cpu()}. Volume: {depth} × {args.side} × {args.side} uint16 "
        f"({depth * args.side**2 * 2 / 1e9:.2f} GB) as a dask array reading one slice per chunk from a raw "
        f"file; output: labels streamed to a file. One slice is {slice_mb:.0f} MB as float32. "
        "'extra MB' = peak resident memory minus resident memory before predicting (the process already "
        "held Python, torch and the model); 'network alone' pushes the same number of tile batches "
        "(zeros made once) through the network in a fresh process, so the difference is what the "
        "engine's reading, tiling, blending and labelling add. "
        + (
            "glibc's default allocator settings."
            if args.default_malloc
            else "Children run with `MALLOC_MMAP_THRESHOLD_=131072`, so freed large blocks go back to the system "
            "and the peak is the memory in use (with glibc's default dynamic threshold, identical runs "
            "peak up to ±100 MB apart)."
        )
    )
    title = f"Memory on a big volume (cpu{', ' + args.label if args.label else ''})"
    common.report(args, "bench_memory.py", title, notes + "\n\n" + common.markdown_table(rows), args.label)


if __name__ == "__main__":
    main()
