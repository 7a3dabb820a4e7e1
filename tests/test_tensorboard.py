"""What a run shows in TensorBoard and next to its checkpoints, read back with TensorBoard's own reader and server.

Most tests read the shared ``trained_run`` (5 epochs of configs/mnist.yaml on the real 10k subset, then the
test of the best checkpoint). Two short runs of their own check that the callbacks change nothing in training
and that a standalone ``test`` gets its own report.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CONFIG, offline_data, printed_test_line, run_cli, stop_process, version_dirs
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from mnist_lit.runs import data_settings

VAL_IMAGES = 3_000  # val_split 0.3 of the subset's 10,000 training images (the last 30%)
TEST_IMAGES = 10_000  # the official MNIST test set
EPOCH_TAGS = ("train_loss", "train_acc", "val_loss", "val_acc")
# (tag, images per run: "epochs" or 1, PNG size in pixels) for configs/mnist.yaml (32 and 16 digits, 8 per row)
IMAGE_TAGS = (
    ("val_predictions", "epochs", (800, 480)),
    ("val_confusion_matrix", 1, (640, 640)),  # val_every_n_epochs: 0, the last epoch only
    ("test_confusion_matrix", 1, (640, 640)),
    ("test_confident_errors", 1, (800, 240)),
)


def read_events(run_dir: Path) -> EventAccumulator:
    """All event files of a run folder, loaded completely (no sampling)."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def run(trained_run):
    run_dir = trained_run["run_dir"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return {
        **trained_run,
        "events": read_events(run_dir),
        "config": config,
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
    }


def confusion_matrix(path: Path) -> np.ndarray:
    """The counts of ``confusion_matrix_*.csv``: rows true digit, columns predicted digit."""
    lines = path.read_text().splitlines()
    assert lines[0] == "true\\pred," + ",".join(map(str, range(10)))
    return np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])


def test_scalars_every_epoch_step_and_test(run):
    events, epochs = run["events"], run["config"]["trainer"]["max_epochs"]
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    assert "hp_metric" not in scalars  # no placeholder -1
    for tag in (*EPOCH_TAGS, "lr-RMSprop"):
        assert len(scalars[tag]) == epochs, tag
    assert [e.step for e in scalars["train_loss"]] == [e.step for e in scalars["val_loss"]]  # one x per epoch
    steps = [e.step for e in scalars["val_acc"]]
    assert steps == sorted(set(steps))
    for tag in (*EPOCH_TAGS, "train_loss_step", "test_loss", "test_acc"):
        values = [e.value for e in scalars[tag]]
        assert all(math.isfinite(v) for v in values), tag
        if tag.endswith("_acc"):
            assert all(0.0 <= v <= 1.0 for v in values), tag
        else:
            assert all(0.0 < v < math.log(10) * 3 for v in values), tag  # chance level is ln 10 = 2.30
    assert [e.value for e in scalars["lr-RMSprop"]] == pytest.approx([run["config"]["model"]["lr"]] * epochs)
    # train_loss_step every log_every_n_steps (Lightning's default 50) optimizer steps
    assert len(scalars["train_loss_step"]) == run["metrics"]["epochs"][-1]["step"] // 50
    assert len(scalars["test_acc"]) == len(scalars["test_loss"]) == 1
    assert round(scalars["test_acc"][0].value, 4) == run["test_acc"]  # as printed after fit
    # the network learned: 5 epochs of the tutorial's recipe on 7,000 images
    assert scalars["val_acc"][-1].value > 0.95 and scalars["train_loss"][-1].value < scalars["train_loss"][0].value
    # metrics.json holds the same numbers
    for entry, *points in zip(run["metrics"]["epochs"], *(scalars[t] for t in EPOCH_TAGS), strict=False):
        assert [entry[t] for t in EPOCH_TAGS] == pytest.approx([p.value for p in points], abs=1e-6)
    assert run["metrics"]["test"]["test_acc"] == pytest.approx(scalars["test_acc"][0].value, abs=1e-6)


