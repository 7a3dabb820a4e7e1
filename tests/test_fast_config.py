"""configs/fast.yaml: the tutorial's recipe (configs/mnist.yaml) in bfloat16 mixed precision, nothing else."""

from __future__ import annotations

import yaml
from conftest import CONFIG, REPO, run_cli

FAST = REPO / "configs" / "fast.yaml"


def test_fast_config_is_the_recipe_in_bf16():
    recipe, fast = yaml.safe_load(CONFIG.read_text()), yaml.safe_load(FAST.read_text())
    assert fast["trainer"].pop("precision") == "bf16-mixed" and "precision" not in recipe["trainer"]
    assert fast == recipe  # a change to configs/mnist.yaml must be made here too


def test_fast_config_parses_as_fit_reads_it(tmp_path, mnist_dir):
    out = run_cli("fit", "--config", str(FAST), "--data.data_dir", str(mnist_dir), "--data.download", "false",
                  "--print_config", cwd=tmp_path)
    config = yaml.safe_load(out.stdout)
    assert config["trainer"]["precision"] == "bf16-mixed" and config["trainer"]["max_epochs"] == 5
    assert config["data"]["batch_size"] == 128 and config["model"]["lr"] == 0.001
