"""eqrnn: recurrent networks for Equinox and JAX."""

import importlib.metadata

from . import interop as interop
from ._cell import AbstractCell as AbstractCell
from ._gru import GRUCell as GRUCell
from ._layers import (
    RNN as RNN,
    Bidirectional as Bidirectional,
    StackedRNN as StackedRNN,
    flip_sequence as flip_sequence,
)
from ._lstm import LSTMCell as LSTMCell
from ._mgu import MGUCell as MGUCell
from ._scan import scan_all_hidden as scan_all_hidden, scan_last as scan_last
from ._simple import SimpleCell as SimpleCell
from ._training import (
    data_parallel_shardings as data_parallel_shardings,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
    shard_batch as shard_batch,
    truncated_bptt as truncated_bptt,
)


__version__ = importlib.metadata.version("eqrnn")

__all__ = [
    "AbstractCell",
    "Bidirectional",
    "GRUCell",
    "LSTMCell",
    "MGUCell",
    "RNN",
    "SimpleCell",
    "StackedRNN",
    "__version__",
    "data_parallel_shardings",
    "flip_sequence",
    "interop",
    "load_checkpoint",
    "save_checkpoint",
    "scan_all_hidden",
    "scan_last",
    "shard_batch",
    "truncated_bptt",
]
