"""The command line: ``napari-pix2pix train`` / ``predict`` / ``export`` / ``demo`` / ``gui``, the
headless face of the engine.

Bad input ends with exit status 2 and one line saying what is wrong; outputs are written to a
temporary file and renamed, so a failed or interrupted run leaves no partial file behind.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from ..devices import is_out_of_memory
from ..errors import InputError
from ..scale.distributed import is_secondary
from .common import EXIT_BAD_INPUT, Terminated, signal_handlers, terminate
from .parser import build_parser
from .predict import run_export, run_predict
from .train import run_demo, run_train

__all__ = ["build_parser", "main"]


def run_gui(args: argparse.Namespace) -> None:
    from .._launch import main as launch

    status = launch(None if args.sample == "none" else args.sample)
    if status:
        raise SystemExit(status)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": run_train, "predict": run_predict, "export": run_export, "demo": run_demo, "gui": run_gui}
    command = commands[args.command]
    try:
        with signal_handlers(terminate, (signal.SIGTERM,)) if args.command != "gui" else contextlib.nullcontext():
            return command(args) or 0
    except InputError as error:
        if not is_secondary():  # under torchrun every rank checks the same input; rank 0 says what is wrong
            print(f"napari-pix2pix {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print(
            f"napari-pix2pix {args.command}: error: out of memory; use a smaller --batch-size or "
            "--tile-size / --patch-size",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        print(
            f"napari-pix2pix {args.command}: error: the device ran out of memory; use a smaller "
            "--batch-size or --tile-size / --patch-size, or --device cpu",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Terminated) as interruption:
        name = "stopped by SIGTERM" if isinstance(interruption, Terminated) else "interrupted"
        print(f"napari-pix2pix {args.command}: {name}; the output was not written", file=sys.stderr)
        return 143 if isinstance(interruption, Terminated) else 130
