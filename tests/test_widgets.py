"""The napari face: widgets load through the plugin manifest, train in a worker, predict layers,
and turn every bad input into a notification. Runs under Xvfb (pytest-xvfb)."""

import dataclasses
import time

import numpy as np
import pytest
import torch
from conftest import tiny_config
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QTimer
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QFileDialog

from napari_pix2pix._widgets import model_store
from napari_pix2pix.io import save_model
from napari_pix2pix.models.networks import ARCHITECTURES
from napari_pix2pix.prediction import predict as predict_array
from napari_pix2pix.samples.synthetic import membrane_volume
from napari_pix2pix.training.config import FINE_TUNE_RATE

PLUGIN = "napari-pix2pix"


@pytest.fixture
def viewer(make_napari_viewer):
    notification_manager.records.clear()
    return make_napari_viewer(show=True)


@pytest.fixture
def stack(viewer):
    image, membranes, _ = membrane_volume((3, 64, 64), cell_size=20, seed=4)
    image_layer = viewer.add_image(image, name="em", scale=(2.0, 0.5, 0.5), translate=(0, 10, 20))
    labels_layer = viewer.add_labels(membranes, name="em labels", scale=(2.0, 0.5, 0.5), translate=(0, 10, 20))
    return image_layer, labels_layer


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    # Let the canvas draw once at its new size: changing layers before the first paint can crash
    # Mesa's software OpenGL under Xvfb (inside vispy, not in the plugin).
    QTest.qWait(100)
    return widget


def small_settings(widget, epochs=2):
    widget.epochs.value = epochs
    widget.advanced.patch_size.value = 64
    widget.advanced.batch_size.value = 2
    widget.advanced.device.value = "cpu"
    widget.advanced.network_width.value = 4
    widget.advanced.network_depth.value = 2


def messages():
    return [str(n.message) for n in notification_manager.records]


