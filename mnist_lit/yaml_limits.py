"""YAML read with limits: text size, nesting depth and alias expansion, so a hostile ``--config`` fails in one line.

PyYAML builds an aliased node once and shares it, so a 1.3 kB "billion laughs" file (nine levels
of ten aliases to the level below) loads quickly, and the ~10^9 values appear only later, when
jsonargparse walks, copies and checks the configuration: memory grows until ``MemoryError``.
:func:`check_yaml` counts what a text expands to from PyYAML's event stream (libyaml's C parser
when available) with each anchor's expanded size remembered, so the count costs one pass over the
text and stops as soon as a limit is passed; nothing is built. :func:`install` puts it in front
of jsonargparse's YAML loader, which reads every ``--config`` file and every YAML value given on
the command line (``jsonargparse.set_loader``, its documented hook). The same pass refuses an int beyond 64 bits
(:func:`_check_int`): no setting takes one, and past that range ``float()`` of it, torch and Python's 4,300-digit limit
raise errors that came out as tracebacks.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mnist_lit.limits import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_NODES

_EventLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_INT_TAG = "tag:yaml.org,2002:int"
#: The largest int a setting may have: a signed 64-bit integer's, the range of torch's int64 and of C's ``long``.
MAX_INT = 2**63 - 1
#: Characters of :data:`MAX_INT` (19): a plain scalar no longer than this is never an int beyond it.
MAX_INT_DIGITS = len(str(MAX_INT))


class ConfigLimitError(yaml.YAMLError):
    """The YAML text is over a limit; the message is one line saying which and by how much."""


def check_yaml(text: str, source: str = "the configuration") -> None:
    """Refuse YAML that is too long, nested too deep, or expands through aliases to too many values.

    Args:
        text: the YAML text.
        source: what to call it in the message (e.g. the file's path).

    Raises:
        ConfigLimitError: over :data:`MAX_CONFIG_BYTES` characters, deeper than :data:`MAX_CONFIG_DEPTH`,
            more than :data:`MAX_CONFIG_NODES` values once aliases are expanded, or an int beyond 64 bits
            (:func:`_check_int`).
        yaml.YAMLError: the text is not valid YAML.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigLimitError(f"{source} has {len(text):,} characters, more than the limit of {MAX_CONFIG_BYTES:,}")
    total, open_collections = 0, []
    anchor_sizes: dict[str, int] = {}
    for event in yaml.parse(text, Loader=_EventLoader):
        if isinstance(event, yaml.AliasEvent):
            total += anchor_sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            _check_int(event, source)
            if event.anchor:
                anchor_sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_collections.append((total, event.anchor))
            total += 1
            if len(open_collections) > MAX_CONFIG_DEPTH:
                raise ConfigLimitError(f"{source} nests lists or mappings more than {MAX_CONFIG_DEPTH} deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            start, anchor = open_collections.pop()
            if anchor:
                anchor_sizes[anchor] = total - start
        if total > MAX_CONFIG_NODES:
            raise ConfigLimitError(
                f"{source} expands to more than {MAX_CONFIG_NODES:,} values through YAML aliases "
                "(*name); refused before expanding it (a 'billion laughs' attack?)"
            )


def _check_int(event: yaml.ScalarEvent, source: str) -> None:
    """Refuse a plain scalar that PyYAML reads as an int beyond :data:`MAX_INT` either way (decimal, ``0x``, ``0o``,
    ``0b`` or sexagesimal, as its resolver finds them): a float option's ``float()`` of it overflows, Lightning and
    torch overflow on it, and past Python's digit limit (:func:`sys.get_int_max_str_digits`) reading it raises
    ``ValueError``, none of which is a ``yaml.YAMLError``."""
    if not event.implicit[0] or len(event.value) <= MAX_INT_DIGITS:
        return
    if yaml.resolver.Resolver().resolve(yaml.ScalarNode, event.value, (True, False)) != _INT_TAG:
        return
    try:
        within = abs(yaml.safe_load(event.value)) <= MAX_INT
    except ValueError:  # more digits than Python reads
        within = False
    if not within:
        shown = event.value if len(event.value) <= 24 else f"{event.value[:10]}...{event.value[-4:]}"
        raise ConfigLimitError(
            f"{source} has the number {shown} ({len(event.value):,} characters), beyond the 64-bit integers "
            f"settings take (at most {MAX_INT:,}); give a smaller number"
        )


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error in a few words with its place: ``line 2, column 1: did not find expected ',' or ']'``
    (line and column count from 1, as PyYAML prints them), ``position 0: unacceptable character ...`` for a
    character that YAML does not allow (a binary file), else the first line of the message."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    position = getattr(err, "position", None)
    return f"position {position}: {first}" if position is not None else first


def check_config_file(path: str | Path) -> None:
    """:func:`check_yaml` on a file, refusing it by its size before reading it.

    Raises:
        ConfigLimitError, yaml.YAMLError: see :func:`check_yaml`; ``yaml.reader.ReaderError`` also for a file that
            is not UTF-8 text. A missing file passes (jsonargparse names it).
    """
    path = Path(path)
    if not path.is_file():
        return
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigLimitError(
            f"{path} has {size:,} bytes, more than the limit of {MAX_CONFIG_BYTES:,} for a configuration"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")  # what jsonargparse reads configuration files as
    except UnicodeDecodeError as err:
        raise yaml.reader.ReaderError(
            str(path), err.start, data[err.start : err.start + 1], "utf-8", err.reason
        ) from None
    check_yaml(text, str(path))


def install() -> None:
    """Make jsonargparse's ``yaml`` mode run :func:`check_yaml` before its own loader (once per process)."""
    from jsonargparse import get_loader, set_loader

    original = get_loader("yaml")
    if getattr(original, "mnist_lit_checked", False):
        return

    def load(stream):
        if isinstance(stream, str):
            check_yaml(stream)
        return original(stream)

    load.mnist_lit_checked = True  # type: ignore[attr-defined]  # a mark on the function: install() runs once
    set_loader("yaml", load, exceptions=(yaml.YAMLError,))
