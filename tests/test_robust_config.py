"""configs/robust.yaml (issue 17, phone photos): configs/mnist.yaml's recipe plus photo-like training-batch
augmentation and more epochs; trained end to end through the CLI on real data."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, offline_data, printed_test_acc, run_cli

ROBUST = REPO / "configs" / "robust.yaml"
RECIPE = REPO / "configs" / "mnist.yaml"


def test_robust_is_the_recipe_plus_augmentation_and_epochs():
    """Same network, optimizer, batch size, split, data and callbacks as the recipe: only the augment section
    and the number of epochs differ; the augmentation turns on every photo step."""
    robust, recipe = yaml.safe_load(ROBUST.read_text()), yaml.safe_load(RECIPE.read_text())
    assert "augment" not in recipe and robust["trainer"]["max_epochs"] > recipe["trainer"]["max_epochs"]
    augment = robust.pop("augment")
    robust["trainer"]["max_epochs"] = recipe["trainer"]["max_epochs"]
    assert robust == recipe
    assert augment["blur_sigma"] > 0 and augment["blur_p"] > 0 and augment["thicken_p"] + augment["thin_p"] > 0
    assert augment["degrees"] > 0 and augment["ink_gamma"] > 0


@pytest.mark.slow
def test_robust_yaml_trains_end_to_end(tmp_path, mnist_dir):
    """`fit --config configs/robust.yaml`, one short epoch: exit 0, a tested checkpoint, the augmentation
    recorded in the run's config.yaml as the config file sets it."""
    proc = run_cli(
        "fit",
        "--config",
        str(ROBUST),
        *offline_data(mnist_dir),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "5",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.limit_test_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert 0.0 < printed_test_acc(proc.stdout) <= 1.0
    run_dir = tmp_path / "lightning_logs" / "version_0"
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recorded["augment"] == yaml.safe_load(ROBUST.read_text())["augment"]
    assert len(list((run_dir / "checkpoints").glob("epoch0-*.ckpt"))) == 1