def wait_idle(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def test_widgets_and_samples_load_through_the_manifest(viewer):
    train, predict = dock(viewer, "Train"), dock(viewer, "Predict")
    viewer.open_sample(PLUGIN, "nuclei")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    assert viewer.layers["nuclei"].data.shape == (4, 256, 256)
    assert train.image_picker.value is viewer.layers["nuclei"]
    assert train.labels_picker.value is viewer.layers["nuclei labels"]
    viewer.open_sample(PLUGIN, "membranes")
    assert viewer.layers["membranes EM"].data.shape == viewer.layers["membranes EM labels"].data.shape
    assert predict.image_picker.choices[-1] is viewer.layers["membranes EM"]
    # Depth starts at "auto": the network's own (4, the 3D U-Net 3); a number is passed on
    assert train.advanced.network_depth.native.text().startswith("auto") and train.config().depth is None
    train.advanced.network_depth.value = 5
    assert train.config().depth == 5
    # 3D binning starts at "auto" (None: the voxel size and the objects decide); a number is passed on
    assert train.advanced.binning.native.text().startswith("auto") and train.config().binning is None
    train.advanced.binning.value = 1
    assert train.config().binning == 1


def test_pickers_follow_renames_and_removals(viewer, stack):
    train = dock(viewer, "Train")
    image_layer, _ = stack
    image_layer.name = "renamed"
    assert "renamed" in [train.image_picker.native.itemText(i) for i in range(train.image_picker.native.count())]
    viewer.layers.remove(image_layer)
    assert train.image_picker.value is None


def test_both_docks_fit_a_laptop_screen_and_scroll(viewer):
    """napari stacks docks without scrolling them: ours scroll, so with Train and Predict open its
    window still fits a 1080-pixel screen and their contents stay reachable."""
    from qtpy.QtWidgets import QScrollArea

    for name in ("Train", "Predict"):
        widget = dock(viewer, name)
        assert widget.minimumSizeHint().height() <= 320
        (scroll,) = widget.findChildren(QScrollArea)
        assert scroll.widget().sizeHint().height() > widget.minimumSizeHint().height()


def test_training_runs_to_the_end_with_plot_preview_and_model(viewer, stack, qtbot):
    train = dock(viewer, "Train")
    small_settings(train)
    labels_before = stack[1].data.copy()
    train.start()
    assert not train.start_button.isEnabled() and train.stop_button.isEnabled()
    wait_idle(qtbot, train)
    assert train.start_button.isEnabled()
    assert train.progress.value() == train.progress.maximum()  # the whole run
    config = train.config()
    assert len(train.plot.series["training loss"]) == config.epochs * config.steps_per_epoch
    assert len(train.plot.series["validation Dice"]) == 2
    assert train.model is not None and model_store.get(model_store.names()[-1]) is train.model
    assert "device: cpu" in train.status.text().lower()
    # The live preview is drawn in the dock (the slice in grey, the labels in colour), not as a layer.
    picture = train.preview.picture
    assert picture is not None and picture.shape == (64, 64, 3)
    assert "epoch" in train.preview.caption and len(viewer.layers) == 2
    assert not train.preview.isHidden()
    train.live_preview.value = False  # unticked: the picture is hidden
    assert train.preview.isHidden()
    np.testing.assert_array_equal(stack[1].data, labels_before)  # the user's labels are untouched


def test_pix2pix_plots_generator_and_discriminator(viewer, stack, qtbot):
    train = dock(viewer, "Train")
    small_settings(train, epochs=1)
    train.model_choice.value = "pix2pix"
    assert train.advanced.learning_rate.value == pytest.approx(2e-4)
    train.advanced.patch_size.value = 64
    train.start()
    wait_idle(qtbot, train)
    assert len(train.plot.series["generator loss"]) == len(train.plot.series["discriminator loss"]) > 0
    assert train.model.architecture == "pix2pix"


def test_stop_keeps_a_usable_model_and_predict_adds_a_matching_layer(viewer, stack, qtbot):
    train, predict = dock(viewer, "Train"), dock(viewer, "Predict")
    small_settings(train, epochs=1000)
    train.live_preview.value = False
    train.start()
    qtbot.waitUntil(lambda: train.progress.value() >= 2, timeout=60_000)
    train.stop()
    wait_idle(qtbot, train, timeout=30_000)
    assert train.progress.value() < train.progress.maximum()
    assert train.model is not None
    assert predict.model_choice.value == model_store.names()[-1]

    predict.image_picker.value = stack[0]
    predict.run()
    wait_idle(qtbot, predict)
    result = viewer.layers[-1]
    assert result.name == "em predicted labels" and type(result).__name__ == "Labels"
    assert result.data.shape == (3, 64, 64) and result.data.dtype == np.uint8
    assert set(np.unique(result.data)) <= {0, 1}
    np.testing.assert_array_equal(result.scale, stack[0].scale)
    np.testing.assert_array_equal(result.translate, stack[0].translate)


def test_predict_outputs_and_cancel(viewer, stack, qtbot, tiny_model):
    predict = dock(viewer, "Predict")
    model_store.add("tiny", tiny_model)
    predict.model_choice.value = "tiny"
    predict.image_picker.value = stack[0]
    for output, kind in [("instances", "Labels"), ("probability", "Image")]:
        predict.output_choice.value = output
        assert predict.link_slices.visible == (output == "instances")
        predict.run()
        wait_idle(qtbot, predict)
        assert viewer.layers[-1].name == f"em predicted {output}" and type(viewer.layers[-1]).__name__ == kind
        assert viewer.layers[-1].data.shape == (3, 64, 64)
    count = len(viewer.layers)
    predict.batch_size.value = 1
    predict.run()
    predict.cancel()
    wait_idle(qtbot, predict)
    assert len(viewer.layers) == count
    assert "cancelled" in predict.status.text()


def test_predict_options_reach_the_engine_and_the_output_follows_the_model(viewer, stack, qtbot, tiny_model):
    from napari_pix2pix.samples import nuclei_stack
    from napari_pix2pix.training import fit

    predict = dock(viewer, "Predict")
    model_store.add("tiny", tiny_model)
    predict.model_choice.value = "tiny"
    assert predict.output_choice.value == "labels"
    results = {}
    for separate in (False, True):
        predict.separate.value, predict.tta.value, predict.rescale.value = separate, True, False
        predict.min_size.value, predict.fill_holes.value = 3, 3
        predict.run()
        wait_idle(qtbot, predict)
        results[separate] = viewer.layers[-1].data
    assert results[False].shape == results[True].shape == (3, 64, 64)
    # Watershed lines only ever turn object pixels into background (here the membrane class 1).
    background = tiny_model.encoding.class_values[tiny_model.encoding.background]
    changed = results[False] != results[True]
    assert (results[True][changed] == background).all()
    image, labels = nuclei_stack()
    model_store.add(
        "nuclei", fit(image[:1, :64, :64], labels[:1, :64, :64], tiny_config(epochs=1, annotation="instances"))
    )
    predict.model_choice.value = "nuclei"
    assert predict.output_choice.value == "instances"  # an instance model offers instances
    assert predict.link_slices.visible
    assert not predict.separate.visible  # its boundary class already separates objects: the option would do nothing


def test_train_widget_runs_until_the_time_budget_by_default(viewer):
    train = dock(viewer, "Train")
    assert train.epochs.value == 0 and "0: until the time budget" in train.epochs.label
    config = train.config()
    assert config.epochs is None and config.max_minutes == 10
    assert (
        config.boundary_weight is None and "auto" in train.advanced.boundary_weight.native.text()
    )  # by annotation kind
    train.advanced.boundary_weight.value = 5
    assert train.config().boundary_weight == 5
    assert config.batch_size is None and "0 = automatic" in train.advanced.batch_size.label  # fits the free memory
    train.advanced.batch_size.value = 3
    assert train.config().batch_size == 3


def test_dask_layer_is_predicted(viewer, qtbot, tiny_model):
    import dask.array as da

    image, _, _ = membrane_volume((4, 64, 64), cell_size=20, seed=5)
    layer = viewer.add_image(da.from_array(image, chunks=(1, 64, 64)), name="lazy")
    predict = dock(viewer, "Predict")
    model_store.add("tiny", tiny_model)
    predict.model_choice.value = "tiny"
    predict.image_picker.value = layer
    predict.run()
    wait_idle(qtbot, predict)
    result = viewer.layers[-1]
    assert result.data.shape == (4, 64, 64) and type(result).__name__ == "Labels"
    import os

    import zarr

    assert isinstance(result.data, zarr.Array)  # on disk, not in memory
    assert str(result.data.store_path.store.root).startswith(os.environ["XDG_CACHE_HOME"])
    assert "kept on disk" in predict.status.text()
    in_memory = predict_array(tiny_model, image, device="cpu")
    np.testing.assert_array_equal(result.data[:], in_memory)


# ---------------------------------------------------------------------------- bad input


def test_missing_layers_are_explained(viewer):
    train, predict = dock(viewer, "Train"), dock(viewer, "Predict")
    train.start()
    predict.run()
    assert any("choose an Image layer" in m for m in messages())
    assert not train.running and not predict.running


def test_missing_labels_layer_is_explained(viewer):
    viewer.add_image(np.zeros((32, 32)))
    dock(viewer, "Train").start()
    assert any("add a Labels layer" in m for m in messages())


@pytest.mark.parametrize(
    "labels, expected",
    [
        (np.ones((3, 64, 48), np.uint8), "does not match"),
        (np.zeros((3, 64, 64), np.uint8), "all zero"),
    ],
)
def test_bad_annotations_are_notified(viewer, qtbot, labels, expected):
    image, _, _ = membrane_volume((3, 64, 64), cell_size=20, seed=4)
    viewer.add_image(image, name="em")
    layer = viewer.add_labels(labels, name="bad")
    train = dock(viewer, "Train")
    small_settings(train)
    train.start()
    wait_idle(qtbot, train)
    assert any(expected in m for m in messages())
    assert train.model is None and train.start_button.isEnabled()
    assert (layer.data == labels).all()  # the user's layer is untouched


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_notified(viewer, stack, qtbot):
    train = dock(viewer, "Train")
    small_settings(train)
    train.advanced.device.value = "cuda"
    train.start()
    wait_idle(qtbot, train)
    assert any("CUDA was chosen" in m for m in messages())


def test_out_of_memory_is_notified(viewer, stack, qtbot, monkeypatch):
    from napari_pix2pix.training import loop as training

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(training.SegmentationStep, "__call__", out_of_memory)
    train = dock(viewer, "Train")
    small_settings(train)
    train.start()
    wait_idle(qtbot, train)
    assert any("out of memory" in m and "smaller batch size" in m for m in messages())


def test_rgb_image_for_a_grey_model_is_explained(viewer, tiny_model):
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True, name="photo")
    predict = dock(viewer, "Predict")
    model_store.add("tiny", tiny_model)
    predict.model_choice.value = "tiny"
    predict.run()
    assert any("RGB" in m for m in messages())
    assert len(viewer.layers) == 1


