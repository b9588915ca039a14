"""The cells every cell, reference and hardening test parametrises over.

A new cell takes one `CellCase` here: its class, its family, how many gate blocks
its `weight_ih` stacks (if it stacks them), and its equations written out in NumPy
from its docstring (float64), which `test_cells.py` and `test_parallel_cells.py`
compare one step of the cell with.

This is the only list of cells in `tests/`: every other test that runs several
cells selects them from `CASES` by capability (the selections at the end of this
file: a public base class such as `eqrnn.AbstractNewtonCell`, a class's `modes`, the
kind of hidden state, or a `CellCase` field such as `fused`), so that a new cell is
tested wherever its capabilities say, without editing another file.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.random as jr
import numpy as np

import eqrnn


def sigmoid(x: Any) -> Any:
    return 1 / (1 + np.exp(-x))


def _g(x: Any) -> Any:
    """MinGRU's and MinLSTM's default activation."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def _params(cell: Any) -> dict[str, Any]:
    return {k: np.asarray(v) for k, v in vars(cell).items() if eqx.is_array(v)}


def _simple(cell: Any, x: Any, h: Any) -> Any:
    p = _params(cell)
    return np.tanh(p["weight_ih"] @ x + p["weight_hh"] @ h + p["bias"])


def _gru(cell: Any, x: Any, h: Any) -> Any:
    p, n = _params(cell), cell.hidden_size
    gi, gh = p["weight_ih"] @ x + p["bias"], p["weight_hh"] @ h
    r = sigmoid(gi[:n] + gh[:n])
    z = sigmoid(gi[n : 2 * n] + gh[n : 2 * n])
    cand = np.tanh(gi[2 * n :] + r * (gh[2 * n :] + p["bias_hn"]))
    return (1 - z) * cand + z * h


