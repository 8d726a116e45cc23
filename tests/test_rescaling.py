"""Rescaling says what it does: a capped rescaling and training images of different pixel sizes are
warnings a user sees (a line on the command line, a notification in napari), not silent choices."""

import pytest
from conftest import threshold_model, two_slices_of_discs

from napari_pix2pix.checks import PixelSizesDifferWarning, common_pixel_size
from napari_pix2pix.prediction import predict
from napari_pix2pix.prediction.rescale import RescaleLimitWarning


def test_a_rescaling_beyond_the_limit_is_capped_and_said():
    model = threshold_model()
    model.pixel_size = (0.1, 0.1)
    image = two_slices_of_discs()
    with pytest.warns(RescaleLimitWarning, match=r"6× the size of the model's.*predicting at 4×"):
        result = predict(model, image, pixel_size=(0.6, 0.6), match_pixel_size=True, device="cpu")
    assert result.shape == image.shape
    with pytest.warns(RescaleLimitWarning, match="limited to"):
        model.object_size = 100.0
        predict(model, image, object_size=10.0, device="cpu")  # 10× would be needed


def test_within_the_limit_nothing_is_said(recwarn):
    model = threshold_model()
    model.pixel_size = (0.1, 0.1)
    predict(model, two_slices_of_discs(), pixel_size=(0.2, 0.2), match_pixel_size=True, device="cpu")
    assert not [w for w in recwarn if issubclass(w.category, RescaleLimitWarning)]


def test_training_images_of_different_pixel_sizes_are_said(recwarn):
    assert common_pixel_size([None, (0.5, 0.5), (0.505, 0.5)]) == (0.5, 0.5)  # within 2 %: one scale
    assert not [w for w in recwarn if issubclass(w.category, PixelSizesDifferWarning)]
    with pytest.warns(PixelSizesDifferWarning, match=r"differ \(0.5 × 0.5, 2 × 2\).*stores the first"):
        assert common_pixel_size([(0.5, 0.5), (2.0, 2.0)]) == (0.5, 0.5)
    assert common_pixel_size([None, None]) is None
