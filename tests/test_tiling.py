import numpy as np
import pytest
import torch

from napari_pix2pix.errors import InputError
from napari_pix2pix.labels.encodings import DenseEncoding
from napari_pix2pix.models import ModelConfig, Normalisation, build_model
from napari_pix2pix.models.trained import TrainedModel
from napari_pix2pix.prediction.tiling import tile_layout


def model(architecture="unet", depth=2, patch_size=64):
    config = ModelConfig(architecture, 1, 2, width=2, depth=depth)
    return TrainedModel(config, build_model(config), DenseEncoding((0, 1)), Normalisation((0.0,), (1.0,)), patch_size)


def coverage(layout):
    """How many tiles' outputs cover each pixel, and the sum of their blending weights."""
    count = np.zeros((layout.height, layout.width))
    weight = np.zeros((layout.height, layout.width))
    for y, x in layout.tiles:
        h, w = min(layout.out_h, layout.height - y), min(layout.out_w, layout.width - x)
        count[y : y + h, x : x + w] += 1
        weight[y : y + h, x : x + w] += layout.weights(y, x)[:h, :w]
    return count, weight


@pytest.mark.parametrize(
    "height, width, tile, overlap", [(50, 70, 32, 8), (300, 129, 64, 16), (64, 64, 64, 16), (1000, 37, 128, None)]
)
def test_padded_tiles_cover_every_pixel_with_weights_summing_to_one(height, width, tile, overlap):
    layout = tile_layout(model(), height, width, tile, overlap)
    count, weight = coverage(layout)
    assert count.min() >= 1 and count.max() <= 4  # never more than two tiles along an axis
    np.testing.assert_allclose(weight, 1.0, atol=1e-6)
    assert layout.out_h % 4 == 0 and layout.out_w % 4 == 0  # sides stay multiples of 2**depth
    assert all(y % 4 == 0 and x % 4 == 0 for y, x in layout.tiles)  # starts stay on the pooling grid


def test_a_slice_that_fits_is_one_tile_and_a_large_one_gets_equal_tiles():
    assert tile_layout(model(), 100, 120, None, None).tiles == [(0, 0)]
    layout = tile_layout(model(), 1100, 300, 512, 64)
    starts = sorted({y for y, _ in layout.tiles})
    assert len(starts) == 3 and layout.out_h <= 512
    assert starts[-1] + layout.out_h - 1100 < layout.out_h // 2  # the last tile does not reach far past the edge


def test_default_tile_follows_the_training_patch():
    # At most four patches (at least 512) across, shrunk a little so that equal tiles fit the slice.
    assert 768 < tile_layout(model(patch_size=256), 5000, 5000, None, None).out_h <= 1024
    assert 384 < tile_layout(model(patch_size=32), 5000, 5000, None, None).out_h <= 512


def test_seed_unet_tiles_carry_context_around_their_output():
    seed = model("seed-unet", depth=4, patch_size=140)
    layout = tile_layout(seed, 300, 200, 188, None)
    assert layout.in_h == 188 and layout.out_h == seed.network.output_size(188)
    assert layout.offset == seed.network.output_offset(188) > 0
    count, weight = coverage(layout)
    assert count.min() >= 1
    np.testing.assert_allclose(weight, 1.0, atol=1e-6)


def test_seed_unet_tile_too_small_and_negative_overlap_are_explained():
    with pytest.raises(InputError, match="too small"):
        tile_layout(model("seed-unet", depth=4), 300, 300, 100, None)
    with pytest.raises(InputError, match="overlap must not be negative"):
        tile_layout(model(), 300, 300, 64, -1)


def test_blending_reproduces_a_whole_image_pass():
    from napari_pix2pix.prediction import predict

    trained = model()
    torch.manual_seed(0)
    trained.network.eval()
    image = np.random.default_rng(0).random((96, 80), dtype=np.float32)
    tiled = predict(trained, image, "probability", tile_size=32, overlap=16, device="cpu")
    with torch.no_grad():
        whole = torch.softmax(trained.network(torch.from_numpy(image)[None, None]), 1)[0, 1].numpy()
    assert np.abs(tiled - whole).max() < 1e-4  # float32 noise of different convolution kernels
