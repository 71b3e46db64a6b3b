"""What the network sees: heat maps of the pixels that drive a class or a similarity, and what units respond to.

- :mod:`.methods`: occlusion (any engine) and four gradient methods
  (checkpoints), on Captum;
- :mod:`.explainer`: photos to :class:`Explanation` maps of the network's
  central crop, with the crop's place in the photo;
- :mod:`.drawing`: the overlay PNG, the raw ``.npy`` and its JSON.

Captum is an optional dependency (``pip install 'alexnet-kit[explain]'``).
"""
from __future__ import annotations

import importlib.util

from ..errors import AlexKitError
from .explainer import Explainer, Explanation, MethodNeedsCheckpoint, check_method
from .methods import DEFAULT_METHOD, GRADIENT_METHODS, METHODS


def require_captum() -> None:
    """One line when Captum, which the methods are built on, is not installed."""
    if importlib.util.find_spec("captum") is None:
        raise AlexKitError("explanations need Captum: pip install 'alexnet-kit[explain]' (or pip install captum)")


__all__ = ["Explainer", "Explanation", "MethodNeedsCheckpoint", "check_method", "METHODS", "GRADIENT_METHODS", "DEFAULT_METHOD",
           "require_captum"]