def test_corrupt_model_file_is_notified_and_a_good_one_loads(viewer, tmp_path, monkeypatch, tiny_model):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    good = save_model(tiny_model, tmp_path / "good.pt")
    predict, train = dock(viewer, "Predict"), dock(viewer, "Train")
    for path in (corrupt, good):
        monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, p=path, **k: (str(p), ""))
        predict.load()
    assert any("corrupt.pt" in m and "not a readable" in m for m in messages())
    assert predict.model_choice.value == "good"
    train.load()
    assert train.model is not None and train.save_button.isEnabled()
    target = tmp_path / "saved.pt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    train.save()
    assert target.exists()


# ---------------------------------------------------------------------------- threads and teardown


@pytest.mark.parametrize("preview", [True, False])
def test_napari_stays_responsive_from_start_to_a_ready_model(viewer, stack, qtbot, preview):
    """With the live preview on or off, no stall from Start to the model being ready (the precise
    figures, ≤ 80 ms here, come from benchmarks/bench_responsiveness.py; this bound leaves room for CI)."""
    train = dock(viewer, "Train")
    small_settings(train, epochs=3)
    train.live_preview.value = preview
    stamps = []
    timer = QTimer()
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start(20)
    train.start()
    wait_idle(qtbot, train)
    qtbot.wait(300)
    timer.stop()
    gaps = np.diff(stamps)
    assert train.model is not None and gaps.max() < 0.25, f"longest event-loop gap {gaps.max():.3f} s"
    assert (train.preview.picture is not None) == preview


