"""3D models on a Dask cluster (issue 21): slabs with a z halo give the single-process class labels
and probabilities exactly, and instances that agree with the single-process ones, with ids unique
in the volume and objects merged across the slab borders."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
from conftest import local_cluster

from napari_pix2pix import load_model, predict, save_model
from napari_pix2pix.cli import main
from napari_pix2pix.io.omezarr import read_zarr
from napari_pix2pix.labels.encodings import InstanceEncoding, make_encoding
from napari_pix2pix.models import ModelConfig, Normalisation, TrainedModel, build_model
from napari_pix2pix.prediction import PredictionSettings, objects3d, volume_geometry
from napari_pix2pix.prediction.volume import iter_volume_probabilities, z_grid
from napari_pix2pix.scale import cluster
from napari_pix2pix.scale.volumes import SlabLinks, VolumeSlabOutcome

SHAPE = (24, 48, 48)
CPU = ["--device", "cpu", "--quiet"]


def random_3d_model(volume: np.ndarray) -> TrainedModel:
    """A small 3D U-Net with random weights (batch norms that are not the identity): its output
    depends on the context of every voxel, so blocks and halos must be exactly those of one process.
    Its head is shifted so that about half of ``volume`` is each class."""
    torch.manual_seed(0)
    config = ModelConfig("unet-3d", 1, 2, 4, 2, z_skip=1)
    network = build_model(config).eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        logits = network(torch.from_numpy(volume[:8, :32, :32])[None, None])[0]
        network.head.bias[1] -= torch.median(logits[1] - logits[0])
    return TrainedModel(config, network, make_encoding(np.array([0, 1])), Normalisation((0.0,), (1.0,)), 32)


def threshold_3d_model() -> TrainedModel:
    """A 3D U-Net for instances whose weights make it a fixed rule, the 3D counterpart of conftest's
    ``ThresholdNetwork`` that a model file can hold: background below 0.25, boundary from 0.25 to
    0.75, interior above. Only the centre taps of the top level's convolutions pass the image on;
    everything deeper is zero."""
    config = ModelConfig("unet-3d", 1, 3, 1, 1, z_skip=0)
    network = build_model(config).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.weight.fill_(1.0)
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
        for block in (network.encoder[0], network.decoder[0]):
            for conv in (block[0], block[3]):
                conv.weight[0, 0, 1, 1, 1] = 1.0
        network.head.weight[:, 0] = torch.tensor([-40.0, 40.0, 0.0])[:, None, None, None]
        network.head.bias[:] = torch.tensor([10.0, -30.0, 0.0])
    return TrainedModel(config, network, InstanceEncoding(), Normalisation((0.0,), (1.0,)), 32)


def domes(seed: int = 0, count: int = 16) -> np.ndarray:
    """Ellipsoidal domes (9 slices deep, 15 pixels wide, bright in the middle, some touching) in a
    (24, 48, 48) volume: the rule above finds each one's interior and its boundary."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(SHAPE, np.float32)
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for _ in range(count):
        z, y, x = rng.integers(2, SHAPE[0] - 2), rng.integers(5, SHAPE[1] - 5), rng.integers(5, SHAPE[2] - 5)
        squared = ((zz - z) / 4.5) ** 2 + ((yy - y) / 7.5) ** 2 + ((xx - x) / 7.5) ** 2
        volume = np.maximum(volume, np.sqrt(np.clip(1 - squared, 0, 1)))
    return volume.astype(np.float32)


def matched_f1(found: np.ndarray, truth: np.ndarray) -> float:
    """F1 of the objects of ``found`` matched one-to-one to those of ``truth`` at IoU ≥ 0.5."""
    both = (found > 0) & (truth > 0)
    pairs, overlap = np.unique(np.stack([found[both], truth[both]]), axis=1, return_counts=True)
    areas_found, areas_truth = np.bincount(found.ravel()), np.bincount(truth.ravel())
    iou = overlap / (areas_found[pairs[0]] + areas_truth[pairs[1]] - overlap)
    matched = int((iou >= 0.5).sum())
    n_found, n_truth = len(np.unique(found)) - 1, len(np.unique(truth)) - 1
    return 2 * matched / (n_found + n_truth)


def borders(n_workers: int = 2) -> list[int]:
    """Where the cluster cuts the test volume for the threshold model (its z grid is 4 slices)."""
    return [start for start, _ in cluster.slabs(SHAPE[0], n_workers, 4)][1:]


@pytest.fixture(scope="module")
def scheduler():
    """The address of a local cluster of 2 worker processes, for the runs given ``--scheduler``."""
    with local_cluster() as (cluster, _):
        yield cluster.scheduler_address


