"""Beyond the recipe (issue 21): training-batch augmentation, the one-cycle schedule, configs/best.yaml,
K-fold models as an ensemble, and the tune_best.yaml search space. Real data, real Lightning, real processes."""

from __future__ import annotations

import csv
import inspect
import json
import shutil

import pytest
import torch
import yaml
from conftest import REPO, offline_data, printed_metrics, printed_test_acc, run_cli
from lightning.pytorch import Callback, Trainer

from mnist_lit.augment import TrainAugmentation
from mnist_lit.checkpoint import load_model
from mnist_lit.cli import main
from mnist_lit.commands.tune import load_tune_config
from mnist_lit.data import MNISTDataModule, load_split
from mnist_lit.ensemble import EnsembleClassifier, load_ensemble, member_checkpoints
from mnist_lit.errors import CheckpointError
from mnist_lit.model import MNISTClassifier, one_cycle_factor
from mnist_lit.runs import data_settings

BEST = REPO / "configs" / "best.yaml"
CONFIG = REPO / "configs" / "mnist.yaml"
TINY = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
]


class BatchRecorder(Callback):
    """Copies of the batches as the model receives them, per stage (placed after TrainAugmentation)."""

    def __init__(self) -> None:
        self.batches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"train": [], "val": [], "test": []}

    def _keep(self, stage, batch) -> None:
        self.batches[stage].append((batch[0].clone(), batch[1].clone()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._keep("train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._keep("val", batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep("test", batch)


def test_augmentation_changes_training_batches_only(mnist_dir):
    """Training batches: same labels, shape and dtype, other pixels; validation and test batches reach the model
    exactly as the data files hold them, and the data module's own tensors are unchanged after training."""
    torch.manual_seed(0)
    dm = MNISTDataModule(data_dir=str(mnist_dir), download=False, batch_size=64)
    before, after = BatchRecorder(), BatchRecorder()
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=3,
        limit_test_batches=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[before, TrainAugmentation(degrees=10, translate=0.1, scale=0.1), after],
    )
    model = MNISTClassifier()
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)

    train_images, train_labels = load_split(mnist_dir, "train")
    assert torch.equal(dm.data_train.images, train_images[:7000]) and torch.equal(
        dm.data_val.images, train_images[7000:]
    )
    changed = 0
    for (x0, y0), (x1, y1) in zip(before.batches["train"], after.batches["train"], strict=False):
        assert torch.equal(y0, y1) and x1.shape == x0.shape == (64, 1, 28, 28) and x1.dtype == torch.uint8
        changed += int((x1 != x0).flatten(1).any(1).sum())
        # each augmented digit keeps most of its ink (a small distortion, not another picture)
        assert ((x1.float().sum((1, 2, 3)) / x0.float().sum((1, 2, 3))) - 1).abs().max() < 0.35
    assert len(after.batches["train"]) == 4 and changed >= 0.95 * 4 * 64

    test_images, test_labels = load_split(mnist_dir, "test")
    for stage, (images, labels) in {
        "val": (train_images[7000:], train_labels[7000:]),
        "test": (test_images, test_labels),
    }.items():
        assert len(after.batches[stage]) == 3
        for i, (x, y) in enumerate(after.batches[stage]):  # unshuffled: batch i is rows 64i..64i+63
            assert torch.equal(x, images[64 * i : 64 * (i + 1)]) and torch.equal(y, labels[64 * i : 64 * (i + 1)])


def test_each_draw_is_shared_by_images_per_draw_images(mnist_dir):
    """torchvision v2 draws once per call: a group of images_per_draw images shares one distortion."""
    digit = load_split(mnist_dir, "test")[0][:1]
    batch = digit.repeat(16, 1, 1, 1)
    torch.manual_seed(1)
    own = TrainAugmentation(degrees=15, translate=0.1, images_per_draw=1).augment(batch)
    shared = TrainAugmentation(degrees=15, translate=0.1, images_per_draw=4).augment(batch)
    assert len({own[i].numpy().tobytes() for i in range(16)}) == 16
    groups = [{shared[i].numpy().tobytes() for i in range(g, g + 4)} for g in range(0, 16, 4)]
    assert all(len(g) == 1 for g in groups) and len(set().union(*groups)) == 4
    assert torch.equal(batch, digit.repeat(16, 1, 1, 1))  # augment() returns a copy


def test_augmentation_off_by_default_draws_no_random_numbers(mnist_dir):
    images, labels = load_split(mnist_dir, "test")
    batch = (images[:32].clone(), labels[:32].clone())
    state = torch.get_rng_state()
    TrainAugmentation().on_train_batch_start(None, None, batch, 0)
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(batch[0], images[:32])


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--augment.degrees=120", "error: augment.degrees must be in [0, 90), got 120.0"),
        ("--augment.images_per_draw=0", "error: augment.images_per_draw must be >= 1, got 0"),
        ("--model.warmup_fraction=1", "error: model.warmup_fraction must be in (0, 1), got 1.0"),
        ("--model.label_smoothing=-0.1", "error: model.label_smoothing must be in [0, 1), got -0.1"),
    ],
)
def test_bad_training_options_are_one_line_errors(tmp_path, capsys, monkeypatch, mnist_dir, flag, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(BEST), "--data.data_dir", str(mnist_dir), "--data.download", "false", flag])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert not (tmp_path / "lightning_logs").exists() or not any((tmp_path / "lightning_logs").iterdir())