def test_gui_stays_responsive_while_training(viewer, stack, qtbot):
    train = dock(viewer, "Train")
    small_settings(train, epochs=1000)
    stamps = []
    timer = QTimer()
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start(20)
    train.start()
    qtbot.waitUntil(lambda: train.preview.picture is not None, timeout=60_000)
    stamps.clear()
    qtbot.wait(3000)
    timer.stop()
    train.stop()
    wait_idle(qtbot, train, timeout=30_000)
    gaps = np.diff(stamps)
    assert len(stamps) > 50 and gaps.max() < 0.25, f"longest event-loop gap {gaps.max():.3f} s"


def test_closing_the_widget_stops_training(viewer, stack, qtbot):
    dock_widget, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    small_settings(train, epochs=1000)
    train.start()
    qtbot.waitUntil(lambda: train.progress.value() >= 1, timeout=60_000)
    worker = train.worker
    viewer.window.remove_dock_widget(dock_widget)
    assert train.stop_requested
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)


def viewer_training_cells(make_napari_viewer, epochs: int, name: str = "image"):
    """Its own viewer (the test closes it) with a cell stack, its labels and a Train dock set small."""
    viewer = make_napari_viewer(show=True)
    image, membranes, _ = membrane_volume((2, 64, 64), cell_size=20, seed=4)
    viewer.add_image(image, name=name)
    viewer.add_labels(membranes)
    train = dock(viewer, "Train")
    small_settings(train, epochs=epochs)
    return viewer, train


