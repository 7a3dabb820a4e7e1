"""A command line checked against the options an earlier run remembered (:mod:`mnist_lit.option_cache`), before
Lightning is imported: :func:`usage_error` gives what the parser would print for a mistyped option or a value of
the wrong type, or None for everything else, which the parser answers as before.

The check follows argparse's reading of a command line (an option takes the next argument as its value unless
that looks like an option; a unique prefix abbreviates an option; arguments nothing takes are "unrecognized"),
and a value is checked by jsonargparse itself against the option's type, so the words are the parser's. It
answers only what it is certain of: a class path's value (``--data PicturesDataModule``) or its own keys
(``--data.batch_size``), an inline YAML group (``--trainer '{...}'``), an ambiguous abbreviation, an option
without its value, ``--help`` and ``--print_config`` all go to the parser. A mistake inside a ``--config`` file is
not seen here: with a wrong flag too, this names the flag where the parser would name the file first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mnist_lit.option_cache import COMMANDS, build_type, remembered

#: argparse's ``_negative_number_matcher`` (Python 3.10-3.12): such an argument is a value, not an option.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def usage_line(prog: str) -> str:
    """The usage line above a parser's error, the same at any width: ``usage: PROG [-c CONFIG] ...``."""
    return f"usage: {prog} [-c CONFIG] ..."


def _refusal(prog: str, message: str) -> str:
    """What a parser error prints: the usage line, jsonargparse's tip, the ``error:`` line (on one line)."""
    from mnist_lit.parser_errors import one_line_error

    tip = f"tip: For details of accepted options run: {prog.replace(' [options]', '')} --help"
    return f"{usage_line(prog)}\n{tip}\nerror: {one_line_error(message)}\n"


def usage_error(argv: list[str]) -> str | None:
    """What the parser of ``argv[0]`` would print on stderr for ``argv`` (usage, tip, ``error:`` line), when the
    remembered options show it for certain: the first value its type refuses, else the arguments no option
    takes (``unrecognized arguments: ...``). None when there is nothing to refuse or it is the parser's to tell."""
    spec = _command(argv)
    if spec is None or _answered_first(argv, spec):
        return None
    options, extras, i = spec["options"], [], 1
    while i < len(argv):
        token, i = argv[i], i + 1
        if not token.startswith("-") or _NEGATIVE_NUMBER.match(token):
            extras.append(token)  # nothing takes it: argparse lists it as unrecognized
            continue
        name, has_value, value = token.partition("=") if token.startswith("--") else (token, "", "")
        option = _resolve(name, spec)
        if option is None:
            return None  # -cFILE, or an option's own key
        if not option:
            extras.append(token)
            continue
        kind, described = options[option]
        if kind in ("other", "class"):
            return None  # help, print_config; a class path's value, which the parser may refuse before what follows
        if not has_value:
            if i == len(argv) or (argv[i].startswith("-") and not _NEGATIVE_NUMBER.match(argv[i])):
                return None  # "expected one argument"
            value, i = argv[i], i + 1
        if kind == "config" and not _is_file(value):
            return None  # inline YAML, checked by the parser before what follows
        message = _type_error(option, described, value) if kind == "value" else None
        if message is not None:
            return _refusal(spec["prog"], message)
    return _refusal(spec["prog"], f"unrecognized arguments: {' '.join(extras)}") if extras else None


def _answered_first(argv: list[str], spec: dict) -> bool:
    """True when an argument anywhere in ``argv`` is answered before any value is checked: an ambiguous
    abbreviation of the command's or the top level's options (argparse looks at every argument first), ``--``, or
    ``--data.pixel_scale`` (refused by :func:`mnist_lit.cli.refuse_usage_errors` before parsing)."""
    for token in argv[1:]:
        name = token.partition("=")[0]
        if token == "--" or name == "--data.pixel_scale":
            return True
        if token.startswith("--") and spec["abbrev"] and any(_ambiguous(name, spec[key]) for key in ("options", "top")):
            return True
    return False


def _ambiguous(name: str, options) -> bool:
    """True when ``name`` is not one of ``options`` but the start of several (argparse: "ambiguous option")."""
    return name not in options and sum(option.startswith(name) for option in options) > 1


def _is_file(value: str) -> bool:
    """True when ``value`` names a file (else it is YAML settings, or a path too long to be one)."""
    try:
        return Path(value).is_file()
    except OSError:
        return False


def _command(argv: list[str]) -> dict | None:
    """The remembered options of ``argv[0]``, or None when there are none or ``argv`` asks for help or
    ``--print_config`` (which the parser answers before any error)."""
    if not argv or argv[0] not in COMMANDS or any(arg in ("-h", "--help") for arg in argv):
        return None
    if any(arg.startswith("--print_config") for arg in argv):
        return None
    commands = remembered()
    return commands[argv[0]] if commands is not None else None


def _resolve(name: str, spec: dict) -> str | None:
    """The option ``name`` names (itself, or the one it abbreviates), ``""`` when it names none, None when that is
    not certain: a single-dash form other than ``-c``/``-h``, or a key of a typed option (``--data.batch_size``,
    ``--trainer.logger.init_args.save_dir``, ``--trainer.max_epochs.foo``). ``--`` and ambiguous abbreviations never
    get here (:func:`_answered_first`)."""
    options = spec["options"]
    if name in options:
        return name
    if not name.startswith("--"):
        return None
    if any(name.startswith(f"{option}.") for option, (kind, _) in options.items() if kind in ("value", "class")):
        return None
    matches = [option for option in options if option.startswith(name)] if spec["abbrev"] else []
    return matches[0] if matches else ""


def _type_error(option: str, described: Any, value: str) -> str | None:
    """The parser's error for ``value`` of ``option``, whose type :func:`mnist_lit.option_cache.describe_type`
    gave as ``described``; None when the type takes it. jsonargparse itself checks it, so the words are its own."""
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(option, type=build_type(described))
    try:
        parser.parse_args([f"{option}={value}"])
    except ArgumentError as err:
        return str(err)
    return None
