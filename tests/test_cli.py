"""The CLI end to end, in subprocesses: fit -> checkpoint -> test -> predict, config printing, errors."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIG, MNIST_10K, offline_data, printed_metric, printed_test_acc, run_cli, version_dirs

from mnist_lit import MNISTClassifier, MNISTDataModule
from mnist_lit.errors import SettingError
from mnist_lit.pictures import PicturesDataModule
from mnist_lit.runs import data_settings


def test_fit_trains_the_recipe_and_reports_test_accuracy(trained_run):
    run_dir = trained_run["run_dir"]
    assert run_dir.name == "version_0"
    for name in ("config.yaml", "hparams.yaml"):
        assert (run_dir / name).is_file()
    assert trained_run["last_ckpt"].is_file() and trained_run["best_ckpt"].is_file()
    # Tutorial recipe on 7,000 / 3,000 real images, tested on the official 10,000 test images.
    assert trained_run["test_acc"] >= 0.965
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 5 and data_settings(config)["batch_size"] == 128
    assert config["seed_everything"] == 0
    # Deprecation notices about Lightning's and TensorBoard's own use of torch: nothing a user can act on.
    assert "LeafSpec" not in trained_run["stderr"] and "torch.jit.trace" not in trained_run["stderr"]


def test_checkpoint_loads_with_weights_only_and_holds_plain_hyperparameters(trained_run):
    ckpt = torch.load(trained_run["best_ckpt"], weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["lr"] == 0.001 and ckpt["hyper_parameters"]["eps"] == 1e-7
    assert ckpt["datamodule_hyper_parameters"]["val_split"] == 0.3
    assert ckpt["state_dict"]["net.classifier.1.weight"].shape == (128, 1600)
    last = torch.load(trained_run["last_ckpt"], weights_only=True, map_location="cpu")
    assert last["epoch"] == 4 and last["global_step"] == 5 * 55  # ceil(7000 / 128) = 55 steps an epoch


@pytest.mark.slow
def test_test_and_predict_in_new_processes_reproduce_the_test_accuracy(trained_run, mnist_dir):
    workdir, ckpt = trained_run["workdir"], str(trained_run["best_ckpt"])
    common = (
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--ckpt_path",
        ckpt,
    )
    tested = run_cli("test", *common, cwd=workdir)
    assert round(printed_metric(tested.stdout, "test_acc"), 4) == round(trained_run["test_acc"], 4)

    predicted = run_cli("predict", *common, cwd=workdir, env={"TQDM_DISABLE": "0"}, merged=True)  # with its bar
    bar_end, report = predicted.stdout.rindex("Predicting DataLoader 0: 100%"), predicted.stdout.index("Wrote 10000")
    assert bar_end < report and predicted.stdout[bar_end:report].count("\n") == 1  # the report below the closed bar
    assert "dirpath has changed" not in tested.stderr + predicted.stdout  # Lightning's notice about unsaved state
    csv_path = version_dirs(workdir)[-1] / "predictions.csv"
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 10_000 and [int(r["index"]) for r in rows] == list(range(10_000))
    accuracy = sum(r["label"] == r["pred"] for r in rows) / len(rows)
    assert round(accuracy, 4) == round(trained_run["test_acc"], 4)
    first = rows[0]
    probs = [float(first[f"prob_{d}"]) for d in range(10)]
    assert abs(sum(probs) - 1) < 1e-4 and first["label"] == "7"
    assert int(first["pred"]) == max(range(10), key=probs.__getitem__)
    assert f"-> predicted digit {first['pred']} (label 7)" in predicted.stdout  # the tutorial's print


@pytest.mark.slow
def test_validate_reports_val_acc(trained_run, mnist_dir):
    out = run_cli(
        "validate",
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--ckpt_path",
        str(trained_run["best_ckpt"]),
        cwd=trained_run["workdir"],
    )
    best_val_acc = float(trained_run["best_ckpt"].stem.split("val_acc")[1])
    assert round(printed_metric(out.stdout, "val_acc"), 4) == best_val_acc


@pytest.mark.slow
def test_print_config_shows_the_recipe(tmp_path):
    out = run_cli("fit", "--config", str(CONFIG), "--print_config", cwd=tmp_path)
    config = yaml.safe_load(out.stdout)
    assert config["model"] == {
        "lr": 0.001,
        "rho": 0.9,
        "eps": 1e-07,
        "dropout1": 0.25,
        "dropout2": 0.5,
        "pixel_scale": "unit",
        "dataset": "mnist",
        "label_smoothing": 0.0,
        "weight_decay": 0.0,
        "lr_schedule": "constant",
        "warmup_fraction": 0.3,
    }  # the recipe: every extra off
    assert data_settings(config)["split"] == "tail" and data_settings(config)["val_split"] == 0.3
    assert not (tmp_path / "lightning_logs").exists()


def test_print_config_on_a_checkpoint_shows_what_the_command_runs_with(trained_run):
    """`test --ckpt_path best --print_config` prints the run's settings (its data folder, no download) and the
    checkpoint it resolved, as the command would run; not the defaults of a bare parse."""
    workdir = trained_run["workdir"]
    before = version_dirs(workdir)
    out = run_cli("test", "--ckpt_path", "best", "--print_config", cwd=workdir)
    config = yaml.safe_load(out.stdout)
    data = data_settings(config)
    assert Path(data["data_dir"]).resolve() == MNIST_10K and data["download"] is False  # the run's, not data/
    assert (workdir / config["ckpt_path"]).resolve() == trained_run["best_ckpt"].resolve()
    assert config["model"]["pixel_scale"] == "unit" and version_dirs(workdir) == before  # nothing run


@pytest.mark.slow
def test_console_script_runs_the_same_cli(tmp_path):
    script = shutil.which("mnist-lit", path=str(Path(sys.executable).parent))
    assert script, "the mnist-lit console script is not installed next to the interpreter"
    import subprocess

    out = subprocess.run(
        [script, "fit", "--config", str(CONFIG), "--print_config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and yaml.safe_load(out.stdout)["trainer"]["max_epochs"] == 5


@pytest.mark.slow
def test_missing_data_gives_one_clear_line(tmp_path):
    out = run_cli(
        "fit",
        "--config",
        str(CONFIG),
        "--data.data_dir",
        str(tmp_path / "nowhere"),
        "--data.download",
        "false",
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "t10k-labels-idx1-ubyte.gz" in error[0]
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in error[0]
    assert not list((tmp_path / "lightning_logs").glob("*/checkpoints/*.ckpt"))


@pytest.mark.slow
def test_unknown_key_and_wrong_type_are_refused_before_training(tmp_path, mnist_dir):
    unknown = run_cli("fit", "--config", str(CONFIG), "--data.batch_sise", "64", cwd=tmp_path, check=False)
    assert unknown.returncode != 0 and "batch_sise" in unknown.stderr
    wrong = run_cli("fit", "--config", str(CONFIG), "--data.batch_size", "many", cwd=tmp_path, check=False)
    assert wrong.returncode != 0 and "batch_size" in wrong.stderr
    assert "Traceback" not in unknown.stderr + wrong.stderr
    assert "python -m mnist_lit fit --help" in wrong.stderr and "__main__" not in unknown.stderr + wrong.stderr
    # usage (its first line: fit's whole usage is some 60 lines), tip, error: the error is not buried
    assert wrong.stderr.splitlines()[0].endswith("fit [-c CONFIG] ...") and len(wrong.stderr.splitlines()) <= 5
    typo = run_cli("tuen", cwd=tmp_path, check=False)
    assert typo.returncode == 2 and typo.stderr.splitlines()[-1] == (
        "error: unknown command 'tuen': choose from fit, validate, test, predict, cv, lr_find, tune, export, serve "
        "(python -m mnist_lit COMMAND --help)"
    )
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
def test_lightning_misconfiguration_is_one_line_and_progress_bar_off_still_works(tmp_path, mnist_dir):
    """configs/mnist.yaml carries a TQDMProgressBar (refresh_rate 20): a second bar is Lightning's refusal,
    shown as one line; --trainer.enable_progress_bar false turns the configured bar off instead of failing."""
    two_bars = run_cli(
        "fit",
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar",
        cwd=tmp_path,
        check=False,
    )
    assert two_bars.returncode == 2, two_bars.stderr[-2000:]
    assert two_bars.stderr.strip().splitlines()[-1].startswith("error: You added multiple progress bar callbacks")
    assert "Traceback" not in two_bars.stderr
    no_bar = run_cli(
        "fit",
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--test_after_fit",
        "false",
        cwd=tmp_path,
        env={"TQDM_DISABLE": "0"},
    )
    assert "Epoch 0" not in no_bar.stdout + no_bar.stderr  # no bar drawn
    assert json.loads((version_dirs(tmp_path)[0] / "metrics.json").read_text())["epochs"][0]["val_count"] == 256


@pytest.mark.slow
def test_deterministic_runs_keep_deterministic_algorithms_without_the_nan_fill(mnist_dir, tmp_path):
    """`deterministic: true` turns on PyTorch's deterministic algorithms; the CLI turns off only their debugging
    aid of filling every new tensor with NaN (0.5 ms of a 20 ms CPU step); runs stay reproducible
    (test_resume.py::test_two_seeded_runs_give_identical_metrics_and_weights)."""
    import subprocess

    probe = (
        "import sys, torch; from mnist_lit.cli import build_cli; build_cli(sys.argv[1:], run=False); "
        "print(torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)"
    )
    base = [
        sys.executable,
        "-c",
        probe,
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    for extra, expected in (([], "True False"), (["--trainer.deterministic", "false"], "False True")):
        out = subprocess.run(base + extra, capture_output=True, text=True, cwd=tmp_path, check=True)
        assert out.stdout.split("\n")[-2] == expected, out.stdout[-500:]


@pytest.mark.slow
def test_bf16_mixed_precision_trains_through_every_callback(tmp_path, mnist_dir):
    """`--trainer.precision bf16-mixed` (docs/scaling.md "Several GPUs"; on a CPU too): convolutions and matrix products in
    bfloat16 under autocast, weights kept in float32; the callbacks take the bfloat16 logits."""
    out = run_cli(
        "fit",
        "--config",
        str(CONFIG),
        *offline_data(mnist_dir),
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "20",
        cwd=tmp_path,
    )
    assert "bfloat16 Automatic Mixed Precision" in out.stdout + out.stderr
    run_dir = version_dirs(tmp_path)[0]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    assert {tensor.dtype for tensor in weights.values() if tensor.is_floating_point()} == {torch.float32}
    accuracy = printed_test_acc(out.stdout)
    assert accuracy >= 0.80  # 20 steps of 128 real images (0.87 here); chance is 0.10
    matrix = (run_dir / "confusion_matrix_test.csv").read_text().splitlines()[1:]
    assert sum(int(n) for row in matrix for n in row.split(",")[1:]) == 10_000
    assert (run_dir / "test_confident_errors.png").stat().st_size > 1000


def test_fit_without_config_is_refused_before_lightning(tmp_path):
    """Lightning's defaults (1000 epochs, none of the recipe's callbacks, a download into ./data) are never what
    a user of the tutorial means: fit asks for --config, unless the training length is spelled out."""
    for args in (["fit"], ["fit", "--data.batch_size", "32"], ["fit", "--seed_everything", "1"]):
        out = run_cli(*args, cwd=tmp_path, check=False)
        assert out.returncode == 2 and out.stderr.splitlines()[-1] == (
            "error: fit needs --config: the tutorial's recipe is --config configs/mnist.yaml (or give "
            "--trainer.max_epochs and the other settings yourself)"
        ), out.stderr[-2000:]
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 2  # usage, error
    assert not (tmp_path / "lightning_logs").exists() and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_training_nothing_is_refused_before_a_run_folder(tmp_path, mnist_dir):
    """max_epochs 0, max_steps 0 or limit_train_batches 0 would print the test accuracy of an untrained model; a
    training length given by hand without --config gets past the --config check and is judged on its value."""
    data = offline_data(mnist_dir)
    zero_epochs = run_cli("fit", "--config", str(CONFIG), *data, "--trainer.max_epochs", "0", cwd=tmp_path, check=False)
    zero_steps = run_cli("fit", *data, "--trainer.max_steps=0", cwd=tmp_path, check=False)
    for out, key in ((zero_epochs, "max_epochs"), (zero_steps, "max_steps")):
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
            f"error: --trainer.{key} 0 trains nothing; give 1 or more"
        ]
        assert "Test accuracy" not in out.stdout
    (tmp_path / "tiny.yaml").write_text("trainer:\n  limit_train_batches: 1e-400\n")  # a float that reads as 0.0
    for extra in (["--trainer.limit_train_batches", "0"], ["--config", "tiny.yaml"]):
        out = run_cli("fit", "--config", str(CONFIG), *data, *extra, cwd=tmp_path, check=False)
        assert out.returncode == 2 and out.stderr.splitlines()[-1] == (
            "error: --trainer.limit_train_batches 0.0 trains nothing; give a fraction above 0, or 1 or more"
        ), out.stderr[-2000:]
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
def test_a_trainer_argument_lightning_refuses_is_one_line_before_a_run_folder(tmp_path, mnist_dir):
    """Values jsonargparse accepts (strings) but Lightning's Trainer refuses ended in its ValueError/TypeError traceback."""
    data = offline_data(mnist_dir)
    for flag, value, words in (
        ("--trainer.accelerator", "5", "invalid accelerator name"),
        ("--trainer.devices", "a,b", "`devices` selected with `CPUAccelerator`"),
    ):
        out = run_cli("fit", "--config", str(CONFIG), *data, flag, value, cwd=tmp_path, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert out.stderr.splitlines()[-1].startswith("error: --trainer: ") and words in out.stderr.splitlines()[-1]
    assert not (tmp_path / "lightning_logs").exists()


def test_only_lightnings_own_refusals_become_error_lines():
    """A ValueError raised outside Lightning (a bug of ours) is not turned into a user error: it keeps its traceback."""
    from lightning.pytorch import Trainer

    from mnist_lit.parser_errors import lightning_refusal

    with pytest.raises(ValueError) as lightning_error:
        Trainer(accelerator="5")
    assert "invalid accelerator name" in lightning_refusal(lightning_error.value)
    with pytest.raises(ValueError) as own_error:
        int("not a number")
    assert lightning_refusal(own_error.value) is None


@pytest.mark.slow
def test_a_value_of_the_wrong_type_is_one_line_naming_key_value_and_type(tmp_path):
    expected = {
        ("--trainer.max_epochs", "abc"): "error: --trainer.max_epochs abc: expected an int (or null)",
        ("--data.download", "flase"): "error: --data.download flase: expected a bool (true or false)",
        ("--data.dataset", "emnist"): "error: --data.dataset emnist: expected one of 'mnist', 'fashion_mnist'",
        ("--model.lr", "fast"): "error: --model.lr fast: expected a float",
    }
    for (flag, value), line in expected.items():
        out = run_cli("fit", "--config", str(CONFIG), flag, value, cwd=tmp_path, check=False)
        assert out.returncode == 2 and out.stderr.splitlines()[-1] == line, out.stderr[-2000:]
        assert len(out.stderr.splitlines()) == 3  # usage's first line, the --help tip, the error
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
def test_an_infinite_learning_rate_is_one_line(tmp_path, mnist_dir):
    """1e400 reads as inf, which ``lr > 0`` let through (NaN losses, then a traceback plotting them)."""
    out = run_cli(
        "fit", "--config", str(CONFIG), *offline_data(mnist_dir), "--model.lr", "1e400", cwd=tmp_path, check=False
    )
    assert out.returncode == 2 and out.stderr.splitlines()[-1] == "error: model.lr must be a finite number > 0, got inf"
    assert "Traceback" not in out.stderr and not (tmp_path / "lightning_logs").exists()


def test_parser_errors_other_than_a_wrong_type_keep_their_words_on_one_line():
    from mnist_lit.parser_errors import one_line_error

    logger = (
        'Parser key "trainer.logger":\n\n  - Expected a path but 5 either not accessible or invalid\n'
        "  - Does not validate against any of the Union subtypes\n  Subtypes: [<class "
        "'lightning.pytorch.loggers.logger.Logger'>, collections.abc.Iterable[lightning.pytorch.loggers.logger.Logger], "
        "<class 'bool'>, <class 'NoneType'>]\n  Errors:\n    - Expected a dot import path string: 5\n"
        "    - Expected a <class 'bool'>\n    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n"
        "  Given value: 5"
    )
    assert one_line_error(logger) == (
        "--trainer.logger 5: expected a Logger, an Iterable[Logger] or a bool (true or false) (or null)"
    )
    assert one_line_error('Parser key "x":\n  Unable to load config "y"') == 'Parser key "x": Unable to load config "y"'
    assert one_line_error("unrecognized arguments: --data.batch_sise 64") == (
        "unrecognized arguments: --data.batch_sise 64"
    )


@pytest.mark.slow
def test_a_seed_numpy_cannot_take_is_one_line_before_a_run_folder(tmp_path):
    """``--seed_everything -1`` (or 2**40, on the command line or in a config) was a ValueError traceback from
    Lightning's seed_everything ("... is not in bounds, numpy accepts from 0 to 4294967295")."""
    (tmp_path / "seed.yaml").write_text("seed_everything: -1\n")
    for args, seed in (
        (["--seed_everything", "-1"], -1),
        (["--seed_everything", str(2**40)], 2**40),
        (["--seed_everything=4294967296"], 4294967296),
        (["--config", "seed.yaml"], -1),
    ):
        out = run_cli(
            "fit", "--config", str(CONFIG), *offline_data(tmp_path / "no_data"), *args, cwd=tmp_path, check=False
        )
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr[-2000:])
        assert out.stderr.splitlines()[-1] == (
            f"error: --seed_everything {seed} is not a seed numpy takes: give an integer from 0 to 4294967295, "
            "or false for no seeding"
        )
        assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [out.stderr.splitlines()[-1]]
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.slow
def test_the_seeds_lightning_takes_still_seed(tmp_path):
    """true, false, 0 and 2**32 - 1 pass the seed check: the run is seeded (or not) and goes on to read its data
    (none here: the data's error line, after the seed was set)."""
    for seed, seeded in (
        ("true", "Seed set to "),
        ("false", None),
        ("0", "Seed set to 0"),
        ("4294967295", "Seed set to 4294967295"),
    ):
        args = [*offline_data(tmp_path / "no_data"), "--seed_everything", seed]
        out = run_cli("fit", "--config", str(CONFIG), *args, cwd=tmp_path, check=False)
        assert out.returncode == 2 and out.stderr.splitlines()[-1].startswith("error: mnist data not found"), (
            seed,
            out.stderr[-2000:],
        )
        assert (seeded in out.stderr) if seeded else ("Seed set to" not in out.stderr)


