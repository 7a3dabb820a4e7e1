"""configs/fast.yaml: the tutorial's recipe (configs/mnist.yaml) in bfloat16 mixed precision, without the pictures."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import CONFIG, REPO, offline_data, run_cli

from mnist_lit.runs import data_settings

FAST = REPO / "configs" / "fast.yaml"


#: The callbacks of configs/mnist.yaml that fast.yaml leaves out (TensorBoard images and graph: the slow outputs).
LEFT_OUT = {"ValPredictionGrid", "ConfusionMatrixLogger", "ConfidentErrors", "GraphLogger"}
#: ... and the one it sets differently: metrics.json without learning_curves.png.
CHANGED = {"MetricsHistory": {"curves_filename": None}}


def callback_name(entry: str | dict) -> str:
    return (entry if isinstance(entry, str) else entry["class_path"]).rsplit(".", 1)[-1]


def test_fast_config_is_the_recipe_in_bf16_without_the_pictures():
    recipe, fast = yaml.safe_load(CONFIG.read_text()), yaml.safe_load(FAST.read_text())
    assert fast["trainer"].pop("precision") == "bf16-mixed" and "precision" not in recipe["trainer"]
    kept = [entry for entry in recipe["trainer"]["callbacks"] if callback_name(entry) not in LEFT_OUT]
    assert len(kept) == len(recipe["trainer"]["callbacks"]) - len(LEFT_OUT)  # each is in the recipe once
    for i, entry in enumerate(kept):
        if callback_name(entry) in CHANGED:
            path = entry if isinstance(entry, str) else entry["class_path"]
            kept[i] = {"class_path": path, "init_args": CHANGED[callback_name(entry)]}
    recipe["trainer"]["callbacks"] = kept
    assert fast == recipe  # a change to configs/mnist.yaml must be made here too


@pytest.mark.slow
def test_fast_config_parses_as_fit_reads_it(tmp_path, mnist_dir):
    out = run_cli(
        "fit",
        "--config",
        str(FAST),
        *offline_data(mnist_dir),
        "--print_config",
        cwd=tmp_path,
    )
    config = yaml.safe_load(out.stdout)
    assert config["trainer"]["precision"] == "bf16-mixed" and config["trainer"]["max_epochs"] == 5
    assert data_settings(config)["batch_size"] == 128 and config["model"]["lr"] == 0.001


def test_cpu_bf16_flags_are_read_from_cpuinfo(tmp_path):
    from mnist_lit.precision import bf16_cpu_notice, cpu_has_bf16

    amx, avx2 = tmp_path / "amx", tmp_path / "avx2"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma\n")
    assert cpu_has_bf16(str(amx)) is True and cpu_has_bf16(str(avx2)) is False
    assert cpu_has_bf16(str(tmp_path / "none")) is None
    assert bf16_cpu_notice("32-true", on_cpu=True) is None and bf16_cpu_notice("bf16-mixed", on_cpu=False) is None


@pytest.mark.slow
def test_bf16_fit_on_a_cpu_without_bf16_says_it_is_emulated(tmp_path, mnist_dir):
    from mnist_lit.precision import cpu_has_bf16

    out = run_cli(
        "fit",
        "--config",
        str(FAST),
        *offline_data(mnist_dir),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--test_after_fit",
        "false",
        cwd=tmp_path,
    )
    notes = [line for line in out.stderr.splitlines() if line.startswith("note: --trainer.precision bf16-mixed")]
    assert len(notes) == (1 if cpu_has_bf16() is False else 0)
    run_dir = tmp_path / "lightning_logs" / "version_0"
    assert len(json.loads((run_dir / "metrics.json").read_text())["epochs"]) == 1
    assert not (run_dir / "learning_curves.png").exists()  # curves_filename: null