def test_one_cycle_factor_is_pytorchs_one_cycle_curve():
    """The schedule is OneCycleLR's curve (div_factor 25, final_div_factor 1e4, cosine, no momentum cycling)."""
    for total, warmup in ((100, 0.3), (1650, 0.1), (9, 0.5)):
        weight = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.RMSprop([weight], lr=2e-3)
        reference = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=2e-3, total_steps=total, pct_start=warmup, cycle_momentum=False
        )
        for step in range(total):
            assert 2e-3 * one_cycle_factor(step, total, warmup) == pytest.approx(
                optimizer.param_groups[0]["lr"], rel=1e-12
            )
            optimizer.step()
            reference.step()
    assert one_cycle_factor(500, 100, 0.3) == one_cycle_factor(99, 100, 0.3) == pytest.approx(4e-6)  # held at the end


@pytest.mark.slow
def test_best_yaml_trains_end_to_end(tmp_path, mnist_dir):
    """`fit --config configs/best.yaml` with limited batches: augmentation on, the one-cycle learning rate in the
    logs, a checkpoint tested; its settings recorded in the run's config.yaml and its checkpoint."""
    best = yaml.safe_load(BEST.read_text())
    proc = run_cli(
        "fit",
        "--config",
        str(BEST),
        *offline_data(mnist_dir),
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.limit_test_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        cwd=tmp_path,
    )
    assert 0.0 < printed_test_acc(proc.stdout) <= 1.0
    assert "Traceback" not in proc.stderr
    run_dir = tmp_path / "lightning_logs" / "version_0"
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    # best.yaml's augment section as written, every option it leaves out (the photo steps) at its default: off
    defaults = {name: p.default for name, p in inspect.signature(TrainAugmentation).parameters.items()}
    assert recorded["augment"] == {**defaults, **best["augment"]} and recorded["augment"]["degrees"] > 0
    assert recorded["model"]["lr_schedule"] == "onecycle"
    epochs = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    peak = best["model"]["lr"]
    # 8 steps: epoch 0 starts at lr/25, epoch 1 (step 4) is on the way down
    assert epochs[0]["lr"] == pytest.approx(peak / 25) and epochs[1]["lr"] == pytest.approx(
        peak * one_cycle_factor(4, 8, best["model"]["warmup_fraction"])
    )
    model, _ = load_model(next((run_dir / "checkpoints").glob("epoch*.ckpt")))
    assert model.hparams.label_smoothing == best["model"]["label_smoothing"]
    # Resumed with more epochs, the curve is re-planned over 16 steps and the first resumed step is on it
    # (not at the finished 8-step curve's end, near 0, which the restored optimizer holds).
    run_cli(
        "fit",
        "--config",
        str(BEST),
        *offline_data(mnist_dir),
        "--trainer.max_epochs",
        "4",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--test_after_fit",
        "false",
        "--ckpt_path",
        "last",
        cwd=tmp_path,
    )
    epochs = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
    assert epochs[2]["lr"] == pytest.approx(peak * one_cycle_factor(8, 16, best["model"]["warmup_fraction"]))


