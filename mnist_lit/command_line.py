"""The command line before any parser sees it: no command, ``--config`` before the command, hostile config files.

jsonargparse only knows LightningCLI's four commands at the top level, so with no command it lists
those four, and a ``--config`` given before the command is read at the top level, where
LightningCLI accepts no ``trainer``/``model``/``data`` keys. :func:`prepare_argv` fixes both
before parsing; :func:`mnist_lit.yaml_limits.check_config_file` refuses an oversized,
alias-bomb or unreadable config file before jsonargparse reads it, and :func:`check_argument_values`
such a value. :func:`missing_config` and :func:`fit_without_config` find what
:func:`mnist_lit.launch.main` refuses before Lightning is imported.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from mnist_lit.errors import empty_checkpoint_flag, no_checkpoint_file
from mnist_lit.yaml_limits import MAX_INT_DIGITS, ConfigLimitError, check_config_file, check_yaml, yaml_problem

PROG = "python -m mnist_lit"  # the name usage lines and tips give the program (the extra commands' too)

#: The LightningCLI commands that evaluate a trained checkpoint (each in a new run folder of its own).
EVALUATION_COMMANDS = ("validate", "test", "predict")
#: LightningCLI's own commands (:class:`lightning.pytorch.cli.LightningCLI` ``subcommands()``).
LIGHTNING_COMMANDS = ("fit", *EVALUATION_COMMANDS)

#: Commands beyond LightningCLI's own: name -> "module:function", called with the arguments after the name.
#: They build their runs with :func:`mnist_lit.cli.build_cli` (``run=False``), so all fit flags work the same there.
EXTRA_COMMANDS = {
    "cv": "mnist_lit.commands.cv:cv_main",
    "lr_find": "mnist_lit.commands.lr_find:lr_find_main",
    "tune": "mnist_lit.commands.tune:tune_main",
    "export": "mnist_lit.commands.export:export_main",
    "serve": "mnist_lit.commands.serve:serve_main",
}

#: Commands whose options include every fit flag, ``--config`` among them.
FIT_FLAG_COMMANDS = (*LIGHTNING_COMMANDS, "cv", "lr_find", "tune")

#: One line per command for the list shown when no command is given.
SUMMARIES = {
    "fit": "train, then test the best checkpoint",
    "validate": "evaluate a checkpoint on the validation part",
    "test": "evaluate a checkpoint on the test set",
    "predict": "predict the test set, or your pictures (--data PicturesDataModule --data.predict_path PATH)",
    "cv": "K-fold cross-validation",
    "lr_find": "Lightning's learning-rate finder",
    "tune": "hyperparameter search with Optuna",
    "export": "write an ONNX or TorchScript model, checked against PyTorch",
    "serve": "web page and HTTP API to draw or upload a digit",
}
CONFIG_FLAGS = ("--config", "-c")


def config_paths(argv: Sequence[str]) -> list[str]:
    """The files given with ``--config FILE``, ``--config=FILE`` or ``-c FILE``, in order."""
    paths = []
    for i, arg in enumerate(argv):
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def _leading_configs(argv: Sequence[str]) -> int:
    """How many leading arguments are ``--config`` options with their values."""
    i = 0
    while i < len(argv):
        if argv[i] in CONFIG_FLAGS and i + 1 < len(argv):
            i += 2
        elif argv[i].startswith("--config="):
            i += 1
        else:
            break
    return i


def _names_a_command(path: str, commands: Sequence[str]) -> bool:
    """True if the config file's top level has a command's name as a key (a config for the top level)."""
    try:
        with open(path) as handle:
            content = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(content, dict) and any(key in commands for key in content)


def config_after_command(argv: Sequence[str], commands: Sequence[str]) -> list[str]:
    """``--config F [--config G] COMMAND REST`` -> ``COMMAND --config F [--config G] REST``.

    Unchanged when no command follows the leading ``--config`` options, or when one of those files
    is written for the top level (its keys name commands, e.g. ``fit: {trainer: ...}``), which
    LightningCLI reads there.
    """
    n = _leading_configs(argv)
    if n == 0 or n >= len(argv) or argv[n] not in commands:
        return list(argv)
    if any(_names_a_command(path, commands) for path in config_paths(argv[:n])):
        return list(argv)
    return [argv[n], *argv[:n], *argv[n + 1 :]]


def no_command_usage(prog: str, commands: Sequence[str]) -> str:
    """The usage shown when no command is given: every command with its one-line summary."""
    width = max(len(name) for name in commands)
    lines = [f"usage: {prog} COMMAND [options]  ({prog} COMMAND --help lists its options)", "commands:"]
    lines += [f"  {name:<{width}}  {SUMMARIES.get(name, '')}".rstrip() for name in commands]
    return "\n".join(lines)


def missing_config(argv: Sequence[str]) -> str | None:
    """The first ``--config`` value that is neither a file nor inline YAML settings (jsonargparse accepts both), else None."""
    for path in config_paths(argv):
        if Path(path).is_file():
            continue
        try:
            inline = yaml.safe_load(path)
        except yaml.YAMLError:
            inline = None
        if not isinstance(inline, dict):
            return path
    return None


def missing_config_reason(path: str, hint: str) -> str:
    """Why ``--config PATH`` (from :func:`missing_config`) cannot be read: ``no such file (HINT)``, or a folder
    (with its YAML files named, at most eight)."""
    if not Path(path).is_dir():
        return f"no such file ({hint})"
    files = sorted(str(Path(path) / p.name) for p in Path(path).iterdir() if p.suffix in (".yaml", ".yml"))
    if not files:
        return "a folder, not a file; give a YAML file"
    return (
        f"a folder, not a file; give one of its YAML files ({', '.join(files[:8])}{', ...' if len(files) > 8 else ''})"
    )


#: Flags naming a checkpoint file; ``best`` and ``last`` are looked up later (:mod:`mnist_lit.run_settings`).
CHECKPOINT_FLAGS = ("--ckpt_path", "--finetune_from")


def checkpoint_flag_error(argv: Sequence[str]) -> str | None:
    """The ``error:`` line for the first of :data:`CHECKPOINT_FLAGS` whose (last) value is empty or names nothing
    on disk, else None. Not refused here: a file or a folder (a K-fold run; the CLI checks what it is),
    ``--ckpt_path best``/``last``, ``hpc``/``registry`` and URLs (refused later with their own messages)."""
    for flag in CHECKPOINT_FLAGS:
        values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]
        values += [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{flag}=")]
        value = values[-1] if values else None
        if value == "":  # an unset shell variable: never read as "none given"
            return f"error: {empty_checkpoint_flag(flag)}"
        if value in (None, "hpc", "registry") or "://" in value or value.startswith("registry:"):
            continue
        if flag == "--ckpt_path" and value in ("best", "last"):
            continue
        if not Path(value).exists():
            return f"error: {no_checkpoint_file(value, flag)}"
    return None


#: Flags that make ``fit`` without ``--config`` a run spelled out by hand (Lightning's defaults would train 1000 epochs).
TRAINING_LENGTH_FLAGS = ("--trainer.max_epochs", "--trainer.max_steps")


def fit_without_config(argv: Sequence[str]) -> bool:
    """True for ``fit`` with neither ``--config`` nor a training length (:data:`TRAINING_LENGTH_FLAGS`) given: it
    would run Lightning's defaults (1000 epochs, none of the recipe's callbacks, a download into ./data) instead
    of the tutorial's recipe. ``--help`` and ``--print_config`` run nothing and pass."""
    if not argv or argv[0] != "fit" or config_paths(argv) or {"-h", "--help"} & set(argv):
        return False
    if any(arg == "--print_config" or arg.startswith("--print_config=") for arg in argv):
        return False
    return not any(arg == flag or arg.startswith(f"{flag}=") for arg in argv for flag in TRAINING_LENGTH_FLAGS)


