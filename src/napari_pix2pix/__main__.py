"""``python -m napari_pix2pix``: the command line (same as ``napari-pix2pix``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