def test_closing_the_viewer_mid_training_is_clean(make_napari_viewer, qtbot):
    viewer, train = viewer_training_cells(make_napari_viewer, epochs=1000)
    train.start()
    qtbot.waitUntil(lambda: train.progress.value() >= 1, timeout=60_000)
    worker = train.worker
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)


def test_closing_napari_keeps_a_trained_unsaved_model(make_napari_viewer, qtbot, autosave_folder, capsys):
    from napari_pix2pix.io import load_model

    viewer, train = viewer_training_cells(make_napari_viewer, epochs=1, name="cells")
    train.start()
    wait_idle(qtbot, train)
    viewer.close()
    (kept,) = autosave_folder.iterdir()
    assert kept.name.startswith("cells_unet-") and load_model(kept).history == train.model.history
    assert str(kept) in capsys.readouterr().err


def test_a_saved_model_is_not_kept_again_and_a_run_stopped_by_closing_is(
    make_napari_viewer, qtbot, autosave_folder, tmp_path, monkeypatch
):
    viewer, train = viewer_training_cells(make_napari_viewer, epochs=1)
    train.start()
    wait_idle(qtbot, train)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "mine.pt"), ""))
    train.save()
    small_settings(train, epochs=1000)  # a second run, which closing napari stops
    train.start()
    qtbot.waitUntil(lambda: train.progress.value() >= 1, timeout=60_000)
    viewer.close()
    (kept,) = autosave_folder.iterdir()  # the stopped run's model; the saved one is not copied again
    from napari_pix2pix.io import load_model

    assert len(load_model(kept).history) >= 1


EXIT_SCRIPT = """
import numpy as np, napari, torch
from napari_pix2pix.models import Normalisation
from napari_pix2pix.labels.encodings import DenseEncoding
from napari_pix2pix.models import ModelConfig, build_model
from napari_pix2pix.models.trained import TrainedModel
from napari_pix2pix._widgets import model_store

config = ModelConfig("unet", 1, 2, 4, 2)
model = TrainedModel(config, build_model(config).eval(), DenseEncoding((0, 1)), Normalisation((0.0,), (1.0,)), 64)
model_store.add("random", model)
viewer = napari.Viewer(show=False)
layer = viewer.add_image(np.random.default_rng(0).random((200, 128, 128)).astype(np.float32))
_, widget = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Predict")
widget.model_choice.value = "random"
widget.image_picker.value = layer
widget.run()
print("started", widget.running, flush=True)
"""  # the script ends while the prediction runs, as a script driving napari may