# ---------------------------------------------------------------------------------------------- ensemble


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory, mnist_dir):
    """A finished 2-fold `cv` of the recipe, 3 training batches per fold: the folder and its working dir."""
    workdir = tmp_path_factory.mktemp("cv_ensemble")
    proc = run_cli(
        "cv",
        "--config",
        str(CONFIG),
        "--folds",
        "2",
        *TINY,
        *offline_data(mnist_dir),
        cwd=workdir,
    )
    assert "test --ckpt_path" in proc.stdout  # cv names the ensemble command
    return workdir / "lightning_logs" / "cv_0", workdir


def test_models_of_different_runs_are_no_ensemble():
    """An ensemble is the folds of one cv run: members trained with other settings are refused, naming one."""
    same = [MNISTClassifier(lr=1e-3), MNISTClassifier(lr=1e-3)]
    assert len(EnsembleClassifier.from_members(same).members) == 2
    with pytest.raises(
        CheckpointError,
        match=r"models 0 and 1 were trained with different settings "
        r"\(model.lr 0.001 vs 0.003\)",
    ):
        EnsembleClassifier.from_members([MNISTClassifier(lr=1e-3), MNISTClassifier(lr=3e-3)])


@pytest.mark.slow
def test_ensemble_probabilities_are_the_members_mean(cv_run, mnist_dir):
    folder, _ = cv_run
    ensemble, paths, _ = load_ensemble(folder)
    assert (
        [p.parent.parent.name for p in paths]
        == ["fold_0", "fold_1"]
        == [p.parent.parent.name for p in member_checkpoints(folder)]
    )
    images, _ = load_split(mnist_dir, "test")
    members = [load_model(p)[0] for p in paths]
    with torch.no_grad():
        got = ensemble.probabilities(images[:2000])
        each = [m.probabilities(images[:2000]) for m in members]
        logits = ensemble(images[:2000])
    assert torch.allclose(got, (each[0] + each[1]) / 2, atol=1e-7, rtol=0)
    assert torch.allclose(torch.softmax(logits, 1), got, atol=1e-6)
    assert not torch.allclose(each[0], each[1], atol=1e-3)  # two different models, not one twice
    assert isinstance(ensemble, EnsembleClassifier) and not ensemble.training


