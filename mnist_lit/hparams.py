"""Typed access to Lightning's saved hyperparameters, shared by the model and the DataModules, and the check that
none of their arguments is a ``null`` its type does not take (:func:`refuse_nulls`)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, cast, get_args, get_type_hints

from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.core.mixins import HyperparametersMixin

from mnist_lit.errors import SettingError
from mnist_lit.parser_errors import expected_types


class TypedHParams(HyperparametersMixin):
    """Mix in before ``LightningModule``/``LightningDataModule``: ``self.hparams`` is typed as the
    :class:`AttributeDict` Lightning returns, so ``self.hparams.batch_size`` passes a type checker
    (Lightning annotates it as a plain mapping, which refuses attribute access)."""

    @property
    def hparams(self) -> AttributeDict:
        """The arguments saved by ``save_hyperparameters()``, read as attributes."""
        return cast(AttributeDict, super().hparams)


@cache
def _init_hints(owner: type) -> dict[str, Any]:
    """The resolved annotations of ``owner.__init__`` (the module's ``from __future__ import annotations`` strings)."""
    return get_type_hints(vars(owner)["__init__"])


def refuse_nulls(owner: type, arguments: Mapping[str, Any], group: str) -> None:
    """Refuse an argument of ``owner.__init__`` that is None where its annotation has no None: jsonargparse passes a
    config file's ``null`` (``lr:`` with no value) and a class's own ``--data.batch_size null`` through to the class,
    where the first comparison with it was a ``TypeError`` traceback.

    Args:
        owner: the model or DataModule class; arguments: its ``__init__``'s ``locals()``; group: ``model`` or ``data``.

    Raises:
        SettingError: ``--GROUP.NAME null: expected an int`` (the types as :func:`mnist_lit.parser_errors.expected_types`
            names them).
    """
    for name, hint in _init_hints(owner).items():
        if name in arguments and arguments[name] is None and not _allows_none(hint):
            raise SettingError(f"--{group}.{name} null: expected {expected_types([str(hint)])}")


def _allows_none(hint: Any) -> bool:
    """Whether an argument annotated ``hint`` may be None (``Any``, ``None``, ``X | None``, ``Optional[X]``)."""
    return hint is Any or hint is type(None) or type(None) in get_args(hint)