def prepare_argv(argv: Sequence[str], commands: Sequence[str], prog: str) -> list[str]:
    """The command line to parse, or exit 2 with one ``error:`` line.

    Exits when no command is given (after listing all ``commands``; an unknown one is left to the caller), or a
    ``--config`` file is not valid YAML or over a limit of :mod:`mnist_lit.yaml_limits` (:func:`config_error`);
    moves leading ``--config`` options after the command (:func:`config_after_command`).
    """
    argv = list(argv)
    if (
        (not argv or argv[0].startswith("-"))
        and not any(arg in commands for arg in argv)
        and not {"-h", "--help"} & set(argv)
    ):  # an unknown first word is main()'s to name
        print(no_command_usage(prog, commands), file=sys.stderr)
        print(f"error: no command given; choose one of {', '.join(commands)}", file=sys.stderr)
        sys.exit(2)
    error = config_error(argv) or pictures_outside_predict(argv)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return pictures_shorthand(config_after_command(argv, commands))


#: The DataModule of your own pictures (``predict --data PicturesDataModule``).
PICTURES_DATAMODULE = "mnist_lit.pictures.PicturesDataModule"
_PICTURE_FLAGS = ("--data.predict_path", "--data.predict_sheet")


def split_print_config(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """``argv`` without its ``--print_config[=FLAGS]`` option, and that option's flags (``""`` when given without
    any; None when absent). ``validate``/``test``/``predict`` on a checkpoint print their configuration only
    once it is settled from the run (:class:`mnist_lit.lightning_cli.MNISTLightningCLI`), not as parsed."""
    kept = [arg for arg in argv if arg != "--print_config" and not arg.startswith("--print_config=")]
    given = [arg for arg in argv if arg not in kept]
    return kept, (given[-1].partition("=")[2] if given else None)


def pictures_outside_predict(argv: Sequence[str]) -> str | None:
    """Why a command other than ``predict`` cannot take the command line's pictures (``--data PicturesDataModule``,
    ``--data.predict_path``, ``--data.predict_sheet``), in one line; None when it names none or is ``predict``."""
    if not argv or argv[0] == "predict":
        return None
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        value = value or (argv[i + 1] if name == "--data" and i + 1 < len(argv) else "")
        if name in _PICTURE_FLAGS or (name == "--data" and "PicturesDataModule" in value):
            return f"{name}{' ' + value if name == '--data' else ''}: {argv[0]} takes MNISTDataModule (the IDX files); only predict reads your pictures"
    return None


def pictures_shorthand(argv: Sequence[str]) -> list[str]:
    """``predict --data.predict_path PATH`` (the flag of earlier versions) -> ``predict --data
    mnist_lit.pictures.PicturesDataModule --data.predict_path PATH``, unless ``--data`` names a class already."""
    argv = list(argv)
    if not argv or argv[0] != "predict" or any(arg == "--data" or arg.startswith("--data=") for arg in argv):
        return argv
    at = next((i for i, arg in enumerate(argv) if arg.split("=", 1)[0] in _PICTURE_FLAGS), None)
    return argv if at is None else [*argv[:at], f"--data={PICTURES_DATAMODULE}", *argv[at:]]


def config_error(argv: Sequence[str]) -> str | None:
    """Why a ``--config`` file or a YAML value of ``argv`` cannot be read, in one line, else None: over a limit
    of :mod:`mnist_lit.yaml_limits`, a file that is not valid YAML (PyYAML's first line and its position) or that
    cannot be read (no permission)."""
    path = None
    try:
        for path in config_paths(argv):
            check_config_file(path)
        check_argument_values(argv)
    except ConfigLimitError as err:
        return str(err)
    except yaml.YAMLError as err:  # only check_config_file lets these through
        return f"--config {path}: not valid YAML ({yaml_problem(err)})"
    except OSError as err:  # a file this user may not read, e.g.
        return f"--config {path}: cannot be read ({err.strerror or err})"
    return None


def check_argument_values(argv: Sequence[str]) -> None:
    """:func:`mnist_lit.yaml_limits.check_yaml` on every argument value: jsonargparse parses some values (those of
    ``int``/``float``/``bool`` options, e.g.) with PyYAML directly, past the loader :func:`mnist_lit.yaml_limits.install`
    hooks, and puts the whole value into its error message, expanding any aliases; an int beyond 64 bits made
    ``float()`` overflow in jsonargparse (a traceback).

    Raises:
        ConfigLimitError: a value is over a limit (other YAML errors are left to jsonargparse).
    """
    for i, arg in enumerate(argv):
        option, value = arg.split("=", 1) if arg.startswith("--") and "=" in arg else (argv[i - 1] if i else "", arg)
        if "&" not in value and "*" not in value and len(value) <= MAX_INT_DIGITS:
            continue  # no anchors or aliases, and too short for an int beyond 64 bits
        try:
            check_yaml(value, f"the value of {option}" if option.startswith("-") else f"argument {i + 1}")
        except ConfigLimitError:
            raise
        except yaml.YAMLError:
            pass
