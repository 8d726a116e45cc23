import threading

import numpy as np
import pytest
import torch
from conftest import tiny_config

from napari_pix2pix.errors import InputError
from napari_pix2pix.prediction import predict
from napari_pix2pix.samples import nuclei_stack
from napari_pix2pix.samples.synthetic import membrane_volume
from napari_pix2pix.training import EventKind, Trainer, TrainingConfig, fit


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_unet_learns_a_held_out_membrane_segmentation():
    image, membranes, _ = membrane_volume((4, 96, 96), cell_size=24, seed=1)
    held_out, truth, _ = membrane_volume((2, 96, 96), cell_size=24, seed=9)
    config = tiny_config(epochs=30, steps_per_epoch=10, batch_size=4, patch_size=64, width=8, depth=3)
    model = fit(image, membranes, config)
    predicted = predict(model, held_out, device="cpu")
    assert dice(predicted == 1, truth == 1) > 0.9
    assert model.history[-1]["val_dice"] is not None


def test_events_report_progress_and_the_loop_returns_the_model(membranes):
    events = []
    model = fit(*membranes, tiny_config(), callback=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "finished"
    assert kinds.count("step") == 6 and kinds.count("epoch") == 2
    steps = [e for e in events if e.kind == "step"]
    assert all(e.loss is not None and e.elapsed >= 0 and e.remaining is not None for e in steps)
    assert "cpu" in events[0].device
    assert model.encoding.class_values == (0, 1)


def test_pix2pix_reports_generator_and_discriminator_losses(membranes):
    events = []
    model = fit(*membranes, tiny_config(model="pix2pix"), callback=events.append)
    step = next(e for e in events if e.kind == "step")
    assert step.generator_loss is not None and step.discriminator_loss is not None
    assert model.discriminator_state is not None
    assert predict(model, membranes[0][:1], device="cpu").shape == (1, 64, 64)


def test_seed_unet_trains_and_predicts_full_size(membranes):
    model = fit(*membranes, tiny_config(model="seed-unet", depth=4, patch_size=140, epochs=1, steps_per_epoch=2))
    assert predict(model, membranes[0][:1], tile_size=188, device="cpu").shape == (1, 64, 64)


def test_sparse_scribbles_only_count_painted_pixels(blobs):
    image, instances = blobs
    scribbles = np.zeros(instances.shape, np.uint8)
    scribbles[2:4, :] = 1  # background strokes
    scribbles[:, 58:60] = 1
    scribbles[22:24, :] = np.where(instances[22:24] > 0, 0, 1)
    scribbles[(instances > 0) & (np.arange(64)[:, None] % 6 == 0)] = 2  # strokes through the objects
    assert (scribbles > 0).mean() < 0.2
    model = fit(image, scribbles, tiny_config(annotation="sparse", epochs=20, steps_per_epoch=6, val_fraction=0))
    assert model.encoding.class_values == (1, 2)
    predicted = predict(model, image, device="cpu")
    assert set(np.unique(predicted)) <= {1, 2}
    assert dice(predicted == 2, instances > 0) > 0.8


def test_instance_labels_predict_instances():
    image, labels = nuclei_stack()
    model = fit(image[:2, :64, :64], labels[:2, :64, :64], tiny_config(epochs=1))
    assert model.encoding.kind == "instances"
    instances = predict(model, image[2, :64, :64], "instances", device="cpu")
    assert instances.dtype == np.uint32 and instances.shape == (64, 64)


def test_multiclass_and_channels(blobs):
    image, instances = blobs
    classes = np.where(instances > 2, 7, np.where(instances > 0, 3, 0)).astype(np.uint8)
    rgb = np.stack([image, image * 0.5, image * 0.2], axis=-1)
    model = fit(rgb, classes, tiny_config(val_fraction=0))
    assert model.config.in_channels == 3
    assert model.encoding.class_values == (0, 3, 7)
    assert set(np.unique(predict(model, rgb, device="cpu"))) <= {0, 3, 7}


def test_stop_returns_the_model_trained_so_far(membranes):
    stop = threading.Event()
    trainer = Trainer(*membranes, tiny_config(epochs=100), stop=stop)
    initial = {k: v.clone() for k, v in trainer.model.network.state_dict().items()}
    events, run = [], trainer.run()
    while True:
        try:
            event = next(run)
        except StopIteration as done:
            model = done.value
            break
        events.append(event)
        if event.kind == EventKind.STEP and event.step == 3:
            stop.set()
    assert events[-1].kind == EventKind.FINISHED and events[-1].step == 3 and "stopped" in events[-1].message
    assert model is trainer.model and len(model.history) == 1
    assert any(not torch.equal(initial[k], v) for k, v in model.network.state_dict().items())  # it trained
    assert predict(model, membranes[0][:1], device="cpu").shape == (1, 64, 64)


def test_stop_returns_a_usable_model(membranes):
    stop = threading.Event()
    stop.set()
    model = fit(*membranes, tiny_config(), stop=stop)
    assert predict(model, membranes[0][:1], device="cpu").shape == (1, 64, 64)


def test_time_budget_ends_training(membranes):
    events = []
    fit(*membranes, tiny_config(epochs=1000, max_minutes=0.02), callback=events.append)
    assert "time budget" in events[-1].message
    assert events[-1].step < 3000


def test_same_seed_same_model_on_cpu(membranes):
    first = fit(*membranes, tiny_config(seed=5))
    second = fit(*membranes, tiny_config(seed=5))
    for a, b in zip(first.network.state_dict().values(), second.network.state_dict().values()):
        assert torch.equal(a, b)


def test_non_finite_loss_stops_and_keeps_good_weights(membranes):
    trainer = Trainer(*membranes, tiny_config(epochs=5))
    real_step, calls = trainer.step, {"n": 0}

    def exploding_step(images, targets, weights):
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                for p in trainer.model.network.parameters():
                    p.fill_(float("nan"))
            return {"loss": float("nan")}
        return real_step(images, targets, weights)

    trainer.step = exploding_step
    events = list(trainer.run())
    assert "not a number" in events[-1].message
    assert all(torch.isfinite(p).all() for p in trainer.model.network.parameters())


def test_best_validation_weights_are_kept(membranes):
    model = fit(*membranes, tiny_config(epochs=4))
    assert len(model.history) == 4
    dices = [h["val_dice"] for h in model.history if h["val_dice"] is not None]
    assert model.history[0]["val_dice"] is not None and model.history[-1]["val_dice"] is not None
    from napari_pix2pix.training.evaluation import evaluate
    from napari_pix2pix.training.preparation import prepare_data

    data = prepare_data(*membranes, tiny_config(epochs=4), None, np.random.default_rng(0))
    _, kept = evaluate(model, data.validation, torch.device("cpu"))
    assert kept == pytest.approx(max(dices), abs=1e-6)


def test_training_runs_until_the_time_budget_and_the_learning_rate_decays_to_its_end(membranes):
    trainer = Trainer(*membranes, tiny_config(epochs=None, max_minutes=0.04))
    events = list(trainer.run())
    assert "time budget" in events[-1].message
    assert events[-1].elapsed >= 0.04 * 60 and events[-1].progress == 1.0
    steps = [e for e in events if e.kind == EventKind.STEP]
    assert steps[-1].total_steps is None and steps[-1].remaining < 1.0
    final_rate = trainer.step.optimiser.param_groups[0]["lr"]
    assert final_rate < 0.1 * tiny_config().lr  # decayed close to its floor


def test_learning_rate_warms_up_then_decays():
    from napari_pix2pix.training.steps import LearningRateSchedule

    schedule = LearningRateSchedule([], warmup=0.1, floor=0.02)
    factors = [schedule.factor(p) for p in np.linspace(0, 1, 101)]
    peak = int(np.argmax(factors))
    assert factors[0] == pytest.approx(0.02) and factors[peak] == pytest.approx(1.0) and peak == 10
    assert all(a <= b for a, b in zip(factors[:peak], factors[1 : peak + 1]))  # rising
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :]))  # then falling
    assert factors[-1] == pytest.approx(0.02)