def test_a_range_of_slices_is_predicted_as_the_whole_volume_pass_predicts_it():
    volume = np.random.default_rng(2).random((14, 32, 32)).astype(np.float32)
    model = random_3d_model(volume)
    settings = PredictionSettings(device="cpu", tile_size=32)
    geometry = volume_geometry(volume.shape, model)
    whole = dict(iter_volume_probabilities(model, volume, geometry, settings))
    assert z_grid(model, geometry, settings) == 4
    for wanted in (range(5, 11), range(8, 14), range(0, 3)):  # on the grid or not, to the end or not
        part = list(iter_volume_probabilities(model, volume, geometry, settings, slices=wanted))
        assert [index for index, _ in part] == list(wanted)
        for index, probabilities in part:
            np.testing.assert_array_equal(probabilities, whole[index])


def test_class_labels_and_probabilities_equal_one_process(tmp_path, monkeypatch, scheduler, capsys):
    monkeypatch.chdir(tmp_path)
    volume = np.random.default_rng(1).random(SHAPE).astype(np.float32)
    save_model(replace(random_3d_model(volume), voxel_size=(1.0, 0.5, 0.5)), tmp_path / "r.pt")
    model = load_model(tmp_path / "r.pt")
    tifffile.imwrite(tmp_path / "v.tif", volume, photometric="minisblack")
    assert main(["predict", "r.pt", "v.tif", "--out", "labels.zarr", "--workers", "2", *CPU]) == 0
    labels = read_zarr(tmp_path / "labels.zarr")[0][:]
    expected = predict(model, volume, "labels", device="cpu")
    assert 0.05 < expected.mean() < 0.95  # both classes, so the comparison means something
    np.testing.assert_array_equal(labels, expected)
    capsys.readouterr()
    # slices 1.5× thicker than the model's: every task rescales along z the slices its slab needs,
    # and the volume is exactly the one process's (which streams the same way)
    command = [
        "predict",
        "r.pt",
        "v.tif",
        "--out",
        "p.zarr",
        "--output",
        "probability",
        "--voxel-size",
        "1.5",
        ".5",
        ".5",
    ]
    assert main([*command, "--scheduler", scheduler, *CPU]) == 0
    assert capsys.readouterr().err.count("the model learned 1 × 0.5 × 0.5: predicting at 1.5 × 1 × 1") == 1
    expected = predict(model, volume, "probability", device="cpu", voxel_size=(1.5, 0.5, 0.5))
    assert not np.array_equal(expected, predict(model, volume, "probability", device="cpu"))  # rescaled
    np.testing.assert_array_equal(read_zarr(tmp_path / "p.zarr")[0][:], expected)