def test_train_val_chart_layout(run):
    layout = run["events"].Tensors("custom_scalars__config__")
    assert len(layout) == 1
    from tensorboard.plugins.custom_scalar import layout_pb2

    proto = layout_pb2.Layout.FromString(layout[0].tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for chart in proto.category[0].chart}
    assert charts == {
        "loss": ["^train_loss$", "^val_loss$", "^test_loss$"],
        "acc": ["^train_acc$", "^val_acc$", "^test_acc$"],
    }
    tags = run["events"].Tags()["scalars"]
    for regexes in charts.values():  # each line matches exactly one logged tag
        assert all(len([t for t in tags if re.match(r, t)]) == 1 for r in regexes)


def test_images_decode_as_png_of_expected_size(run):
    events, epochs = run["events"], run["config"]["trainer"]["max_epochs"]
    assert sorted(events.Tags()["images"]) == sorted(tag for tag, _, _ in IMAGE_TAGS)
    for tag, count, size in IMAGE_TAGS:
        images = events.Images(tag)
        assert len(images) == (epochs if count == "epochs" else count), tag
        for event in images:
            picture = Image.open(io.BytesIO(event.encoded_image_string))
            assert picture.format == "PNG" and picture.size == size == (event.width, event.height), tag
            pixels = np.asarray(picture.convert("L"), dtype=np.float32)
            assert pixels.std() > 20, f"{tag} looks blank"


def test_val_confusion_matrix_drawn_once_for_the_last_epoch(run):
    """configs/mnist.yaml draws the validation matrix once (val_every_n_epochs: 0), at the end of fit, with the
    step of the last validation; its PNG and CSV are that epoch's."""
    images = run["events"].Images("val_confusion_matrix")
    assert [event.step for event in images] == [run["metrics"]["epochs"][-1]["step"]]  # the global step then


def test_hparams_with_real_metrics(run):
    events = run["events"]
    content = events.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == ["val_acc", "test_acc"]
    start = hparams_metadata.parse_session_start_info_plugin_data(content[hparams_metadata.SESSION_START_INFO_TAG])
    hparams = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    config = run["config"]
    for section in (config["model"], data_settings(config)):
        for name, value in section.items():
            assert hparams[name] == (str(value) if value is None else value), name
    assert hparams["max_epochs"] == config["trainer"]["max_epochs"] and hparams["seed"] == config["seed_everything"]
    end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    # TensorBoard shows each metric's last scalar point: real accuracies, test_acc as printed after fit
    val_acc, test_acc = events.Scalars("val_acc")[-1].value, events.Scalars("test_acc")[-1].value
    assert 0.95 < val_acc <= 1 and round(test_acc, 4) == run["test_acc"] and test_acc > 0.95


def test_model_graph(run):
    graph = run["events"].Graph()
    ops = {node.op for node in graph.node}
    assert {"aten::_convolution", "aten::max_pool2d", "aten::linear"} <= ops, ops
    assert sum(node.op == "aten::_convolution" for node in graph.node) == 2  # Conv32, Conv64


@pytest.mark.parametrize("stage, images", [("val", VAL_IMAGES), ("test", TEST_IMAGES)])
def test_confusion_matrix_counts_match_accuracy(run, stage, images):
    matrix = confusion_matrix(run["run_dir"] / f"confusion_matrix_{stage}.csv")
    assert matrix.shape == (10, 10) and matrix.min() >= 0
    assert matrix.sum() == images
    logged = run["metrics"]["epochs"][-1]["val_acc"] if stage == "val" else run["metrics"]["test"]["test_acc"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(logged, abs=1e-6)
    assert (matrix.sum(axis=1) > 0).all()  # every digit occurs in both sets
    assert Image.open(run["run_dir"] / f"confusion_matrix_{stage}.png").size == (640, 640)


def test_run_folder_reports(run):
    run_dir, record = run["run_dir"], run["metrics"]
    epochs = run["config"]["trainer"]["max_epochs"]
    assert [e["epoch"] for e in record["epochs"]] == list(range(epochs))
    steps = [e["step"] for e in record["epochs"]]
    assert steps == [steps[0] * (i + 1) for i in range(epochs)] and steps[0] == math.ceil(7_000 / 128)
    assert all(e["lr"] == run["config"]["model"]["lr"] for e in record["epochs"])
    assert Path(record["test"]["ckpt_path"]).name == run["best_ckpt"].name
    assert Image.open(run_dir / "learning_curves.png").size == (1000, 400)
    assert Image.open(run_dir / "test_confident_errors.png").size == (800, 240)
    assert not list(run_dir.glob(".*.tmp"))  # atomic writes left nothing behind


def free_port_url(log: Path, proc: subprocess.Popen, deadline: float) -> str:
    """The address TensorBoard prints once it listens (it was given ``--port 0``)."""
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"http://127\.0\.0\.1:\d+", log.read_text())
        if found:
            return found.group(0)
        time.sleep(0.2)
    raise AssertionError(f"tensorboard did not start (exit code {proc.poll()}):\n{log.read_text()[-2000:]}")