def test_a_process_exiting_while_a_worker_runs_ends_cleanly(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert "started True" in done.stdout
    assert done.returncode == 0, done.stderr
    assert "GeneratorWorkerSignals" not in done.stderr and "RuntimeWarning" not in done.stderr, done.stderr


# ---------------------------------------------------------------------------- several pairs, continue, correct


def test_two_pairs_of_layers_train_one_model(viewer, stack, qtbot):
    image, membranes, _ = membrane_volume((1, 48, 80), cell_size=16, seed=9)
    other = viewer.add_image(image[0], name="other")
    other_labels = viewer.add_labels(membranes[0], name="other labels")
    train = dock(viewer, "Train")
    small_settings(train, epochs=1)
    train.advanced.patch_size.value = 32
    train.live_preview.value = False
    train.image_picker.value, train.labels_picker.value = stack
    train.pairs.add_button.click()
    train.image_picker.value, train.labels_picker.value = other, other_labels
    train.pairs.add_button.click()
    train.pairs.add_button.click()  # the same pair twice is kept once
    assert train.pairs.list.count() == 2 and train.pairs.note.text() == "Training pairs: 2."
    train.start()
    wait_idle(qtbot, train)
    assert train.model is not None and "2 pair" not in messages()[-1]
    viewer.layers.remove(other)  # a removed layer's pair goes too
    assert train.pairs.list.count() == 1


def test_predict_correct_a_slice_and_continue_training_learns_it(viewer, stack, qtbot):
    train, predict = dock(viewer, "Train"), dock(viewer, "Predict")
    small_settings(train, epochs=3)
    train.advanced.network_width.value = 8
    train.live_preview.value = False
    train.start()
    wait_idle(qtbot, train)
    first = train.model
    predict.image_picker.value = stack[0]
    predict.run()
    wait_idle(qtbot, predict)
    predicted = viewer.layers[-1]
    assert "correct a few slices" in predict.status.text()

    # Training on an uncorrected prediction is refused: it would learn the model's own guesses.
    train.image_picker.value, train.labels_picker.value = stack[0], predicted
    train.pairs.add_button.click()
    train.start_from.value = model_store.names()[-1]
    assert not train.advanced.network_width.enabled  # a continued model keeps its network
    train.start()
    assert any("correct at least one slice" in m for m in messages())

    # The user paints a block of slice 1 with the class the model mostly missed there, and continues.
    ys, xs = np.mgrid[16:48, 16:48]
    block = (np.full(ys.size, 1), ys.ravel(), xs.ravel())
    value = int((predicted.data[block] == 1).mean() < 0.5)
    before = (predicted.data[block] == value).mean()
    predicted.data_setitem(block, value)
    assert predicted.metadata["napari-pix2pix corrected slices"] == {1}
    small_settings(train, epochs=6)
    train.advanced.learning_rate.value = 3e-3
    train.start()
    wait_idle(qtbot, train)
    continued = train.model
    assert continued is not first and len(continued.history) == len(first.history) + 6
    steps = [h["step"] for h in continued.history]
    assert steps == sorted(steps)  # the history (and the loss plot) goes on
    from napari_pix2pix.prediction import predict as predict_array

    after = (predict_array(continued, stack[0].data, device="cpu")[block] == value).mean()
    assert after > before + 0.3, (before, after)


def test_re_apply_redoes_the_post_processing_without_the_network(viewer, stack, qtbot, tiny_model, monkeypatch):
    model_store.add("tiny", tiny_model)
    predict = dock(viewer, "Predict")
    predict.model_choice.value = "tiny"
    predict.image_picker.value = stack[0]
    predict.output_choice.value = "labels"
    assert not predict.reapply_button.isEnabled()
    predict.run()
    wait_idle(qtbot, predict)
    layer = viewer.layers[-1]
    first = layer.data.copy()
    assert predict.reapply_button.isEnabled()

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran")

    monkeypatch.setattr(tiny_model.network, "forward", no_network)
    predict.threshold.value = 0.1  # a looser threshold: more object pixels
    predict.reapply_button.click()
    wait_idle(qtbot, predict)
    assert viewer.layers[-1] is layer and "Re-applied" in predict.status.text()
    background = tiny_model.encoding.class_values[tiny_model.encoding.background]
    assert (layer.data != background).sum() > (first != background).sum()


def test_class_probabilities_give_one_layer_per_class(viewer, stack, qtbot, tiny_model):
    model_store.add("tiny", tiny_model)
    predict = dock(viewer, "Predict")
    predict.model_choice.value = "tiny"
    predict.image_picker.value = stack[0]
    predict.output_choice.value = "class-probabilities"
    predict.run()
    wait_idle(qtbot, predict)
    names = [layer.name for layer in viewer.layers[-2:]]
    assert names == ["em predicted class-probabilities 0", "em predicted class-probabilities 1"]
    assert viewer.layers[-1].data.shape == (3, 64, 64)
    np.testing.assert_allclose(viewer.layers[-1].data + viewer.layers[-2].data, 1, atol=1e-5)


def test_a_two_channel_model_is_offered_the_channel_layers_of_one_file(viewer, qtbot, tmp_path):
    import tifffile
    from conftest import tiny_config

    from napari_pix2pix.training import fit

    image, membranes, _ = membrane_volume((2, 64, 64), cell_size=20, seed=6)
    two = np.stack([image, 1 - image], axis=-1).astype(np.float32)
    tifffile.imwrite(tmp_path / "two.tif", two)
    viewer.open(str(tmp_path / "two.tif"), channel_axis=3, plugin="napari")
    assert len(viewer.layers) == 2
    model = fit(two, membranes, tiny_config(epochs=1))
    predict = dock(viewer, "Predict")
    model_store.add("two channels", model)
    predict.model_choice.value = "two channels"
    assert predict.image_picker.value.name == "two (2 channels)"
    predict.run()
    wait_idle(qtbot, predict)
    result = viewer.layers[-1]
    assert result.name == "two (2 channels) predicted labels" and result.data.shape == (2, 64, 64)
    np.testing.assert_array_equal(result.data, predict_array(model, two, device="cpu"))


def test_export_to_bioimageio_from_the_train_widget(viewer, stack, qtbot, tmp_path, monkeypatch):
    pytest.importorskip("bioimageio.spec")
    from napari_pix2pix.io import load_model

    train = dock(viewer, "Train")
    small_settings(train, epochs=1)
    train.live_preview.value = False
    assert not train.export_button.isEnabled()
    train.start()
    wait_idle(qtbot, train)
    assert train.export_button.isEnabled()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "em.zip"), ""))
    train.export_button.click()
    assert any("exported to" in m for m in messages())
    assert load_model(tmp_path / "em.zip").encoding == train.model.encoding