@pytest.mark.parametrize("halo", [None, 2])
def test_instances_agree_with_one_process_and_are_merged_across_slabs(tmp_path, monkeypatch, halo, scheduler):
    monkeypatch.chdir(tmp_path)
    if halo is not None:  # a halo shallower than the objects: the merge across borders does the work
        monkeypatch.setattr(cluster, "object_halo", lambda model: halo)
    save_model(threshold_3d_model(), tmp_path / "t.pt")
    model = load_model(tmp_path / "t.pt")
    volume = domes()
    tifffile.imwrite(tmp_path / "v.tif", volume, photometric="minisblack")
    where = ["--workers", "2"] if halo is None else ["--scheduler", scheduler]
    assert main(["predict", "t.pt", "v.tif", "--out", "i.zarr", "--output", "instances", *where, *CPU]) == 0
    found = read_zarr(tmp_path / "i.zarr")[0][:]
    truth = predict(model, volume, "instances", device="cpu")
    n_found, n_truth = len(np.unique(found)) - 1, len(np.unique(truth)) - 1
    assert found.dtype == np.uint32 and n_truth >= 8
    assert abs(n_found - n_truth) <= max(1, n_truth // 10) and matched_f1(found, truth) >= 0.9
    assert np.array_equal(np.unique(found), np.arange(n_found + 1))  # ids 1…N, no gaps
    from skimage.measure import label

    for object_id in range(1, n_found + 1):  # one id, one object: never two objects sharing an id
        assert label(found == object_id, connectivity=1).max() == 1
    for border in borders():  # an object crossing a border keeps its id across it
        for object_id in np.unique(truth[border - 1 : border + 1]):
            above, below = (found[z][truth[z] == object_id] for z in (border - 1, border))
            if object_id and above.size > 20 and below.size > 20:
                assert np.bincount(above).argmax() == np.bincount(below).argmax()


@pytest.mark.parametrize("planes", [10, 20])
def test_one_process_finds_a_large_volumes_objects_slab_by_slab(monkeypatch, planes):
    """A volume of more than SLAB_VOXELS voxels has its objects found a slab at a time (memory: one
    slab and its halos, whatever the depth), with the whole volume's objects and unique ids. The
    halos are 4 slices (a quarter of the 16 taken as an object's depth when the model does not
    know it; 10 planes are too few for that, so the block grows to 12) and 5 (a quarter of 20
    planes); the objects are 9 deep, and matched across the borders."""
    model, volume = threshold_3d_model(), domes()
    whole = predict(model, volume, "instances", device="cpu")
    monkeypatch.setattr(objects3d, "SLAB_VOXELS", planes * SHAPE[1] * SHAPE[2])
    depth, halo = objects3d.slab_plan(model, volume_geometry(volume.shape, model))
    assert model.object_size is None and halo == max(planes // 4, 4) and depth + 2 * halo == max(planes, 3 * halo)
    planes = depth + 2 * halo
    blocks = []
    found_in_3d = objects3d.objects_in_3d
    monkeypatch.setattr(objects3d, "objects_in_3d", lambda m, p, c: blocks.append(len(p)) or found_in_3d(m, p, c))
    found = predict(model, volume, "instances", device="cpu")
    assert len(blocks) == -(-SHAPE[0] // depth) > 1 and max(blocks) <= planes < SHAPE[0]  # never the whole volume
    n_found, n_whole = len(np.unique(found)) - 1, len(np.unique(whole)) - 1
    assert found.dtype == np.uint32 and n_whole >= 8
    assert abs(n_found - n_whole) <= max(1, n_whole // 10) and matched_f1(found, whole) >= 0.9
    assert np.array_equal(np.unique(found), np.arange(n_found + 1))  # ids 1…N, no gaps
    from skimage.measure import label

    for object_id in range(1, n_found + 1):  # one id, one object
        assert label(found == object_id, connectivity=1).max() == 1


def test_slab_halos_are_a_quarter_of_an_objects_depth_at_least():
    """On big slices the block of slab and halos is 2**24 voxels (16 slices of 1024²) while its halo
    of a quarter of the block covers a quarter of an object's depth; on larger slices the block grows
    rather than cut the halo short, and the halo never exceeds one object's depth."""
    model = replace(threshold_3d_model(), object_size=40.0, voxel_size=(0.284, 0.128, 0.128))
    assert objects3d.object_halo(model) == 19  # 40 px of 0.128 over slices of 0.284
    geometry = objects3d.VolumeGeometry(100, 1024, 1024, 1, True)
    assert objects3d.slab_plan(model, geometry) == (6, 5)  # 16 slices: halos of ceil(19 / 4)
    geometry = objects3d.VolumeGeometry(100, 2048, 2048, 1, True)
    assert objects3d.slab_plan(model, geometry) == (5, 5)  # 4 slices would fit: grown to 15
    geometry = objects3d.VolumeGeometry(300, 256, 256, 1, True)
    assert objects3d.slab_plan(model, geometry) == (256 - 2 * 19, 19)  # room for a whole object's depth
    geometry = objects3d.VolumeGeometry(100, 256, 256, 1, True)
    assert objects3d.slab_plan(model, geometry) == (100, 0)  # 2**24 voxels or fewer: whole


def test_what_cannot_work_on_the_cluster_is_one_line(tmp_path, monkeypatch, scheduler, capsys):
    monkeypatch.chdir(tmp_path)
    save_model(threshold_3d_model(), tmp_path / "t.pt")
    volume = domes()
    volume[13, 5, 5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", volume, photometric="minisblack")
    tifffile.imwrite(tmp_path / "flat.tif", volume[0], photometric="minisblack")
    import dask

    before = dask.config.get("scheduler", None)
    for name, words in (("nan.tif", "slice 13"), ("flat.tif", "--workers predicts stacks")):
        assert main(["predict", "t.pt", name, "--out", "o.zarr", "--scheduler", scheduler, *CPU]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and "Traceback" not in err, err
        assert not (tmp_path / "o.zarr").exists()
        assert dask.config.get("scheduler", None) == before  # later dask arrays compute without the client


def test_objects_are_linked_across_a_border_by_their_views_of_it():
    """Slab 0 ends with slice 3, slab 1 starts with slice 4. An object crossing the border (the left
    half) is one object; two objects stacked in z that touch at the border (the right half: one ends
    at slice 3, another starts at slice 4) stay two, as both slabs saw them, where linking the last
    slice of one slab to the first of the next by their overlap would merge them."""
    left, right = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    left[2:6, 2:4], right[2:6, 4:6] = 1, 1
    # each slab's own ids: slab 0 has 1 (left) and 2 (right, to slice 3), and sees the right object
    # of slice 4 as its 3; slab 1 has 5 (left) and 7 (right, from slice 4), and sees slab 0's 2 as its 6
    high = np.stack([left * 1 + right * 2, left * 1 + right * 3])  # slices 3 and 4 as slab 0 saw them
    low = np.stack([left * 5 + right * 6, left * 5 + right * 7])  # slices 3 and 4 as slab 1 saw them
    links = SlabLinks(2)
    links.add(1, VolumeSlabOutcome(largest=7, ids=np.array([5, 7]), low=low))
    links.add(0, VolumeSlabOutcome(largest=2, ids=np.array([1, 2]), high=high))
    slab0, slab1 = links.lookups(np.dtype(np.uint32))
    assert slab0[1] == slab1[5] == 1  # one object through the border
    assert slab0[2] == 2 and slab1[7] == 3  # the stacked ones stay apart; ids 1…3
    assert not links.low and not links.high  # the border's views are dropped once compared
