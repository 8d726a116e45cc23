"""The U-Net paper's boundary weight map: thin gaps between objects weigh more in the loss."""

import numpy as np
import pytest
import torch

from napari_pix2pix.labels.encodings import IGNORE, DenseEncoding, InstanceEncoding
from napari_pix2pix.training.steps import segmentation_loss
from napari_pix2pix.training.weightmap import boundary_weights


def two_cells(gap: int) -> np.ndarray:
    """Class targets: two 20×20 cells (class 1) separated by a ``gap``-pixel membrane (class 0)."""
    targets = np.zeros((1, 40, 60), np.int64)
    targets[0, 10:30, 5:25] = 1
    targets[0, 10:30, 25 + gap : 45 + gap] = 1
    return targets


def test_the_gap_between_two_objects_weighs_as_the_paper_says():
    weights = boundary_weights(two_cells(gap=2), (1,), weight=10.0, sigma=5.0)[0]
    # A gap pixel is 1 px from one cell and 2 px from the other (edges, not centres): d1 + d2 = 3.
    assert weights[20, 25] == pytest.approx(1 + 10 * np.exp(-(3**2) / (2 * 5**2)), rel=1e-4)
    assert weights[0, 0] == 1.0  # far from any gap
    wide = boundary_weights(two_cells(gap=12), (1,), weight=10.0, sigma=5.0)[0]
    assert wide[20, 31] < weights[20, 25] - 5  # a wide gap matters far less than a thin one


def test_one_object_or_no_weight_leaves_every_pixel_at_one():
    single = np.zeros((1, 32, 32), np.int64)
    single[0, 8:20, 8:20] = 1
    assert (boundary_weights(single, (1,), weight=10.0) == 1).all()
    assert (boundary_weights(two_cells(gap=2), (1,), weight=0.0) == 1).all()


def test_the_objects_are_the_classes_the_annotation_kind_names():
    assert DenseEncoding((0, 255), background=0).object_classes == (1,)
    assert DenseEncoding((0, 1, 2), background=1).object_classes == (0, 2)
    assert InstanceEncoding().object_classes == (1,)  # interiors; the boundary class keeps them apart


def test_weighted_loss_keeps_its_scale_and_follows_the_weights():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, generator=generator)
    targets = torch.randint(0, 2, (2, 16, 16), generator=generator)
    targets[:, :4] = IGNORE
    plain = segmentation_loss(logits, targets)
    assert segmentation_loss(logits, targets, torch.full((2, 16, 16), 7.0)) == pytest.approx(float(plain), rel=1e-5)
    wrong = logits.argmax(1) != targets  # weighing the wrongly classified pixels up raises the loss
    assert segmentation_loss(logits, targets, 1 + 9 * wrong.float()) > plain


def test_training_with_the_weight_map_learns(membranes, monkeypatch):
    from conftest import tiny_config

    from napari_pix2pix.prediction import predict
    from napari_pix2pix.training import Trainer, fit

    # Validate every epoch: the usual schedule follows the clock, so which weights are kept would
    # depend on the machine's load.
    monkeypatch.setattr(Trainer, "_validation_due", lambda self: True)
    image, labels = membranes
    model = fit(image, labels, tiny_config(boundary_weight=10.0, epochs=6, steps_per_epoch=5))
    predicted, truth = predict(model, image[:1], device="cpu"), labels[:1]
    assert truth.mean() > 0.2  # a fifth of the pixels are membrane: "all interior" would score 0.8
    membrane_found = (predicted[truth == 1] == 1).mean()
    # 0.86 and 0.80 measured (weights kept by the Dice of the cells, the objects of these labels);
    # all interior scores 0.79 and 0, all membrane 0.21 and 1.
    assert (predicted == truth).mean() > 0.84 and membrane_found > 0.7


def test_the_weight_map_is_on_by_default_for_instances_only(membranes):
    from conftest import tiny_config

    from napari_pix2pix.samples.synthetic import membrane_volume
    from napari_pix2pix.training import Trainer

    image, labels = membranes
    assert Trainer(image, labels, tiny_config()).sampler.weights is None  # dense: off (measured no better)
    assert Trainer(image, labels, tiny_config(boundary_weight=3.0)).sampler.weights.max() > 1
    cells, _, instances = membrane_volume((2, 64, 64), cell_size=20, seed=1)  # touching cells, one id each
    weights = Trainer(cells, instances, tiny_config(annotation="instances")).sampler.weights
    assert weights is not None and weights.max() > 5  # between touching objects
    assert Trainer(cells, instances, tiny_config(annotation="instances", boundary_weight=0)).sampler.weights is None


def test_in_a_volume_the_gap_is_measured_in_physical_units():
    from napari_pix2pix.training.weightmap import volume_boundary_weights

    targets = np.zeros((12, 20, 40), np.int64)
    targets[:, 5:15, 5:18] = 1  # two objects side by side in the plane, 2 px apart…
    targets[:, 5:15, 20:33] = 1
    stacked = np.zeros((12, 20, 20), np.int64)
    stacked[1:5, 5:15, 5:15] = 1  # …and two stacked along z, 2 slices apart
    stacked[7:11, 5:15, 5:15] = 1
    in_plane = volume_boundary_weights(targets, (1,), 10.0, (1.0, 1.0, 1.0))
    assert in_plane[6, 10, 18] == pytest.approx(1 + 10 * np.exp(-(3**2) / 50), rel=1e-4)
    isotropic = volume_boundary_weights(stacked, (1,), 10.0, None)[5, 10, 10]
    anisotropic = volume_boundary_weights(stacked, (1,), 10.0, (3.0, 1.0, 1.0))[5, 10, 10]
    assert isotropic == pytest.approx(1 + 10 * np.exp(-(3**2) / 50), rel=1e-4)
    assert anisotropic == pytest.approx(1 + 10 * np.exp(-(9**2) / 50), rel=1e-4)  # slices 3 px apart


def test_3d_training_of_instances_uses_the_weight_map():
    from conftest import tiny_config

    from napari_pix2pix.samples.synthetic import membrane_volume
    from napari_pix2pix.training import Trainer

    cells, _, instances = membrane_volume((8, 32, 32), cell_size=12, seed=1)
    config = tiny_config(annotation="instances", dims="3d", voxel_size=(2.0, 1.0, 1.0))
    trainer = Trainer(cells, instances, config)
    _, _, weights = trainer.sampler.sample(2)
    assert weights is not None and weights.shape == (2, *trainer.sampler.patch) and weights.max() > 5
    unweighted = Trainer(cells, instances, tiny_config(annotation="instances", dims="3d", boundary_weight=0))
    assert unweighted.sampler.sample(1)[2] is None