def get_json(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_server_serves_the_run(run, tmp_path):
    log = tmp_path / "tensorboard.log"
    # Serve a copy of the finished run alone: other tests add runs (test, predict) to the shared workdir.
    logdir = tmp_path / "lightning_logs"
    shutil.copytree(run["run_dir"], logdir / run["run_dir"].name, ignore=shutil.ignore_patterns("*.ckpt"))
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0"],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        url = free_port_url(log, proc, deadline)
        tags: dict = {}
        while time.monotonic() < deadline:  # the first load of the event files happens in the background
            tags = get_json(f"{url}/data/plugin/scalars/tags").get(run["run_dir"].name, {})
            if {"test_acc", *EPOCH_TAGS} <= tags.keys():
                break
            time.sleep(0.5)
        assert get_json(f"{url}/data/runs") == [run["run_dir"].name]
        assert {"test_acc", "test_loss", "train_loss_step", "lr-RMSprop", *EPOCH_TAGS} <= tags.keys()
        served = get_json(f"{url}/data/plugin/scalars/scalars?run={run['run_dir'].name}&tag=val_acc")
        assert [(step, value) for _, step, value in served] == [
            (e.step, pytest.approx(e.value)) for e in run["events"].Scalars("val_acc")
        ]
        groups = get_json(
            f"{url}/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_SUCCESS"],
                "startIndex": 0,
                "sliceSize": 10,
                "colParams": [{"metric": {"tag": "val_acc"}}, {"metric": {"tag": "test_acc"}}],
            },
        )["sessionGroups"]
        shown = {m["name"]["tag"]: m["value"] for m in groups[0]["metricValues"]}
        assert round(shown["test_acc"], 4) == run["test_acc"]
        assert shown["val_acc"] == pytest.approx(run["events"].Scalars("val_acc")[-1].value)
        assert groups[0]["hparams"]["lr"] == run["config"]["model"]["lr"]
    finally:
        stop_process(proc, timeout=10)


def without_report_callbacks(tmp_path: Path) -> Path:
    """configs/mnist.yaml with only the ModelCheckpoint callback left."""
    config = yaml.safe_load(CONFIG.read_text())
    config["trainer"]["callbacks"] = [
        c for c in config["trainer"]["callbacks"] if isinstance(c, dict) and c["class_path"].endswith("ModelCheckpoint")
    ]
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_callbacks_do_not_change_training(mnist_dir, tmp_path):
    """Same seed with and without the callbacks: identical weights after 2 epochs and identical test accuracy
    (a callback drawing random numbers or switching modes during epoch 1's validation would change epoch 2)."""
    short = (
        *offline_data(mnist_dir),
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "6",
        "--trainer.limit_val_batches",
        "4",
        "--trainer.limit_test_batches",
        "4",
        "--trainer.enable_progress_bar",
        "false",
    )
    results = {}
    for name, config in (("with", CONFIG), ("without", without_report_callbacks(tmp_path))):
        workdir = tmp_path / name
        workdir.mkdir()
        proc = run_cli("fit", "--config", str(config), *short, cwd=workdir, timeout=300)
        run_dir = version_dirs(workdir)[-1]
        weights = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        line = printed_test_line(proc.stdout)
        results[name] = (run_dir, weights["state_dict"], line.split(",")[0])  # test_acc and test_loss
    (with_dir, with_weights, with_line), (plain_dir, plain_weights, plain_line) = results["with"], results["without"]
    assert with_line == plain_line
    assert with_weights.keys() == plain_weights.keys()
    assert all(torch.equal(with_weights[k], plain_weights[k]) for k in with_weights)
    # and the callbacks are what wrote the reports: off in the config, none of them
    assert (with_dir / "metrics.json").is_file() and not (plain_dir / "metrics.json").exists()
    assert read_events(with_dir).Tags()["images"] and not read_events(plain_dir).Tags()["images"]
    assert confusion_matrix(with_dir / "confusion_matrix_test.csv").sum() == 4 * 128  # limit_test_batches