def _lstm(cell: Any, x: Any, hidden: Any) -> Any:
    p, n = _params(cell), cell.hidden_size
    h, c = hidden
    g = p["weight_ih"] @ x + p["weight_hh"] @ h + p["bias"]
    i, f, gg, o = (g[k * n : (k + 1) * n] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
    return sigmoid(o) * np.tanh(c), c


def _mgu(cell: Any, x: Any, h: Any) -> Any:
    p, n = _params(cell), cell.hidden_size
    wi, wh, b = p["weight_ih"], p["weight_hh"], p["bias"]
    f = sigmoid(wi[:n] @ x + wh[:n] @ h + b[:n])
    cand = np.tanh(wi[n:] @ x + wh[n:] @ (f * h) + b[n:])
    return (1 - f) * h + f * cand


def _min_gru(cell: Any, x: Any, h: Any) -> Any:
    p, n = _params(cell), cell.hidden_size
    pre = p["weight_ih"] @ x + p["bias"]
    z, cand = sigmoid(pre[:n]), _g(pre[n:])
    return (1 - z) * h + z * cand


def _min_lstm(cell: Any, x: Any, h: Any) -> Any:
    p, n = _params(cell), cell.hidden_size
    pre = p["weight_ih"] @ x + p["bias"]
    f, i, cand = sigmoid(pre[:n]), sigmoid(pre[n : 2 * n]), _g(pre[2 * n :])
    return f / (f + i) * h + i / (f + i) * cand


def _lru(cell: Any, x: Any, h: Any) -> Any:
    p, m = _params(cell), cell.state_size
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    b = p["B_re"] + 1j * p["B_im"]
    c = p["C_re"] + 1j * p["C_im"]
    state = h[1][:m] + 1j * h[1][m:]
    state = lam * state + np.exp(p["gamma_log"]) * (b @ x)
    y = np.real(c @ state) + p["D"] @ x
    return y, np.concatenate([state.real, state.imag])


def _rg_lru(cell: Any, x: Any, h: Any) -> Any:
    p, n = _params(cell), cell.hidden_size
    pre = p["weight_ih"] @ x + p["bias"]
    r, i = sigmoid(pre[:n]), sigmoid(pre[n:])
    a = sigmoid(p["a_logit"]) ** (cell.c * r)
    return a * h + np.sqrt(1 - a**2) * (i * x)


def _layer_norm(v: Any, weight: Any, bias: Any, eps: float) -> Any:
    return (v - v.mean()) / np.sqrt(v.var() + eps) * weight + bias


def _layer_norm_lstm(cell: Any, x: Any, hidden: Any) -> Any:
    p, n, eps = _params(cell), cell.hidden_size, cell.eps
    h, c = hidden
    g = (
        _layer_norm(p["weight_ih"] @ x, p["norm_ih_weight"], 0, eps)
        + _layer_norm(p["weight_hh"] @ h, p["norm_hh_weight"], 0, eps)
        + p["bias"]
    )
    i, f, gg, o = (g[k * n : (k + 1) * n] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
    normed = _layer_norm(c, p["norm_c_weight"], p["norm_c_bias"], eps)
    return sigmoid(o) * np.tanh(normed), c


def _layer_norm_gru(cell: Any, x: Any, h: Any) -> Any:
    p, n = _params(cell), cell.hidden_size
    pre = p["weight_ih"] @ x + p["weight_hh"] @ h
    parts = _layer_norm(pre, p["norm_weight"], p["norm_bias"], cell.eps)
    reset, cand, update = parts[:n], parts[n : 2 * n], parts[2 * n :]
    update = sigmoid(update + cell.update_bias)
    return update * np.tanh(sigmoid(reset) * cand) + (1 - update) * h


def _log_sigmoid(x: Any) -> Any:
    return -np.logaddexp(0, -x)


def _slstm(cell: Any, x: Any, hidden: Any) -> Any:
    p, n, heads = _params(cell), cell.hidden_size, cell.num_heads
    size = n // heads
    h, c, norm, m = hidden
    # The block-diagonal recurrent matrix of each gate, written out.
    recurrent = np.zeros((4 * n, n))
    for k in range(heads):
        for g in range(4):
            rows = slice(g * n + k * size, g * n + (k + 1) * size)
            recurrent[rows, k * size : (k + 1) * size] = p["weight_hh"][
                k, g * size : (g + 1) * size
            ]
    pre = p["weight_ih"] @ x + recurrent @ h + p["bias"]
    i, f, z, o = (pre[k * n : (k + 1) * n] for k in range(4))
    m_new = np.where(norm == 0, i, np.maximum(_log_sigmoid(f) + m, i))
    i_gate, f_gate = np.exp(i - m_new), np.exp(_log_sigmoid(f) + m - m_new)
    c = f_gate * c + i_gate * np.tanh(z)
    norm = f_gate * norm + i_gate
    return sigmoid(o) * c / norm, c, norm, m_new


def _mlstm(cell: Any, x: Any, hidden: Any) -> Any:
    p, n, heads = _params(cell), cell.hidden_size, cell.num_heads
    size = n // heads
    _, memory, norm, m = hidden
    pre = p["weight_ih"] @ x + p["bias"]
    h = np.zeros(n)
    memory, norm, m = memory.copy(), norm.copy(), m.copy()
    for k in range(heads):
        unit = slice(k * size, (k + 1) * size)
        q, key, v, o = (pre[g * n :][unit] for g in range(4))
        key = key / np.sqrt(size)
        i_pre, f_pre = pre[4 * n + k], pre[4 * n + heads + k]
        m_new = max(_log_sigmoid(f_pre) + m[k], i_pre)
        i, f = np.exp(i_pre - m_new), np.exp(_log_sigmoid(f_pre) + m[k] - m_new)
        memory[k] = f * memory[k] + i * np.outer(v, key)
        norm[k] = f * norm[k] + i * key
        m[k] = m_new
        den = max(abs(norm[k] @ q), np.exp(-m_new)) + cell.eps
        h[unit] = sigmoid(o) * (memory[k] @ q) / den
    return h, memory, norm, m


def _conv_same_or_valid(x: Any, kernel: Any, padding: str) -> Any:
    """A direct NumPy convolution: `x` `(*spatial, in)`, `kernel` `(*window, in,
    out)`, stride 1; "same" pads as TensorFlow (the extra on the high side)."""
    window = kernel.shape[:-2]
    if padding == "same":
        pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in window]
        x = np.pad(x, [*pads, (0, 0)])
    out_spatial = tuple(n - k + 1 for n, k in zip(x.shape[:-1], window, strict=True))
    out = np.zeros((*out_spatial, kernel.shape[-1]))
    for offset in np.ndindex(*window):
        part = x[
            tuple(slice(o, o + n) for o, n in zip(offset, out_spatial, strict=True))
        ]
        out += part @ kernel[offset]
    return out


def _conv_lstm(cell: Any, x: Any, hidden: Any) -> Any:
    p, n = _params(cell), cell.hidden_size
    h, c = hidden
    g = _conv_same_or_valid(x, p["weight_ih"], cell.padding) + p["bias"]
    g = g + _conv_same_or_valid(h, p["weight_hh"], "same")
    i, f, gg, o = (g[..., k * n : (k + 1) * n] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
    return sigmoid(o) * np.tanh(c), c


def _indrnn(cell: Any, x: Any, h: Any) -> Any:
    p = _params(cell)
    return np.maximum(p["weight_ih"] @ x + p["weight_hh"] * h + p["bias"], 0)


@dataclasses.dataclass(frozen=True)
class CellCase:
    """One cell as the shared tests see it."""

    cls: type[eqrnn.AbstractCell]
    numpy_step: Callable[[Any, Any, Any], Any]
    """`(cell, x, hidden) -> hidden`, the cell's equations in NumPy (default
    nonlinearities)."""
    num_gates: int | None = None
    """Gate blocks stacked in `weight_ih` and `weight_hh` (PyTorch's layout)."""
    square: bool = False
    """Whether `input_size` must equal `hidden_size` (`RGLRU`)."""
    vector_input: bool = True
    """Whether one step's input is a vector `(input_size,)`, as the shared tests
    build it; `ConvLSTMCell` reads `(*spatial, channels)` and has its own tests."""
    options: tuple[tuple[str, Any], ...] = ()
    """Constructor options the tests use besides the sizes (small state sizes)."""
    fused: bool = False
    """Whether the cell, built with its default nonlinearities, has a fused step
    (`fused_step(hoisted)` is not `None`): the faster form of its step that the
    scan helpers run in its place. `tests/test_fused.py` checks this field both
    ways and compares each fused step with the generic one."""

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def parallel(self) -> bool:
        """Whether the cell also runs in parallel over time (the linear cells and
        `MLSTMCell`: every `mode` of the scan helpers)."""
        return eqrnn.Associative().supports(self.cls)

    @property
    def family(self) -> type:
        """How the cell runs a sequence: `eqrnn.AbstractStepCell` (one step after
        another), `eqrnn.AbstractLinearCell` (a linear recurrence), or for a cell of
        neither the class itself (`MLSTMCell`, with its chunkwise form)."""
        for base in (eqrnn.AbstractStepCell, eqrnn.AbstractLinearCell):
            if issubclass(self.cls, base):
                return base
        return self.cls

    @property
    def tuple_state(self) -> bool:
        """Whether the hidden state is a tuple of arrays (`LSTMCell`'s `(h, c)`),
        not one array: from `hidden_shapes()` of a small cell (built abstractly,
        without computing its parameters)."""
        cell = eqx.filter_eval_shape(lambda: self.make(2, 2, key=jr.key(0)))
        return len(cell.hidden_shapes()) > 1

    def make(self, input_size: int, hidden_size: int, **kwargs: Any) -> Any:
        """The cell at these sizes (`RGLRU`: `input_size` becomes `hidden_size`)."""
        if self.square:
            input_size = hidden_size
        return self.cls(input_size, hidden_size, **dict(self.options), **kwargs)


CASES = (
    CellCase(eqrnn.SimpleCell, _simple, num_gates=1, fused=True),
    CellCase(eqrnn.GRUCell, _gru, num_gates=3, fused=True),
    CellCase(eqrnn.LSTMCell, _lstm, num_gates=4, fused=True),
    CellCase(eqrnn.MGUCell, _mgu, num_gates=2, fused=True),
    CellCase(eqrnn.IndRNNCell, _indrnn),
    CellCase(eqrnn.LayerNormLSTMCell, _layer_norm_lstm, num_gates=4),
    CellCase(eqrnn.LayerNormGRUCell, _layer_norm_gru, num_gates=3),
    CellCase(eqrnn.SLSTMCell, _slstm),
    CellCase(eqrnn.ConvLSTMCell, _conv_lstm, vector_input=False),
    CellCase(eqrnn.MinGRU, _min_gru),
    CellCase(eqrnn.MinLSTM, _min_lstm),
    CellCase(eqrnn.LRU, _lru, options=(("state_size", 3),)),
    CellCase(eqrnn.RGLRU, _rg_lru, square=True),
    CellCase(eqrnn.MLSTMCell, _mlstm, options=(("num_heads", 2),)),
)
BY_CLASS = {case.cls: case for case in CASES}
_VECTOR = [case for case in CASES if case.vector_input]
STEP_CELLS = [case.cls for case in _VECTOR if not case.parallel]
PARALLEL_CELLS = [case.cls for case in _VECTOR if case.parallel]
REGISTERED = [case.cls for case in CASES]
ALL_CELLS = [case.cls for case in _VECTOR]


def representatives(cells: list[Any], *, by: Callable[[CellCase], Any]) -> list[Any]:
    """The first of `cells` (in the registry's order) for each value of `by(case)`:
    one cell per family, say, for a slow test that need not run every cell, and
    that picks up a cell of a new family by itself."""
    chosen: dict[Any, Any] = {}
    for cls in cells:
        chosen.setdefault(by(BY_CLASS[cls]), cls)
    return list(chosen.values())


# Cells with an analytic Jacobian per unit, for `Newton("blocks")` and
# `Newton("diagonal")` (the other step cells run Newton with the full Jacobian).
NEWTON_UNIT_CELLS = [
    cls for cls in ALL_CELLS if issubclass(cls, eqrnn.AbstractNewtonCell)
]
# Cells with a fused step (`CellCase.fused`).
FUSED_CELLS = [case.cls for case in _VECTOR if case.fused]
# One cell per family (`CellCase.family`).
FAMILY_REPRESENTATIVES = representatives(ALL_CELLS, by=lambda case: case.family)
# One cell per family and kind of hidden state (one array or a tuple).
STATE_REPRESENTATIVES = representatives(
    ALL_CELLS, by=lambda case: (case.family, case.tuple_state)
)
