"""The commands beyond LightningCLI's four, one module each: ``cv``, ``lr_find``, ``tune``, ``export``, ``serve``.

:data:`mnist_lit.command_line.EXTRA_COMMANDS` names each one's entry point as a string (``"module:function"``),
imported only when the command runs, so nothing here is imported by ``fit`` and the CLI imports none of it.
``cv``, ``lr_find`` and ``tune`` take their own few options plus every ``fit`` flag and build their runs with
:func:`mnist_lit.cli.build_cli` (:mod:`mnist_lit.commands.common`); so a fold or a trial is exactly the run
``fit`` would make with those flags, and its ``config.yaml`` can be re-run with ``fit --config``. None of them
touches the test set. Outputs go to one new folder per command run:

    lightning_logs/cv_N/      fold_K/ (TensorBoard, config.yaml, checkpoints/, fold_result.json), cv_results.csv,
                              folds.csv; `cv --fold I` and `--collect` use lightning_logs/cv_Kfold/ (or --name)
    lightning_logs/tune_N/    trial_K/ (same), trials.csv, best_config.yaml
    lightning_logs/lr_find_N/ lr_find.csv, lr_find.png
"""