def test_a_stack_with_three_painted_slices_trains_in_3d_and_predicts_a_3d_labels_layer(viewer, qtbot):
    from test_volumes import blobs

    image, labels = blobs((16, 48, 48))
    painted = np.zeros_like(labels)
    painted[[3, 8, 12]] = labels[[3, 8, 12]]
    viewer.add_image(image, name="stack", scale=(0.5, 0.2, 0.2))
    viewer.add_labels(painted, name="painted", scale=(0.5, 0.2, 0.2))
    train, predict = dock(viewer, "Train"), dock(viewer, "Predict")
    assert train.dims_hint.value == (
        "3D: the stack has 16 slices of 0.5, 2.5× the pixel size; y and x binned 2× if the objects are 16 pixels "
        "across or more; 3 of 16 slices annotated"
    )
    train.advanced.binning.value = 1  # never: the hint says nothing of binning
    assert train.dims_hint.value == "3D: the stack has 16 slices of 0.5, 2.5× the pixel size; 3 of 16 slices annotated"
    train.advanced.binning.value = 0  # automatic again: the blobs (about 10 pixels) are too small to bin
    small_settings(train, epochs=1)
    train.advanced.patch_size.value = 32
    train.live_preview.value = False
    train.start()
    wait_idle(qtbot, train)
    assert train.model.config.architecture == "unet-3d" and train.model.voxel_size == (0.5, 0.2, 0.2)
    assert train.model.binning == 1
    predict.image_picker.value = viewer.layers["stack"]
    predict.run()
    wait_idle(qtbot, predict)
    result = viewer.layers[-1]
    assert type(result).__name__ == "Labels" and result.data.shape == (16, 48, 48)
    np.testing.assert_array_equal(result.scale, (0.5, 0.2, 0.2))
    viewer.layers["painted"].data[5] = labels[5]  # painting a slice more is counted
    viewer.layers["painted"].events.paint(value=[])
    assert train.dims_hint.value.endswith("4 of 16 slices annotated")


def test_the_first_window_uses_the_screen_and_the_docks_take_what_they_need(qtbot):
    """``napari-pix2pix gui`` opens a window of most of the screen (napari's first one is about
    800×650), with docks no wider than their widest row, so the canvas keeps the rest."""
    from napari_pix2pix._launch import DOCK_ROOM, open_viewer

    viewer, train, predict = open_viewer("nuclei")
    try:
        window = viewer.window._qt_window
        area = window.screen().availableGeometry()
        assert window.width() >= 0.9 * area.width() and window.height() >= 0.9 * area.height()
        QTest.qWait(200)
        widest = max(train.minimumSizeHint().width(), predict.minimumSizeHint().width())
        assert train.width() <= widest + DOCK_ROOM + 30
    finally:
        viewer.close()