def test_a_run_needs_a_time_budget_or_epochs(membranes):
    with pytest.raises(InputError, match="time budget"):
        fit(*membranes, tiny_config(epochs=None, max_minutes=None))


def test_resume_continues_from_a_model(membranes, tiny_model):
    model = fit(*membranes, tiny_config(epochs=1), resume=tiny_model)
    assert len(model.history) == len(tiny_model.history) + 1
    with pytest.raises(InputError, match="start a new model"):
        labels = membranes[1].astype(np.int64) * 5
        fit(membranes[0], labels, tiny_config(epochs=1), resume=tiny_model)


def test_fine_tuning_starts_afresh_gently_and_keeps_the_normalisation_statistics(membranes, tiny_model):
    """``start_from`` (the CLI's --start-from, the widget's Fine-tune): a new history, the weights
    train, the batch-norm statistics stay the starting model's, the rate is FINE_TUNE_RATE of the
    architecture's unless one is given."""
    from napari_pix2pix.training.config import FINE_TUNE_RATE
    from napari_pix2pix.training.loop import Trainer

    def norms(model):
        return [m for m in model.network.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    before = [m.running_mean.clone() for m in norms(tiny_model)]
    model = fit(*membranes, tiny_config(epochs=1), start_from=tiny_model)
    assert len(model.history) == 1  # a new run, not a continued one
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms(model)))
    weights = [p for n, p in model.network.named_parameters() if "weight" in n and p.ndim == 4]
    start = [p for n, p in tiny_model.network.named_parameters() if "weight" in n and p.ndim == 4]
    assert any(not torch.equal(a, b) for a, b in zip(weights, start))  # but it learned
    trainer = Trainer(*membranes, tiny_config(epochs=1, learning_rate=None), start_from=tiny_model)
    assert trainer.config.lr == pytest.approx(trainer.config.architecture.learning_rate * FINE_TUNE_RATE)
    first = next(trainer.run())
    assert "fine-tuning at learning rate" in first.message
    assert Trainer(*membranes, tiny_config(epochs=1), start_from=tiny_model).config.lr == 1e-3  # given: kept
    continued = fit(*membranes, tiny_config(epochs=1), resume=tiny_model)  # continuing updates them
    assert any(not torch.equal(a, m.running_mean) for a, m in zip(before, norms(continued)))
    with pytest.raises(InputError, match="not both"):
        fit(*membranes, tiny_config(epochs=1), resume=tiny_model, start_from=tiny_model)


