"""The structure check fails on what it is there to catch: an import cycle (also one hidden under
TYPE_CHECKING or inside a function) and an engine module importing a face."""

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_check():
    spec = importlib.util.spec_from_file_location("check_structure", ROOT / "scripts" / "check_structure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def source(tmp_path):
    copy = tmp_path / "napari_pix2pix"
    shutil.copytree(ROOT / "src" / "napari_pix2pix", copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def plant(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text)


def test_the_package_passes_the_structure_check():
    assert load_check().problems(ROOT / "src" / "napari_pix2pix") == []


def test_a_planted_import_cycle_is_found_also_under_type_checking(source):
    plant(source / "labels" / "encodings.py", "if TYPE_CHECKING:\n    from .outputs import OutputKind\n")
    found = load_check().problems(source)
    assert any(p.startswith("import cycle:") and "labels.outputs" in p for p in found), found


def test_a_cycle_through_an_import_inside_a_function_is_found(source):
    plant(source / "prediction" / "tiling.py", "def later():\n    from .pipeline import predict\n")
    found = load_check().problems(source)
    assert any(p.startswith("import cycle:") for p in found), found


def test_the_engine_importing_a_face_is_refused(source):
    plant(source / "training" / "loop.py", "def later():\n    from ..cli import main\n")
    found = load_check().problems(source)
    assert any("imports napari_pix2pix.cli" in p and "higher layer" in p for p in found), found


def test_a_module_in_no_layer_is_named(source):
    (source / "newthing.py").write_text("X = 1\n")
    assert any("'napari_pix2pix.newthing' is in no layer" in p for p in load_check().problems(source))
