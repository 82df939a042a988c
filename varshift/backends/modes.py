"""Kinds of layer, and the mode each kind runs in during each pass.

This is the one place where a kind of layer and a pass decide a layer's mode
(:meth:`Modes.training`); the adapters only apply the resulting per-layer flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Kind", "Modes", "PASSES", "EVAL", "TRAIN", "NODROP"]


class Kind(str, Enum):
    """What a layer is, for mode switches and reports.

    A ``str`` enum: a kind compares equal to its value (``Kind.CONV == 'conv'``) and
    reports store the value. ``Kind('dropuot')`` raises ValueError, so a misspelt kind
    cannot silently drop a layer from the attribution.
    """

    CONV = "conv"
    DENSE = "dense"
    BATCHNORM = "batchnorm"
    #: Dropout-like noise: a layer whose train mode multiplies or adds random noise.
    DROPOUT = "dropout"
    ACTIVATION = "activation"
    POOL = "pool"
    RESHAPE = "reshape"
    #: A layer made of layers (a model, a block).
    CONTAINER = "container"
    #: Any other layer.
    LAYER = "layer"

    def __str__(self):
        return self.value


@dataclass(frozen=True)
class Modes:
    """Train (True) or inference (False) mode, by kind of layer, for one pass.

    Attributes
    ----------
    batchnorm : bool
        BatchNorm normalises with batch statistics (True) or its running ones.
    dropout : bool
        Dropout-like noise layers are active.
    other : bool
        Every other layer (a user's module that calls ``F.dropout(x, p,
        self.training)`` follows this one).
    """

    batchnorm: bool
    dropout: bool
    other: bool

    @property
    def any_training(self) -> bool:
        """Whether some layer runs in train mode (and may update its buffers)."""
        return self.batchnorm or self.dropout or self.other

    def training(self, kind: Kind, frozen: bool = False) -> bool:
        """Whether a layer of ``kind`` runs in train mode in this pass.

        Parameters
        ----------
        kind : Kind
        frozen : bool, default False
            A BatchNorm kept in inference mode while the rest trains (frozen-BatchNorm
            fine-tuning): it stays in inference mode, as in training.
        """
        if kind is Kind.BATCHNORM:
            return self.batchnorm and not frozen
        if kind is Kind.DROPOUT:
            return self.dropout
        return self.other


#: The passes of every batch :func:`~varshift.measure` runs: ``train`` is what training
#: saw, ``eval`` what the user gets (Li et al.'s *real* statistics), ``nodrop`` the
#: counterfactual without noise that attributes the shift.
PASSES = {
    "eval": Modes(batchnorm=False, dropout=False, other=False),
    "train": Modes(batchnorm=True, dropout=True, other=True),
    "nodrop": Modes(batchnorm=True, dropout=False, other=False),
}
EVAL, TRAIN, NODROP = PASSES["eval"], PASSES["train"], PASSES["nodrop"]
