#!/usr/bin/env bash
# Test the package as users install it: build the sdist and the wheel (the wheel from the sdist, as
# pip does from an index), install the wheel into a fresh virtual environment outside the checkout,
# and run the command line, a tiny train + predict on the shipped sample, the napari manifest check
# and both widgets in a napari viewer under a virtual screen.
# Usage: bash scripts/check_wheel.sh   (after scripts/setup.sh; CI runs it from scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building the sdist and the wheel"
.venv/bin/python -m build --sdist --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  exit 1
}
wheel=$(ls "$work"/dist/napari_pix2pix-*.whl)
# One listing, checked in Python: a pipe into `grep -q` can break the lister's pipe (SIGPIPE) under
# `set -o pipefail` and fail the check on a wheel that is fine.
.venv/bin/python - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = [
    "napari_pix2pix/cli/__init__.py", "napari_pix2pix/io/modelfile.py", "napari_pix2pix/models/networks.py",
    "napari_pix2pix/napari.yaml", "napari_pix2pix/sample_data/nuclei_image.tif",
    "napari_pix2pix/sample_data/README.md",
]
missing = [name for name in needed if name not in names]
if missing:
    sys.exit("error: the wheel lacks " + ", ".join(missing))
PY

echo "== installing the wheel into a fresh environment outside the checkout"
python3 -m venv "$work/venv"
# The plugin leaves the Qt binding to the user's napari; this environment gets the one the tests use.
qt=$(grep -oE '"PyQt6(-Qt6)?==[^"]+"' pyproject.toml | tr -d '"' | tr '\n' ' ')
# shellcheck disable=SC2086
"$work/venv/bin/python" -m pip install -q "$wheel[napari]" npe2 $qt 2>&1 | grep -v "^WARNING: Location" || true
cd "$work"
"$work/venv/bin/python" -c "
import napari_pix2pix, sys
assert napari_pix2pix.__file__.startswith(sys.prefix), napari_pix2pix.__file__  # the wheel, not the checkout
"
bin="$work/venv/bin"
echo "== napari-pix2pix --help"
"$bin/napari-pix2pix" --help >/dev/null
echo "== a tiny train and predict on the shipped sample"
"$bin/python" - <<'EOF'
import tifffile
from napari_pix2pix.samples import nuclei_stack

image, labels = nuclei_stack()
tifffile.imwrite("image.tif", image[0, :96, :96])
tifffile.imwrite("labels.tif", labels[0, :96, :96])
tifffile.imwrite("new.tif", image[1, :96, :96])
EOF
"$bin/napari-pix2pix" train image.tif labels.tif --out model.pt --epochs 1 --steps-per-epoch 2 --width 4 \
  --depth 2 --patch-size 64 --annotation instances --quiet
"$bin/napari-pix2pix" predict model.pt new.tif --out new_labels.tif --output instances
"$bin/python" -c "import tifffile; assert tifffile.imread('new_labels.tif').shape == (96, 96)"
echo "== npe2 validate"
"$bin/npe2" validate napari-pix2pix
echo "== both widgets in a napari viewer"
xvfb-run -a "$bin/python" - <<'EOF'
import napari

viewer = napari.Viewer(show=False)
viewer.open_sample("napari-pix2pix", "nuclei")
for name in ("Train", "Predict"):
    viewer.window.add_plugin_dock_widget("napari-pix2pix", name)
assert len(viewer.layers) == 2, viewer.layers
viewer.close()
print("both widgets open, the sample loads")
EOF
echo "wheel check: passed"