def test_3d_sample_trains_a_3d_network_predicts_a_3d_layer_and_continues_from_corrections(viewer, qtbot):
    """The 3D day in napari: the 3D sample (its voxel size in the layers' scale), Network 3D, a
    prediction with the image's scale, one corrected slice, and a 3D model continued from it."""
    viewer.open_sample(PLUGIN, "nuclei_3d")
    image, labels = viewer.layers["nuclei 3D"], viewer.layers["nuclei 3D labels"]
    train, predict = dock(viewer, "Train"), dock(viewer, "Predict")
    train.image_picker.value, train.labels_picker.value = image, labels
    small_settings(train, epochs=1)  # 20 steps
    train.advanced.patch_size.value = 32
    train.dims_choice.value = "3d"
    train.live_preview.value = False
    train.start()
    wait_idle(qtbot, train)
    first = train.model
    assert first is not None and first.config.dims == 3 and first.voxel_size == pytest.approx((0.5, 0.25, 0.25))

    predict.image_picker.value = image
    predict.model_choice.value = model_store.names()[-1]
    predict.run()
    wait_idle(qtbot, predict)
    predicted = viewer.layers[-1]
    assert predicted.data.shape == image.data.shape and tuple(predicted.scale) == tuple(image.scale)

    ys, xs = np.mgrid[8:40, 8:40]
    block = (np.full(ys.size, 20), ys.ravel(), xs.ravel())
    predicted.data_setitem(block, int((predicted.data[block] == 0).mean() > 0.5))  # a change, whatever it holds
    assert predicted.metadata["napari-pix2pix corrected slices"] == {20}
    train.image_picker.value, train.labels_picker.value = image, predicted
    train.pairs.add_button.click()
    train.start_from.value = model_store.names()[-1]
    # the continued model's binning (none) is shown, not offered
    assert not train.advanced.binning.enabled and train.config().binning == first.binning == 1
    train.start()
    wait_idle(qtbot, train)
    assert train.model is not first and train.model.config.dims == 3, messages()[-3:]
    assert len(train.model.history) == len(first.history) + 1


def test_the_shipped_nuclei_model_is_offered_to_predict_and_to_fine_tune(viewer, qtbot):
    from napari_pix2pix.io.pretrained import PRETRAINED, load_pretrained

    label = PRETRAINED["nuclei"].label
    train, predict = dock(viewer, "Train"), dock(viewer, "Predict")
    assert label in predict.model_choice.choices
    assert label in train.start_from.choices  # shown as "Fine-tune 'Nuclei (pretrained)'"
    train.start_from.value = label
    assert train.advanced.learning_rate.value == pytest.approx(ARCHITECTURES["unet"].learning_rate * FINE_TUNE_RATE)
    assert not train.model_choice.enabled  # a fine-tuned model keeps its network and intensity scaling
    assert train.advanced.normalisation.value == "per-image" and not train.advanced.normalisation.enabled
    train.start_from.native.setCurrentIndex(0)  # back to "A new model": its network and rate are offered again
    assert train.model_choice.enabled and train.advanced.network_width.enabled and train.advanced.normalisation.enabled
    assert train.advanced.learning_rate.value == pytest.approx(ARCHITECTURES["unet"].learning_rate)
    tuned = dataclasses.replace(load_pretrained("nuclei"), history=[{"loss": 1.0, "fine_tuning": True}])
    train.start_from.value = model_store.add("tuned", tuned)  # continuing a fine-tuned model: the gentle rate
    assert train.advanced.learning_rate.value == pytest.approx(ARCHITECTURES["unet"].learning_rate * FINE_TUNE_RATE)
    viewer.open_sample(PLUGIN, "nuclei")
    predict.image_picker.value = viewer.layers["nuclei"]
    predict.model_choice.value = label
    predict.run()
    wait_idle(qtbot, predict)
    assert viewer.layers[-1].data.shape == viewer.layers["nuclei"].data.shape and viewer.layers[-1].data.max() > 10