def test_fine_tuning_ends_partway_back_toward_the_starting_weights(membranes, tiny_model, monkeypatch):
    """WiSE-FT: a fine-tuned network's weights end FINE_TUNE_MIX of the way from the starting model's
    to those the run reached (the same run with the mix at 1), and the run says so."""
    from napari_pix2pix.training import loop
    from napari_pix2pix.training.config import FINE_TUNE_MIX

    assert 0 < FINE_TUNE_MIX < 1
    mixed = fit(*membranes, tiny_config(epochs=1, seed=3), start_from=tiny_model)
    monkeypatch.setattr(loop, "FINE_TUNE_MIX", 1.0)  # the weights the run reached, unmixed
    reached = fit(*membranes, tiny_config(epochs=1, seed=3), start_from=tiny_model)
    start, end = tiny_model.network.state_dict(), reached.network.state_dict()
    moved = [k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, end[k])]
    assert moved  # the run learned
    for name in moved:
        expected = start[name] + FINE_TUNE_MIX * (end[name] - start[name])
        torch.testing.assert_close(mixed.network.state_dict()[name], expected, rtol=1e-4, atol=1e-6)
    monkeypatch.setattr(loop, "FINE_TUNE_MIX", FINE_TUNE_MIX)
    *_, finished = list(loop.Trainer(*membranes, tiny_config(epochs=1), start_from=tiny_model).run())
    assert "of the way from the starting model's to the fine-tuned ones" in finished.message
    continued = loop.Trainer(*membranes, tiny_config(epochs=1), resume=tiny_model)
    assert continued.start_weights is None  # continuing a model does not pull it back


