"""``python -m mnist_lit lr_find``: Lightning's learning-rate range test (the tutorial's §5, before a search)."""

from __future__ import annotations

import argparse

from mnist_lit.atomic import atomic_write, write_csv
from mnist_lit.commands.common import build_cli, fresh_run_dir, logger_flag, parse_command
from mnist_lit.errors import TuneError


def lr_find_options(p: argparse.ArgumentParser) -> None:
    """Add the options of ``lr_find`` (``--min_lr``, ``--max_lr``, ``--num_training``) to ``p``."""
    p.add_argument("--min_lr", type=float, default=1e-6, help="First learning rate tried (default: 1e-6).")
    p.add_argument("--max_lr", type=float, default=1.0, help="Last learning rate tried (default: 1).")
    p.add_argument("--num_training", type=int, default=100, help="Batches, one per learning rate (default: 100).")


def lr_find_main(argv: list[str]) -> None:
    """``python -m mnist_lit lr_find [fit flags]``: Lightning's learning-rate range test.

    Runs :meth:`lightning.pytorch.tuner.Tuner.lr_find` (learning rate grown exponentially from
    ``--min_lr`` to ``--max_lr`` over ``--num_training`` batches, weights restored afterwards), prints
    the suggested learning rate (steepest loss descent) and writes ``lr_find.csv`` (``lr, loss``) and
    ``lr_find.png`` into ``lightning_logs/lr_find_N/``. Nothing is changed in any config.

    Raises:
        TuneError: ``--min_lr``/``--max_lr`` not positive and increasing, or ``--num_training`` < 2.
    """
    opts, fit_args = parse_command(
        "lr_find", "Lightning's learning-rate finder for the model's RMSprop.", lr_find_options, argv
    )
    if not 0 < opts.min_lr < opts.max_lr:
        raise TuneError(f"need 0 < --min_lr < --max_lr, got {opts.min_lr} and {opts.max_lr}")
    if opts.num_training < 2:
        raise TuneError(f"--num_training must be 2 or more batches, got {opts.num_training}")
    import matplotlib  # start-up speed: `lr_find --help` imports neither matplotlib nor Lightning

    matplotlib.use("Agg")
    from lightning.pytorch.tuner import Tuner  # start-up speed, as above

    with fresh_run_dir(opts.log_dir, "lr_find") as run_dir:
        cli = build_cli([*fit_args, logger_flag(run_dir, "")], run=False)
        finder = Tuner(cli.trainer).lr_find(
            cli.model,
            datamodule=cli.datamodule,
            min_lr=opts.min_lr,
            max_lr=opts.max_lr,
            num_training=opts.num_training,
            update_attr=False,
        )
        if finder is None:  # Tuner.lr_find returns None only on processes other than rank 0; this runs one
            raise TuneError("lr_find found no learning-rate curve (the run stopped before its first batch)")
        suggestion = finder.suggestion()
        points = zip(finder.results["lr"], finder.results["loss"], strict=False)
        write_csv(run_dir / "lr_find.csv", ["lr", "loss"], ({"lr": lr, "loss": loss} for lr, loss in points))
        figure = finder.plot(suggest=suggestion is not None)
        with atomic_write(run_dir / "lr_find.png") as handle:
            figure.savefig(handle, format="png", dpi=100)  # type: ignore[union-attr]  # a Figure when not given an ax
        if suggestion is None:
            print(f"No learning rate suggested (too few finite losses); see {run_dir / 'lr_find.png'}")
        else:
            print(
                f"Suggested learning rate: {suggestion:.3g} (try --model.lr {suggestion:.3g}); "
                f"plot: {run_dir / 'lr_find.png'}"
            )
