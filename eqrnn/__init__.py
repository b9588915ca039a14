"""eqrnn: recurrent networks for Equinox and JAX."""

import importlib.metadata

from ._cell import AbstractCell as AbstractCell
from ._gru import GRUCell as GRUCell
from ._lstm import LSTMCell as LSTMCell
from ._mgu import MGUCell as MGUCell
from ._scan import scan_all_hidden as scan_all_hidden, scan_last as scan_last
from ._simple import SimpleCell as SimpleCell


__version__ = importlib.metadata.version("eqrnn")

__all__ = [
    "AbstractCell",
    "GRUCell",
    "LSTMCell",
    "MGUCell",
    "SimpleCell",
    "__version__",
    "scan_all_hidden",
    "scan_last",
]