def test_continuing_a_fine_tuned_model_goes_on_fine_tuning(membranes, tiny_model, tmp_path):
    """A fine-tuning run stopped and continued (--resume, the widget's Continue, a checkpoint) keeps
    the starting model's batch-norm statistics and the gentler rate: the model file says so."""
    from napari_pix2pix.io import load_model, save_model
    from napari_pix2pix.training.config import FINE_TUNE_RATE
    from napari_pix2pix.training.loop import Trainer

    def means(model):
        return [m.running_mean.clone() for m in model.network.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    assert not tiny_model.fine_tuned
    tuned = fit(*membranes, tiny_config(epochs=1), start_from=tiny_model)
    save_model(tuned, tmp_path / "tuned.pt")
    tuned = load_model(tmp_path / "tuned.pt")
    assert tuned.fine_tuned
    continued = fit(*membranes, tiny_config(epochs=1), resume=tuned)
    assert len(continued.history) == 2 and continued.fine_tuned
    assert all(torch.equal(a, b) for a, b in zip(means(tiny_model), means(continued)))
    trainer = Trainer(*membranes, tiny_config(epochs=1, learning_rate=None), resume=tuned)
    assert trainer.config.lr == pytest.approx(trainer.config.architecture.learning_rate * FINE_TUNE_RATE)
    assert "fine-tuning at learning rate" in next(trainer.run()).message


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(patch_size=30), "multiple of 4"),
        (dict(model="resnet"), "model must be"),
        (dict(val_fraction=1.5), "validation fraction"),
        (dict(epochs=0), "epochs"),
        (dict(device="cuda"), "CUDA" if not torch.cuda.is_available() else None),
    ],
)
def test_bad_settings_are_explained(membranes, change, message):
    if message is None:
        pytest.skip("CUDA is available here")
    with pytest.raises(InputError, match=message):
        fit(*membranes, tiny_config(**change))


def test_too_small_image_is_explained():
    with pytest.raises(InputError, match="at least"):
        fit(np.zeros((3, 3)), np.ones((3, 3), np.uint8), TrainingConfig(epochs=1))


def test_the_model_remembers_the_size_of_its_objects(tmp_path):
    from napari_pix2pix.io import load_model, save_model

    image, labels = nuclei_stack()
    model = fit(image[:2, :96, :96], labels[:2, :96, :96], tiny_config(epochs=1))
    areas = np.concatenate([np.bincount(plane.ravel())[1:] for plane in labels[:2, :96, :96]])
    expected = np.sqrt(4 * np.median(areas[areas > 0]) / np.pi)
    assert model.object_size == pytest.approx(expected, rel=0.05)
    assert load_model(save_model(model, tmp_path / "m.pt")).object_size == pytest.approx(model.object_size)


def test_resume_with_images_of_other_channels_is_explained(membranes, tiny_model):
    image, labels = membranes
    with pytest.raises(InputError, match="channel"):
        fit(np.stack([image, image], axis=-1), labels, tiny_config(epochs=1), resume=tiny_model)


def test_reading_each_loss_one_step_late_changes_nothing(membranes):
    """On a GPU the trainer reads a step's loss after queueing the next; forced on here, the events,
    history and weights are those of reading at once."""
    runs = []
    for read_late in (False, True):
        trainer = Trainer(*membranes, tiny_config(epochs=2, steps_per_epoch=4, seed=3))
        trainer.read_late = read_late
        events = list(trainer.run())
        steps = [(e.step, e.epoch, e.loss) for e in events if e.kind == EventKind.STEP]
        runs.append((steps, trainer.model.history, trainer.model.network.state_dict()))
    (steps, history, weights), (late_steps, late_history, late_weights) = runs
    assert [s for s, _, _ in late_steps] == list(range(1, 9)) and late_steps == steps
    assert [h["step"] for h in late_history] == [h["step"] for h in history] == [4, 8]
    assert all(torch.equal(weights[k], late_weights[k]) for k in weights)