@pytest.mark.parametrize(
    ("make", "line"),
    [
        (lambda: MNISTDataModule(batch_size=None), "--data.batch_size null: expected an int"),
        (lambda: MNISTDataModule(val_split=None), "--data.val_split null: expected a float"),
        (lambda: MNISTDataModule(split=None), "--data.split null: expected one of 'tail', 'random'"),
        (lambda: MNISTClassifier(lr=None), "--model.lr null: expected a float"),
        (lambda: PicturesDataModule("pics", max_pixels=None), "--data.max_pixels null: expected an int"),
    ],
)
def test_a_null_where_the_type_takes_none_is_one_line(make, line):
    """jsonargparse passes a config file's null (``lr:`` with no value) and ``--data.batch_size null`` through to
    the class, where the first comparison with it was a TypeError traceback."""
    with pytest.raises(SettingError) as refused:
        make()
    assert str(refused.value) == line


@pytest.mark.slow
def test_a_null_in_a_config_file_is_one_line_before_a_run_folder(tmp_path, mnist_dir):
    (tmp_path / "null.yaml").write_text("model:\n  lr:\ndata:\n  batch_size: 32\n")
    out = run_cli(
        "fit", "--config", str(CONFIG), "--config", "null.yaml", *offline_data(mnist_dir), cwd=tmp_path, check=False
    )
    assert out.returncode == 2 and out.stderr.splitlines()[-1] == "error: --model.lr null: expected a float"
    assert "Traceback" not in out.stderr and not (tmp_path / "lightning_logs").exists()