@pytest.mark.slow
def test_ensemble_test_and_predict_from_the_cv_folder(cv_run, mnist_dir):
    """`test --ckpt_path CV_RUN` prints the accuracy of the mean probabilities on all 10,000 test images and each
    member's; `predict` writes the mean probabilities; both log into CV_RUN/ensemble/."""
    folder, workdir = cv_run
    images, labels = load_split(mnist_dir, "test")
    ensemble, paths, _ = load_ensemble(folder)
    with torch.no_grad():
        probs = ensemble.probabilities(images)
        member_accs = [
            float((load_model(p)[0].probabilities(images).argmax(1) == labels).float().mean()) for p in paths
        ]
    accuracy = float((probs.argmax(1) == labels).float().mean())

    proc = run_cli("test", "--ckpt_path", str(folder), "--trainer.enable_progress_bar", "false", cwd=workdir)
    assert f"Ensemble of 2 models from {folder}" in proc.stderr
    printed = printed_metrics(proc.stdout)
    assert float(printed["test_acc"]) == pytest.approx(accuracy, abs=1e-4)
    assert [float(printed[f"member{k}_test_acc"]) for k in range(2)] == pytest.approx(member_accs, abs=1e-4)
    assert (folder / "ensemble" / "version_0" / "confusion_matrix_test.csv").is_file()

    run_cli(
        "predict",
        "--ckpt_path",
        str(folder),
        "--trainer.limit_predict_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        cwd=workdir,
    )
    with open(folder / "ensemble" / "version_1" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 256
    written = torch.tensor([[float(r[f"prob_{d}"]) for d in range(10)] for r in rows])
    assert torch.allclose(written, probs[:256], atol=1e-6)


@pytest.mark.slow
def test_one_folds_checkpoint_is_evaluated_in_a_new_run_folder(cv_run):
    """A fold's config.yaml logs into cv_N/fold_k: `test` of that fold's checkpoint must not write there
    (it crashed on the fold's config.yaml) but into a new lightning_logs/version_N, as for any run."""
    folder, workdir = cv_run
    fold = folder / "fold_0"
    ckpt = next((fold / "checkpoints").glob("epoch*.ckpt"))
    before = sorted(p.name for p in fold.iterdir())
    proc = run_cli(
        "test",
        "--ckpt_path",
        str(ckpt),
        "--trainer.limit_test_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        cwd=workdir,
    )
    assert 0 < printed_metrics(proc.stdout)["test_acc"] <= 1
    assert sorted(p.name for p in fold.iterdir()) == before
    new = workdir / "lightning_logs" / "version_0"
    assert (new / "config.yaml").is_file() and str(ckpt) in (new / "config.yaml").read_text()


@pytest.mark.slow
def test_ensemble_refusals_are_one_line(cv_run, tmp_path):
    folder, workdir = cv_run
    proc = run_cli("validate", "--ckpt_path", str(folder), cwd=workdir, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        f"error: validate --ckpt_path {folder}: every training image trained all but one"
    )
    unfinished = tmp_path / "cv_unfinished"
    shutil.copytree(folder, unfinished, ignore=shutil.ignore_patterns("ensemble"))
    (unfinished / "fold_1" / "fold_result.json").unlink()  # fold 1 not finished: neither its result nor its row
    table = (unfinished / "cv_results.csv").read_text().splitlines()
    (unfinished / "cv_results.csv").write_text("\n".join(line for line in table if not line.startswith("1,")) + "\n")
    proc = run_cli("test", "--ckpt_path", str(unfinished), cwd=workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {unfinished}: an unfinished cv run (folds finished: 0 of 2); an ensemble needs every fold: run cv "
        "to the end, or give one fold's .ckpt file"
    )


@pytest.mark.slow
def test_ensemble_exports_as_one_model(cv_run, tmp_path, mnist_dir):
    """`export --ckpt_path CV_RUN`: the ONNX file computes the mean probabilities (export checks it too)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    folder, workdir = cv_run
    output = tmp_path / "ensemble.onnx"
    proc = run_cli(
        "export",
        "--ckpt_path",
        str(folder),
        "--format",
        "onnx",
        "--output",
        str(output),
        "--num_images",
        "500",
        cwd=workdir,
    )
    assert "Ensemble of 2 models" in proc.stderr and output.is_file()
    images, _ = load_split(mnist_dir, "test")
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    exported = torch.from_numpy(session.run(None, {"pixels": images[:300].numpy()})[0])
    ensemble, _, _ = load_ensemble(folder)
    with torch.no_grad():
        assert torch.allclose(exported, ensemble.probabilities(images[:300]), atol=1e-5)


# ---------------------------------------------------------------------------------------------- tune


@pytest.mark.slow
def test_tune_best_searches_the_new_options(tmp_path, mnist_dir):
    """`tune --config configs/best.yaml --tune_config configs/tune_best.yaml`, 2 tiny trials: each trial ran
    with its suggested augmentation and model values, and best_config.yaml holds the best trial's."""
    space = load_tune_config(REPO / "configs" / "tune_best.yaml")["search_space"]
    assert {"augment.degrees", "model.label_smoothing", "model.warmup_fraction"} <= set(space)
    run_cli(
        "tune",
        "--config",
        str(BEST),
        "--tune_config",
        str(REPO / "configs" / "tune_best.yaml"),
        "--n_trials",
        "2",
        *TINY,
        *offline_data(mnist_dir),
        cwd=tmp_path,
    )
    run_dir = tmp_path / "lightning_logs" / "tune_0"
    with open(run_dir / "trials.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)
    for trial in trials:
        recorded = yaml.safe_load((tmp_path / trial["log_dir"] / "config.yaml").read_text())
        for key, spec in space.items():
            section, name = key.split(".", 1)
            value = (data_settings(recorded) if section == "data" else recorded[section])[name]
            if spec["type"] == "categorical":
                assert value in spec["choices"] and value == type(value)(trial[key])
            else:
                assert spec["low"] <= value <= spec["high"] and value == pytest.approx(float(trial[key]))
    best = max(trials, key=lambda t: float(t["val_acc"]))
    best_config = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    assert best_config["augment"]["degrees"] == pytest.approx(float(best["augment.degrees"]))
    assert best_config["model"]["lr_schedule"] == "onecycle"  # best.yaml's settings kept