@pytest.mark.slow
def test_standalone_test_gets_its_own_report(run, tmp_path):
    """`test --ckpt_path` alone (the first 10 batches of the test set): its own run folder, HPARAMS and report."""
    run_cli(
        "test",
        "--config",
        str(CONFIG),
        "--data.data_dir",
        data_settings(run["config"])["data_dir"],
        "--data.download",
        "false",
        "--ckpt_path",
        str(run["best_ckpt"]),
        "--trainer.limit_test_batches",
        "10",
        "--trainer.enable_progress_bar",
        "false",
        cwd=tmp_path,
        timeout=300,
    )
    run_dir = version_dirs(tmp_path)[-1]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["epochs"] == [] and Path(record["test"]["ckpt_path"]) == run["best_ckpt"]
    matrix = confusion_matrix(run_dir / "confusion_matrix_test.csv")
    assert matrix.sum() == 10 * 128
    assert np.trace(matrix) / matrix.sum() == pytest.approx(record["test"]["test_acc"], abs=1e-6)
    events = read_events(run_dir)
    content = events.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert hparams_metadata.SESSION_START_INFO_TAG in content and "hp_metric" not in events.Tags()["scalars"]
    assert sorted(events.Tags()["images"]) == ["test_confident_errors", "test_confusion_matrix"]
    assert not (run_dir / "learning_curves.png").exists()  # no epochs to draw


def test_redrawn_confusion_matrix_is_the_same_picture_as_a_new_one(mnist_dir):
    """ConfusionMatrixLogger redraws one figure each epoch: its pixels must equal a freshly made figure's."""
    from mnist_lit.callbacks.plots import confusion_matrix_figure, figure_to_array
    from mnist_lit.data import load_split

    labels = load_split(mnist_dir, "test")[1]
    right = torch.bincount(labels * 10 + labels, minlength=100).reshape(10, 10)  # all on the diagonal
    wrong = torch.bincount(labels * 10 + labels.roll(1), minlength=100).reshape(10, 10)
    reused = confusion_matrix_figure(right, "epoch 1")
    first = figure_to_array(reused)
    assert confusion_matrix_figure(wrong, "epoch 2", reused) is reused
    fresh = figure_to_array(confusion_matrix_figure(wrong, "epoch 2"))
    assert np.array_equal(figure_to_array(reused), fresh)
    assert not np.array_equal(first, fresh) and first.shape == fresh.shape == (640, 640, 3)


@pytest.mark.slow
def test_val_confusion_matrix_every_n_epochs_and_the_last(mnist_dir, tmp_path):
    """val_every_n_epochs: 2 over 3 epochs draws after epoch 2, and epoch 3 (the last) at the end of fit; the
    CSV is the last epoch's either way."""
    config = yaml.safe_load(CONFIG.read_text())
    for entry in config["trainer"]["callbacks"]:
        if isinstance(entry, dict) and entry["class_path"].endswith("ConfusionMatrixLogger"):
            entry["init_args"]["val_every_n_epochs"] = 2
    (tmp_path / "every2.yaml").write_text(yaml.safe_dump(config))
    run_cli(
        "fit",
        "--config",
        str(tmp_path / "every2.yaml"),
        *offline_data(mnist_dir),
        "--trainer.max_epochs",
        "3",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--test_after_fit",
        "false",
        cwd=tmp_path,
    )
    run_dir = version_dirs(tmp_path)[-1]
    steps = [event.step for event in read_events(run_dir).Images("val_confusion_matrix")]
    assert steps == [6, 9]  # 3 optimizer steps an epoch: after epochs 2 and 3
    assert confusion_matrix(run_dir / "confusion_matrix_val.csv").sum() == 2 * 128