def test_a_stop_while_a_loss_is_unread_still_reports_every_step(membranes):
    stop = threading.Event()
    trainer = Trainer(*membranes, tiny_config(epochs=100, steps_per_epoch=10), stop=stop)
    trainer.read_late = True
    events = []
    for event in trainer.run():
        events.append(event)
        if event.kind == EventKind.STEP and event.step == 3:
            stop.set()
    steps = [e.step for e in events if e.kind == EventKind.STEP]
    assert steps == list(range(1, events[-1].step + 1)) and events[-1].step in (3, 4)
    assert trainer.model.history[-1]["step"] == events[-1].step


# ---------------------------------------------------------------------------- several pairs


def test_pairs_of_different_sizes_train_one_model(membranes):
    from napari_pix2pix.samples.synthetic import membrane_volume

    other, other_labels, _ = membrane_volume((1, 48, 80), cell_size=16, seed=7)
    model = fit([membranes, (other[0], other_labels[0])], tiny_config(epochs=2))
    assert predict(model, other[0], device="cpu").shape == (48, 80)
    assert predict(model, membranes[0], device="cpu").shape == membranes[0].shape
    assert not model.normalisation.per_image  # the default: the training images' percentiles


def test_each_image_is_normalised_by_its_own_percentiles(membranes):
    image, labels = membranes
    model = fit(image, labels, tiny_config(epochs=3, steps_per_epoch=5, normalisation="per-image"))
    assert model.normalisation.per_image
    brighter = image.astype(np.float32) * 7 + 100  # another microscope's gain and offset
    same = predict(model, image, device="cpu") == predict(model, brighter, device="cpu")
    assert same.mean() > 0.999


def test_several_pairs_hold_out_whole_images_and_join_their_classes():
    from napari_pix2pix.training.preparation import prepare_data

    rng = np.random.default_rng(0)
    pairs = []
    for n in range(5):
        labels = np.zeros((2, 32, 32 + 8 * n), np.uint8)
        labels[:, 8:20, 8:20] = 1 if n < 4 else 2
        pairs.append((rng.random(labels.shape).astype(np.float32), labels))
    data = prepare_data(pairs, None, tiny_config(val_fraction=0.2), None, np.random.default_rng(0))
    assert data.encoding.class_values == (0, 1, 2)
    assert len(data.validation) == 2 and len(data.train) == 8  # one pair of two slices held out
    assert data.train.images.shape[2:] == (32, 64)  # padded to the largest


def test_pairs_with_other_channels_or_not_pairs_are_explained(membranes):
    image, labels = membranes
    with pytest.raises(InputError, match="different numbers of channels"):
        fit([(image, labels), (np.stack([image] * 2, -1), labels)], tiny_config())
    with pytest.raises(InputError, match="pair 2 is not an"):
        fit([(image, labels), image], tiny_config())
    with pytest.raises(InputError, match="the image of pair 2 is 2×2"):
        fit([(image, labels), (image[0, :2, :2], np.array([[0, 1], [1, 0]], np.uint8))], tiny_config())
    with pytest.raises(InputError, match="pair 2: the labels are all zero"):
        fit([(image, labels), (image, np.zeros_like(labels))], tiny_config())
    one_class = np.where(labels > 0, 1, 1).astype(np.uint8)  # dense: one pair may hold a single class
    assert fit([(image, labels), (image, one_class)], tiny_config()).encoding.n_classes == 2


def test_batch_norm_statistics_can_be_recomputed_from_plain_batches():
    """Precise batch norm: the running statistics become the plain mean over the batches given; the
    layer's momentum and the network's mode come back as they were."""
    from napari_pix2pix.training.steps import refresh_batch_norm_statistics

    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    norm = network[1]
    norm.running_mean.fill_(5.0)  # a moving average far from these batches
    batches = [torch.full((2, 1, 4, 4), float(v)) + torch.randn(2, 1, 4, 4) for v in (1, 3)]
    network.eval()
    refresh_batch_norm_statistics(network, batches)
    with torch.no_grad():
        expected = torch.stack([network[0](b).mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    torch.testing.assert_close(norm.running_mean, expected)
    assert norm.momentum == 0.1 and not network.training and int(norm.num_batches_tracked) == 2
