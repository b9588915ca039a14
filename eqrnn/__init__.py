"""eqrnn: recurrent networks for Equinox and JAX."""

import importlib.metadata as _metadata

from . import interop as interop
from ._adapter import CallableCell as CallableCell
from ._cell import (
    AbstractArrayStateCell as AbstractArrayStateCell,
    AbstractCell as AbstractCell,
    AbstractNewtonCell as AbstractNewtonCell,
    AbstractStepCell as AbstractStepCell,
    AbstractStochasticCell as AbstractStochasticCell,
    AbstractTupleStateCell as AbstractTupleStateCell,
)
from ._conv_lstm import ConvLSTMCell as ConvLSTMCell
from ._gru import GRUCell as GRUCell
from ._indrnn import IndRNNCell as IndRNNCell
from ._layer_norm import (
    LayerNormGRUCell as LayerNormGRUCell,
    LayerNormLSTMCell as LayerNormLSTMCell,
)
from ._layers import (
    RNN as RNN,
    Bidirectional as Bidirectional,
    StackedRNN as StackedRNN,
    flip_sequence as flip_sequence,
    generate as generate,
)
from ._linear_cell import AbstractLinearCell as AbstractLinearCell
from ._linear_scan import linear_scan as linear_scan
from ._lru import LRU as LRU, RGLRU as RGLRU
from ._lstm import LSTMCell as LSTMCell
from ._mgu import MGUCell as MGUCell
from ._min_rnn import MinGRU as MinGRU, MinLSTM as MinLSTM
from ._modes import (
    AbstractMode as AbstractMode,
    Associative as Associative,
    Auto as Auto,
    Chunked as Chunked,
    Newton as Newton,
    Sequential as Sequential,
)
from ._platform import tuned_for as tuned_for
from ._scan import (
    newton_iterations as newton_iterations,
    scan_all_hidden as scan_all_hidden,
    scan_last as scan_last,
)
from ._sequences import (
    masked_mean as masked_mean,
    masked_sum as masked_sum,
    pad_sequences as pad_sequences,
    sequence_mask as sequence_mask,
)
from ._simple import SimpleCell as SimpleCell
from ._training import (
    data_parallel_shardings as data_parallel_shardings,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
    shard_batch as shard_batch,
    truncated_bptt as truncated_bptt,
)
from ._xlstm import MLSTMCell as MLSTMCell, SLSTMCell as SLSTMCell


__version__ = _metadata.version("eqrnn")
"""The installed version of eqrnn, from the package metadata."""

__all__ = [
    "AbstractArrayStateCell",
    "AbstractCell",
    "AbstractLinearCell",
    "AbstractMode",
    "AbstractNewtonCell",
    "AbstractStepCell",
    "AbstractStochasticCell",
    "AbstractTupleStateCell",
    "Associative",
    "Auto",
    "Bidirectional",
    "CallableCell",
    "Chunked",
    "ConvLSTMCell",
    "GRUCell",
    "IndRNNCell",
    "LRU",
    "LSTMCell",
    "LayerNormGRUCell",
    "LayerNormLSTMCell",
    "MGUCell",
    "MLSTMCell",
    "MinGRU",
    "MinLSTM",
    "Newton",
    "RGLRU",
    "RNN",
    "SLSTMCell",
    "Sequential",
    "SimpleCell",
    "StackedRNN",
    "__version__",
    "data_parallel_shardings",
    "flip_sequence",
    "generate",
    "interop",
    "linear_scan",
    "load_checkpoint",
    "masked_mean",
    "masked_sum",
    "newton_iterations",
    "pad_sequences",
    "save_checkpoint",
    "scan_all_hidden",
    "scan_last",
    "sequence_mask",
    "shard_batch",
    "truncated_bptt",
    "tuned_for",
]
