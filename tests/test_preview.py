"""The live training preview drawn in the Train dock: labels in colour over the slice in grey."""

import numpy as np

from napari_pix2pix._widgets.preview import MAX_SIDE, PreviewPicture, overlay


def test_overlay_colours_the_labels_and_keeps_the_image_grey_elsewhere():
    image = np.tile(np.linspace(0, 1000, 40, dtype=np.float32), (30, 1))
    labels = np.zeros((30, 40), np.int32)
    labels[5:10, 5:10], labels[20:25, 20:30] = 1, 2
    picture = overlay(image, labels)
    assert picture.shape == (30, 40, 3) and picture.dtype == np.uint8
    spread = picture.max(axis=-1).astype(int) - picture.min(axis=-1)
    assert (spread[labels == 0] == 0).all(), "unlabelled pixels are grey"
    assert (spread[labels > 0] > 20).all(), "labelled pixels are coloured"
    flat = overlay(np.zeros((30, 40)), labels)
    assert not np.array_equal(flat[7, 7], flat[22, 22]), "neighbouring labels differ in colour"
    assert picture[0, 0, 0] < picture[0, -1, 0], "the image's brightness shows through"


def test_overlay_of_a_big_multichannel_slice_is_drawn_at_most_max_side():
    picture = overlay(np.random.default_rng(0).random((2048, 1024, 2)), np.ones((2048, 1024), np.uint16))
    assert picture.shape == (MAX_SIDE, MAX_SIDE // 2, 3)


def test_overlay_of_an_image_of_another_size_shows_the_labels_alone():
    picture = overlay(np.ones((10, 10)), np.ones((20, 20), np.int32))
    assert picture.shape == (20, 20, 3) and picture.max() > 0


def test_the_picture_draws_and_clears(qtbot):
    widget = PreviewPicture()
    qtbot.addWidget(widget)
    widget.show_picture(overlay(np.ones((50, 100)), np.zeros((50, 100), np.int32)), "Preview: epoch 1")
    assert widget.caption == "Preview: epoch 1" and widget.toolTip() == "Preview: epoch 1"
    widget.resize(300, 170)
    assert not widget.grab().isNull()
    widget.clear()
    assert widget.picture is None and widget.caption == ""


def test_a_3d_network_previews_a_block_around_the_slice_in_view(make_napari_viewer):
    """The Train dock's preview with a 3D network: a block of slices around the viewed one is
    predicted in the training thread's turn, and the viewed slice's labels are drawn."""
    from napari_pix2pix._widgets.preview import LivePreview
    from napari_pix2pix.samples import nuclei_volume
    from napari_pix2pix.training import Trainer, TrainingConfig
    from napari_pix2pix.training.events import EventKind

    image, labels = nuclei_volume((20, 48, 48), seed=1)
    viewer = make_napari_viewer()
    layer = viewer.add_image(image)
    viewer.dims.set_current_step(0, 18)
    picture = PreviewPicture()
    live = LivePreview(viewer, picture)
    live.start(layer)
    config = TrainingConfig(dims="3d", voxel_size=(0.5, 0.25, 0.25), epochs=1, steps_per_epoch=2, batch_size=1,
                            width=4, depth=2, device="cpu", max_minutes=None, preview_every=1)  # fmt: skip
    trainer = Trainer(image, labels, config, preview_source=live.source)
    previews = [event.preview for event in trainer.run() if event.kind == EventKind.PREVIEW]
    assert previews and previews[0].shape == (16, 48, 48)  # the block: slices 4-19 around slice 18
    live.show(previews[0], 1)
    assert picture.caption.endswith("slice 18, epoch 1") and picture.picture is not None
    assert live.source(depth=None).shape == (48, 48)  # a 2D network still gets the slice alone
