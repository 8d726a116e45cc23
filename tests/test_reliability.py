"""Reliability of the command line: Ctrl-C, SIGTERM and SIGKILL at work, a disk
that is full, a name too long. Nothing is lost, nothing partial is left, every message is one line."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch

from napari_pix2pix.cli import main
from napari_pix2pix.io import load_model
from napari_pix2pix.samples.synthetic import membrane_volume

QUICK = ["--epochs", "1", "--steps-per-epoch", "1", "--quiet"]
SMALL = ["--batch-size", "2", "--patch-size", "32", "--width", "4", "--depth", "2", "--device", "cpu"]


def start(args: list[str], cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "napari_pix2pix", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("sent, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_training_saves_the_best_model_so_far(files, sent, status):
    args = ["train", "image.tif", "labels.tif", "--out", "m.pt", "--max-minutes", "5", "--steps-per-epoch", "3"]
    process = start([*args, *SMALL], files)
    # Wait until training runs: its first message is printed when it starts.
    for line in process.stderr:
        if "training unet" in line:
            break
    time.sleep(1.0)
    process.send_signal(sent)
    out, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    assert "saved the best model so far" in out and "--resume m.pt" in out
    assert "Traceback" not in err
    model = load_model(files / "m.pt")
    assert len(model.history) >= 1
    assert sorted(p.name for p in files.iterdir()) == ["image.tif", "labels.tif", "m.pt"]


def test_a_killed_training_run_resumes_from_its_checkpoint(files, monkeypatch):
    args = ["train", "image.tif", "labels.tif", "--out", "m.pt", "--max-minutes", "5", "--steps-per-epoch", "2"]
    process = start([*args, *SMALL, "--checkpoint-minutes", "0.001"], files)
    partial = files / "m.pt.partial"
    wait_for(partial.exists, process)
    time.sleep(0.3)
    process.kill()
    process.wait()
    assert not (files / "m.pt").exists()
    saved = load_model(partial)  # a complete model file, whenever the kill came
    assert len(saved.history) >= 1
    resumed = ["train", "image.tif", "labels.tif", "--out", "m.pt", "--resume", "m.pt.partial", "--epochs", "1"]
    monkeypatch.chdir(files)
    assert main([*resumed, "--quiet", "--batch-size", "2", "--patch-size", "32", "--device", "cpu"]) == 0
    assert len(load_model(files / "m.pt").history) == len(saved.history) + 1
    assert not partial.exists()  # removed once the final model is saved
    assert not [p for p in files.iterdir() if p.name.startswith(".")]


def test_sigterm_during_prediction_leaves_no_file(files, monkeypatch):
    monkeypatch.chdir(files)
    assert main(["train", "image.tif", "labels.tif", "--out", "m.pt", *QUICK, *SMALL]) == 0
    stack = np.random.default_rng(0).random((400, 96, 96)).astype(np.float32)
    tifffile.imwrite(files / "big.tif", stack, photometric="minisblack")
    process = start(["predict", "m.pt", "big.tif", "--out", "out.tif", "--device", "cpu"], files)
    wait_for(lambda: any(p.name.startswith(".out.tif.") for p in files.iterdir()), process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143 and "Traceback" not in err
    assert "SIGTERM" in err.splitlines()[-1]
    assert sorted(p.name for p in files.iterdir()) == ["big.tif", "image.tif", "labels.tif", "m.pt"]


def test_a_temporary_file_left_by_a_killed_writer_is_removed_by_the_next_write(files, monkeypatch):
    monkeypatch.chdir(files)
    dead = files / ".m.pt.999999999.abcd.tmp"  # no process has that id
    alive = files / f".m.pt.{os.getpid()}.abcd.tmp"  # a writer that still runs: kept
    dead.write_bytes(b"partial")
    alive.write_bytes(b"in progress")
    assert main(["train", "image.tif", "labels.tif", "--out", "m.pt", *QUICK, *SMALL]) == 0
    assert not dead.exists() and alive.exists()


def test_an_unwritable_output_is_reported_before_training(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    long_name = "m" * 300 + ".pt"
    train = ["train", "image.tif", "labels.tif", *QUICK, *SMALL]
    started = time.monotonic()
    assert main([*train, "--out", long_name]) == 2
    assert "name is longer" in capsys.readouterr().err
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert main([*train, "--out", "m.pt"]) == 2
    err = capsys.readouterr().err
    assert "not enough room" in err and len(err.strip().splitlines()) == 1
    assert main(["predict", "m.pt", "image.tif", "--out", "p.tif"]) == 2  # the model is missing: named
    assert time.monotonic() - started < 30


def test_a_failing_disk_during_the_save_is_one_line(files, capsys, monkeypatch):
    monkeypatch.chdir(files)

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(["train", "image.tif", "labels.tif", "--out", "m.pt", *QUICK, *SMALL]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("napari-pix2pix train: error: cannot save the model") and "is the disk full?" in last
    assert sorted(p.name for p in files.iterdir()) == ["image.tif", "labels.tif"]


def test_a_batch_far_beyond_the_memory_is_refused_before_it_is_allocated(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    train = ["train", "image.tif", "labels.tif", "--out", "m.pt", *QUICK, *SMALL]
    assert main([*train, "--batch-size", str(10**9)]) == 2
    assert "use a smaller batch size" in capsys.readouterr().err
    assert main(train) == 0
    assert main(["predict", "m.pt", "image.tif", "--out", "p.tif", "--quiet", "--batch-size", str(10**12)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "use a smaller batch size" in last and not (files / "p.tif").exists()


def test_torchrun_trains_one_model_with_two_processes_on_the_cpu(files):
    """PyTorch's DistributedDataParallel through torchrun, gloo backend: two ranks, one model file."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "napari_pix2pix", "train", "image.tif", "labels.tif", "--out", "m.pt",
               "--epochs", "2", "--steps-per-epoch", "3", *SMALL]  # fmt: skip
    done = subprocess.run(command, cwd=files, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained by 2 processes") == 1  # only rank 0 speaks and writes
    model = load_model(files / "m.pt")
    assert [h["step"] for h in model.history] == [3, 6]  # both ranks stopped together
    from napari_pix2pix.prediction import predict

    assert predict(model, tifffile.imread(files / "image.tif"), device="cpu").shape == (3, 48, 48)
    assert sorted(p.name for p in files.iterdir()) == ["image.tif", "labels.tif", "m.pt"]


def test_a_run_in_a_group_stops_on_every_rank_when_one_is_told_to(monkeypatch):
    """The stop, the time budget and a failed loss are agreed each step (no rank waits forever)."""
    import threading

    import torch.distributed as dist

    from napari_pix2pix.scale.distributed import Group
    from napari_pix2pix.training import Trainer, TrainingConfig

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        image, labels, _ = membrane_volume((2, 48, 48), cell_size=16, seed=2)
        stop = threading.Event()
        config = TrainingConfig(epochs=100, steps_per_epoch=3, batch_size=2, patch_size=32, width=4, depth=2,
                                max_minutes=None, device="cpu")  # fmt: skip
        trainer = Trainer(image, labels, config, stop=stop, group=Group(0, 1, 0))
        for event in trainer.run():
            if event.step == 4:
                stop.set()
        assert trainer.steps_done == 4 and trainer.progress() > 0
    finally:
        dist.destroy_process_group()