@pytest.mark.parametrize("value", [-1, None])
def test_val_every_n_epochs_out_of_range_is_one_error_line(mnist_dir, tmp_path, value):
    config = yaml.safe_load(CONFIG.read_text())
    for entry in config["trainer"]["callbacks"]:
        if isinstance(entry, dict) and entry["class_path"].endswith("ConfusionMatrixLogger"):
            entry["init_args"]["val_every_n_epochs"] = value
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    out = run_cli("fit", "--config", str(tmp_path / "bad.yaml"), *offline_data(mnist_dir), cwd=tmp_path, check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "val_every_n_epochs" in last and str(value) in last, out.stderr[-2000:]
    assert not (tmp_path / "lightning_logs").exists()


def test_learning_curves_leave_out_a_test_metric_that_is_not_a_number():
    """A diverged run's test_loss is NaN (``null`` in metrics.json): ``axhline(None)`` was a TypeError traceback after
    the fit. Its dashed line is left out and the legend says so; the curves' NaN points are gaps, and a curve
    without a finite point is named as such."""
    from mnist_lit.callbacks.plots import LEARNING_CURVES_PX, figure_to_array, learning_curves_figure

    epochs = [
        {"epoch": 0, "train_loss": 2.3, "val_loss": None, "train_acc": 0.1, "val_acc": 0.1},
        {"epoch": 1, "train_loss": None, "val_loss": None, "train_acc": 0.09, "val_acc": 0.1},
    ]
    for test in ({"test_loss": None, "test_acc": 0.07}, {"test_loss": math.nan, "test_acc": math.inf}):
        fig = learning_curves_figure(epochs, test)
        assert figure_to_array(fig).shape == (LEARNING_CURVES_PX[1], LEARNING_CURVES_PX[0], 3)
        labels = {text.get_text() for ax in fig.axes for text in ax.get_legend().get_texts()}
        # train_loss has one finite epoch (a gap for the other), val_loss none
        assert {"train_loss", "val_loss: not a number, not drawn", "test_loss: not a number, not drawn"} <= labels
        assert ("test_acc" if test["test_acc"] == 0.07 else "test_acc: not a number, not drawn") in labels


@pytest.mark.slow
def test_a_run_that_diverges_to_nan_ends_normally_with_its_reports(mnist_dir, tmp_path):
    """``--model.lr 1e30`` (finite, so accepted) trains into NaN: the fit used to end in a traceback from the
    learning curves. Now it exits 0, prints its (low) test accuracy and NaN loss as they are, and every report of
    the run folder is written; the diverged checkpoint still predicts."""
    limits = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2"]
    args = [*offline_data(mnist_dir), "--model.lr", "1e30", *limits, "--trainer.limit_test_batches", "2"]
    out = run_cli("fit", "--config", str(CONFIG), *args, cwd=tmp_path)
    assert "Traceback" not in out.stderr
    line = printed_test_line(out.stdout)
    assert "(test_loss nan, " in line and 0.0 <= float(line.split()[2]) < 0.5, line  # reported as it is
    run_dir = version_dirs(tmp_path)[-1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["test_loss"] is None and metrics["epochs"][0]["val_loss"] is None
    # Its first steps were finite, the later ones NaN: the epoch's loss is NaN, not the mean of the finite steps.
    assert metrics["epochs"][0]["train_loss"] is None and "Will be removed" not in out.stderr
    for name in ("learning_curves.png", "confusion_matrix_val.png", "confusion_matrix_test.png"):
        Image.open(run_dir / name).verify()
    Image.open(run_dir / "test_confident_errors.png").verify()
    assert math.isnan(read_events(run_dir).Scalars("test_loss")[-1].value)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    predicted = run_cli("predict", "--ckpt_path", str(ckpt), *offline_data(mnist_dir), cwd=tmp_path)
    assert "Traceback" not in predicted.stderr
    assert len((version_dirs(tmp_path)[-1] / "predictions.csv").read_text().splitlines()) == 10_001
