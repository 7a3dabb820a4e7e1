"""Typed access to Lightning's saved hyperparameters, shared by the model and the DataModules."""

from __future__ import annotations

from typing import cast

from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.core.mixins import HyperparametersMixin


class TypedHParams(HyperparametersMixin):
    """Mix in before ``LightningModule``/``LightningDataModule``: ``self.hparams`` is typed as the
    :class:`AttributeDict` Lightning returns, so ``self.hparams.batch_size`` passes a type checker
    (Lightning annotates it as a plain mapping, which refuses attribute access)."""

    @property
    def hparams(self) -> AttributeDict:
        """The arguments saved by ``save_hyperparameters()``, read as attributes."""
        return cast(AttributeDict, super().hparams)
