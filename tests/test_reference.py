"""eqrnn against PyTorch and Flax NNX, with the same weights.

- Cells: one step of each eqrnn cell equals `torch.nn.RNNCell` (tanh and relu),
  `torch.nn.GRUCell`, `torch.nn.LSTMCell` and Flax NNX's `SimpleCell` (plain and
  `residual=True`), `GRUCell`, `LSTMCell` and `OptimizedLSTMCell`: outputs and the
  gradients of a scalar loss w.r.t. the input, the hidden state and every weight.
- Sequences: `scan_all_hidden`/`scan_last` with `length` (and `reverse=True`) equal
  single-layer bidirectional `torch.nn.RNN`/`GRU`/`LSTM` run on a packed batch of
  mixed lengths, and `flax.nnx.RNN` with `seq_lengths`.

Weights are drawn at random, biases included, so that a wrongly mapped bias shows.
"""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import torch
from flax import nnx
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import eqrnn

from .helpers import assert_tree_allclose, flax_cell, tolerance


# Each test runs under the CPU's and the GPU's choices (`eqrnn.tuned_for`).
pytestmark = pytest.mark.usefixtures("each_platform")


INPUT = 3
HIDDEN = 5
PROJ = 2  # PyTorch's LSTM `proj_size`
LENGTHS = np.array([5, 2, 4, 1])  # a batch of mixed lengths; padded to 5 steps
TIME = int(LENGTHS.max())
DTYPES = [jnp.float64, jnp.float32]
TORCH_DTYPE = {
    jnp.dtype(jnp.float64): torch.float64,
    jnp.dtype(jnp.float32): torch.float32,
}


def _rng(getkey: Callable[[], Any]) -> np.random.Generator:
    """A NumPy generator seeded from the test's key (whose seed `getkey` prints)."""
    return np.random.default_rng(int(jr.randint(getkey(), (), 0, 2**31 - 1)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _grad(t: torch.Tensor) -> np.ndarray:
    assert t.grad is not None
    return _np(t.grad)


def _tensor(a: np.ndarray, dtype: torch.dtype, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=dtype, requires_grad=grad)


def _assert_finite(tree: Any) -> None:
    """`assert_tree_allclose` counts NaN equal to NaN: make sure there is none."""
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf)))


def _dot(tree: Any, cotangent: Any) -> Any:
    """sum(tree * cotangent) over matching leaves: a scalar loss to differentiate."""
    pairs = zip(jax.tree.leaves(tree), jax.tree.leaves(cotangent), strict=True)
    return sum(jnp.sum(a * b) for a, b in pairs)


def _torch_params(module: torch.nn.Module, suffix: str = "") -> list[torch.Tensor]:
    """`[weight_ih, weight_hh, bias_ih, bias_hh(, weight_hr)]`, each name + `suffix`
    (e.g. "_l0_reverse"); `weight_hr` only for an LSTM with `proj_size`."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    if hasattr(module, "weight_hr" + suffix):
        names = (*names, "weight_hr")
    params = [getattr(module, name + suffix) for name in names]
    assert all(isinstance(p, torch.Tensor) for p in params)
    return params


def _randomize_torch(module: torch.nn.Module, rng: np.random.Generator) -> None:
    """Every parameter, biases included, drawn from N(0, 0.5^2)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.normal(0.0, 0.5, tuple(p.shape))))


# --- PyTorch <-> eqrnn -------------------------------------------------------------


def _eqrnn_from_torch(
    kind: str,
    weights: Sequence[np.ndarray],
    dtype: Any,
    key: Any,
) -> eqrnn.AbstractCell:
    """An eqrnn cell holding PyTorch's `(weight_ih, weight_hh, bias_ih, bias_hh)`
    (and `weight_hr` for "lstm_proj").

    `kind` is one of "rnn_tanh", "rnn_relu", "gru", "lstm", "lstm_proj".
    """
    w_ih, w_hh, b_ih, b_hh, *w_hr = (jnp.asarray(w, dtype) for w in weights)
    hs = w_ih.shape[0] // {"gru": 3, "lstm": 4, "lstm_proj": 4}.get(kind, 1)
    if kind == "lstm_proj":
        cell = eqrnn.LSTMCell(INPUT, hs, proj_size=PROJ, dtype=dtype, key=key)
        return eqx.tree_at(
            lambda c: (c.weight_ih, c.weight_hh, c.bias, c.weight_hr),
            cell,
            (w_ih, w_hh, b_ih + b_hh, w_hr[0]),
        )
    if kind == "gru":
        cell = eqrnn.GRUCell(INPUT, hs, dtype=dtype, key=key)
        # b_hn sits inside the reset gate, so only b_r and b_z fold into `bias`.
        bias = jnp.concatenate([b_ih[: 2 * hs] + b_hh[: 2 * hs], b_ih[2 * hs :]])
        return eqx.tree_at(
            lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_hn),
            cell,
            (w_ih, w_hh, bias, b_hh[2 * hs :]),
        )
    if kind == "lstm":
        cell = eqrnn.LSTMCell(INPUT, hs, dtype=dtype, key=key)
    else:
        act = {"rnn_tanh": jnp.tanh, "rnn_relu": jax.nn.relu}[kind]
        cell = eqrnn.SimpleCell(INPUT, hs, activation_fn=act, dtype=dtype, key=key)
    return eqx.tree_at(
        lambda c: (c.weight_ih, c.weight_hh, c.bias), cell, (w_ih, w_hh, b_ih + b_hh)
    )


def _torch_grads_in_eqrnn_layout(
    kind: str, tensors: Sequence[torch.Tensor]
) -> dict[str, np.ndarray]:
    """PyTorch's gradients w.r.t. `(weight_ih, weight_hh, bias_ih, bias_hh)`, as the
    gradients w.r.t. the eqrnn parameters they map to.

    eqrnn's `bias` is `bias_ih (+ bias_hh)`, so its gradient is `bias_ih`'s; PyTorch's
    `bias_hh` gradient agrees with it wherever the two are summed.
    """
    g_ih, g_hh, g_bih, g_bhh, *g_hr = (_grad(t) for t in tensors)
    out = {"weight_ih": g_ih, "weight_hh": g_hh, "bias": g_bih}
    if kind == "lstm_proj":
        out["weight_hr"] = g_hr[0]
    if kind == "gru":
        np.testing.assert_allclose(
            g_bhh[: 2 * HIDDEN], g_bih[: 2 * HIDDEN], rtol=1e-5, atol=1e-12
        )
        out["bias_hn"] = g_bhh[2 * HIDDEN :]
    else:
        np.testing.assert_allclose(g_bhh, g_bih, rtol=1e-5, atol=1e-12)
    return out


def _eqrnn_param_grads(kind: str, grads: Any) -> dict[str, Any]:
    out = {
        "weight_ih": grads.weight_ih,
        "weight_hh": grads.weight_hh,
        "bias": grads.bias,
    }
    if kind == "gru":
        out["bias_hn"] = grads.bias_hn
    if kind == "lstm_proj":
        out["weight_hr"] = grads.weight_hr
    return out


@eqx.filter_jit
def _cell_value_and_grad(cell: Any, x: Any, hidden: Any, cotangent: Any) -> Any:
    """`((loss, new_hidden), (d cell, d x, d hidden))` for loss = sum(new * cot)."""

    def loss(cell: Any, x: Any, hidden: Any) -> Any:
        new = cell(x, hidden)
        return _dot(new, cotangent), new

    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(cell, x, hidden)


def _torch_cell(kind: str, dtype: torch.dtype) -> torch.nn.Module:
    if kind == "gru":
        return torch.nn.GRUCell(INPUT, HIDDEN, dtype=dtype)
    if kind == "lstm":
        return torch.nn.LSTMCell(INPUT, HIDDEN, dtype=dtype)
    return torch.nn.RNNCell(INPUT, HIDDEN, nonlinearity=kind[4:], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
def test_cell_step_and_gradients_match_torch_cell(kind, dtype, getkey):
    rng = _rng(getkey)
    tdtype = TORCH_DTYPE[jnp.dtype(dtype)]
    tcell = _torch_cell(kind, tdtype)
    _randomize_torch(tcell, rng)
    tparams = _torch_params(tcell)
    cell = _eqrnn_from_torch(kind, [_np(t) for t in tparams], dtype, getkey())

    num_states = 2 if kind == "lstm" else 1
    x = rng.normal(size=INPUT)
    states = [rng.normal(size=HIDDEN) for _ in range(num_states)]
    cots = [rng.normal(size=HIDDEN) for _ in range(num_states)]

    # PyTorch.
    tx = _tensor(x, tdtype, grad=True)
    tstates = [_tensor(s, tdtype, grad=True) for s in states]
    if kind == "lstm":
        tout = tcell(tx, (tstates[0], tstates[1]))
    else:
        tout = (tcell(tx, tstates[0]),)
    tloss = sum((o * _tensor(c, tdtype)).sum() for o, c in zip(tout, cots, strict=True))
    assert isinstance(tloss, torch.Tensor)
    tloss.backward()

    # eqrnn.
    def as_hidden(arrays: list[np.ndarray]) -> Any:
        arrays_ = [jnp.asarray(a, dtype) for a in arrays]
        return tuple(arrays_) if kind == "lstm" else arrays_[0]

    (_, out), (g_cell, g_x, g_hidden) = _cell_value_and_grad(
        cell, jnp.asarray(x, dtype), as_hidden(states), as_hidden(cots)
    )

    expected_out = tuple(_np(o) for o in tout)
    expected = {
        "out": expected_out if kind == "lstm" else expected_out[0],
        "d_input": _grad(tx),
        "d_hidden": as_hidden([_grad(t) for t in tstates]),
        "d_params": _torch_grads_in_eqrnn_layout(kind, tparams),
    }
    actual = {
        "out": out,
        "d_input": g_x,
        "d_hidden": g_hidden,
        "d_params": _eqrnn_param_grads(kind, g_cell),
    }
    assert jax.tree.leaves(out)[0].dtype == jnp.dtype(dtype)
    tol = tolerance(dtype)
    assert_tree_allclose(actual, expected, rtol=tol, atol=tol)


# --- Flax NNX <-> eqrnn ------------------------------------------------------------

_LSTM_GATES = ("i", "f", "g", "o")
_FLAX_LSTM_INPUT = {"i": "ii", "f": "if_", "g": "ig", "o": "io"}
_FLAX_LSTM_HIDDEN = {"i": "hi", "f": "hf", "g": "hg", "o": "ho"}


def _flax_cell(kind: str, dtype: Any, seed: int) -> nnx.RNNCellBase:
    return flax_cell(kind, INPUT, HIDDEN, dtype, seed)


def _flax_to_eqrnn_layout(kind: str, state: Any) -> dict[str, Any]:
    """Flax parameters as eqrnn's `weight_ih`, `weight_hh`, `bias`.

    A pure re-arrangement (transpose, concatenate), so it maps gradients too.
    """
    p = nnx.to_pure_dict(state)
    if kind == "lstm":
        # Separate per-gate layers, kernels (in, out); the bias is in the h-side ones.
        def stack(names: dict[str, str]) -> Any:
            return jnp.concatenate([p[names[g]]["kernel"] for g in _LSTM_GATES], 1).T

        return {
            "weight_ih": stack(_FLAX_LSTM_INPUT),
            "weight_hh": stack(_FLAX_LSTM_HIDDEN),
            "bias": jnp.concatenate(
                [p[_FLAX_LSTM_HIDDEN[g]]["bias"] for g in _LSTM_GATES]
            ),
        }
    # SimpleCell and GRUCell keep their bias in `dense_i`, OptimizedLSTMCell in
    # `dense_h`; gates are stacked on the output axis in eqrnn's order.
    biased = "dense_h" if kind == "optimized_lstm" else "dense_i"
    return {
        "weight_ih": p["dense_i"]["kernel"].T,
        "weight_hh": p["dense_h"]["kernel"].T,
        "bias": p[biased]["bias"],
    }


def _eqrnn_from_flax(kind: str, fcell: nnx.RNNCellBase, dtype: Any, key: Any) -> Any:
    params = _flax_to_eqrnn_layout(kind, nnx.state(fcell, nnx.Param))
    if kind in ("simple", "simple_residual"):
        cell = eqrnn.SimpleCell(
            INPUT, HIDDEN, residual=kind == "simple_residual", dtype=dtype, key=key
        )
    elif kind == "gru":
        cell = eqrnn.GRUCell(INPUT, HIDDEN, dtype=dtype, key=key)
        # Flax's GRU has no b_hn.
        cell = eqx.tree_at(lambda c: c.bias_hn, cell, jnp.zeros(HIDDEN, dtype))
    else:
        cell = eqrnn.LSTMCell(INPUT, HIDDEN, dtype=dtype, key=key)
    return eqx.tree_at(
        lambda c: (c.weight_ih, c.weight_hh, c.bias),
        cell,
        (params["weight_ih"], params["weight_hh"], params["bias"]),
    )


def _to_flax_carry(kind: str, hidden: Any) -> Any:
    """eqrnn's LSTM state is `(h, c)`, Flax's carry `(c, h)`."""
    return hidden[::-1] if "lstm" in kind else hidden


FLAX_KINDS = ["simple", "simple_residual", "gru", "lstm", "optimized_lstm"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", FLAX_KINDS)
def test_cell_step_and_gradients_match_flax_nnx_cell(kind, dtype, getkey):
    rng = _rng(getkey)
    fcell = _flax_cell(kind, dtype, int(rng.integers(2**31)))
    cell = _eqrnn_from_flax(kind, fcell, dtype, getkey())

    num_states = 2 if "lstm" in kind else 1

    def draw() -> Any:
        arrays = tuple(jnp.asarray(rng.normal(size=HIDDEN), dtype) for _ in range(2))
        return arrays if num_states == 2 else arrays[0]

    x = jnp.asarray(rng.normal(size=INPUT), dtype)
    hidden, cot = draw(), draw()  # eqrnn order

    graphdef, fparams = nnx.split(fcell)

    @jax.jit
    def flax_value_and_grad(fparams: Any, x: Any, carry: Any) -> Any:
        def loss(fparams: Any, x: Any, carry: Any) -> Any:
            new_carry, _ = nnx.merge(graphdef, fparams)(carry, x)
            return _dot(new_carry, _to_flax_carry(kind, cot)), new_carry

        return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
            fparams, x, carry
        )

    (_, f_out), (f_gparams, f_gx, f_gcarry) = flax_value_and_grad(
        fparams, x, _to_flax_carry(kind, hidden)
    )
    (_, out), (g_cell, g_x, g_hidden) = _cell_value_and_grad(cell, x, hidden, cot)

    expected = {
        "out": _to_flax_carry(kind, f_out),
        "d_input": f_gx,
        "d_hidden": _to_flax_carry(kind, f_gcarry),
        "d_params": _flax_to_eqrnn_layout(kind, f_gparams),
    }
    actual = {
        "out": out,
        "d_input": g_x,
        "d_hidden": g_hidden,
        "d_params": {
            "weight_ih": g_cell.weight_ih,
            "weight_hh": g_cell.weight_hh,
            "bias": g_cell.bias,
        },
    }
    assert jax.tree.leaves(out)[0].dtype == jnp.dtype(dtype)
    tol = tolerance(dtype)
    assert_tree_allclose(actual, expected, rtol=tol, atol=tol)


# --- Sequences ---------------------------------------------------------------------


def _h(hiddens: Any) -> Any:
    """What a layer above sees: `h` of an LSTM's `(h, c)`, else the state itself."""
    return hiddens[0] if isinstance(hiddens, tuple) else hiddens


def _padded_inputs(rng: np.random.Generator) -> np.ndarray:
    """A batch `(batch, time, input)` of `LENGTHS` steps each, padded with NaN: the
    references never read padding, and eqrnn must not let it reach anything."""
    xs = rng.normal(size=(len(LENGTHS), TIME, INPUT))
    xs[np.arange(TIME)[None, :] >= LENGTHS[:, None]] = np.nan
    return xs


@eqx.filter_jit
def _scan_batch(cell: Any, xs: Any, lengths: Any, hidden: Any, *, reverse: bool) -> Any:
    """`(scan_all_hidden, scan_last)` over a batch, as a user would write it."""

    def one(x: Any, n: Any, h: Any) -> Any:
        return (
            eqrnn.scan_all_hidden(cell, x, h, length=n, reverse=reverse),
            eqrnn.scan_last(cell, x, h, length=n, reverse=reverse),
        )

    return jax.vmap(one)(xs, lengths, hidden)


@eqx.filter_jit
def _bidirectional_value_and_grad(
    cells: Any, xs: Any, lengths: Any, hidden: Any, cots: Any
) -> Any:
    """Both directions of a bidirectional layer over a batch, and the gradient of
    `sum(h of every step * cot) + sum(final state * cot)` w.r.t. cells, xs, hidden."""

    def loss(cells: Any, xs: Any, hidden: Any) -> Any:
        fwd, bwd = cells
        h_fwd, h_bwd = hidden
        all_f, last_f = jax.vmap(
            lambda x, n, h: (
                eqrnn.scan_all_hidden(fwd, x, h, length=n),
                eqrnn.scan_last(fwd, x, h, length=n),
            )
        )(xs, lengths, h_fwd)
        all_b, last_b = jax.vmap(
            lambda x, n, h: (
                eqrnn.scan_all_hidden(bwd, x, h, length=n, reverse=True),
                eqrnn.scan_last(bwd, x, h, length=n, reverse=True),
            )
        )(xs, lengths, h_bwd)
        outs = (all_f, last_f, all_b, last_b)
        value = _dot((_h(all_f), last_f, _h(all_b), last_b), cots)
        return value, outs

    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(cells, xs, hidden)


def _torch_rnn(kind: str) -> torch.nn.RNNBase:
    kwargs: dict[str, Any] = {
        "batch_first": True,
        "bidirectional": True,
        "dtype": torch.float64,
    }
    if kind == "lstm_proj":
        return torch.nn.LSTM(INPUT, HIDDEN, proj_size=PROJ, **kwargs)
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    return cls(INPUT, HIDDEN, **kwargs)


# The default starting state (`hidden=None`) is the same code for every cell: it is
# checked for two kinds only, to keep the number of compilations down.
@pytest.mark.parametrize(
    ("kind", "with_initial_state"),
    [
        ("rnn", True),
        ("gru", True),
        ("gru", False),
        ("lstm", True),
        ("lstm", False),
        ("lstm_proj", True),
    ],
)
def test_scan_with_length_matches_torch_packed_bidirectional_rnn(
    kind, with_initial_state, getkey
):
    """Forward: `scan_all_hidden`/`scan_last` with `length`; backward half:
    the same with `reverse=True` and the `_reverse` weights. Outputs at every step
    (zero at padding, as `pad_packed_sequence`), final states, and gradients w.r.t.
    inputs, initial states and both directions' weights. "lstm_proj" is an LSTM
    with `proj_size` (PyTorch's `weight_hr`)."""
    rng = _rng(getkey)
    cell_kind = "rnn_tanh" if kind == "rnn" else kind
    is_lstm = kind.startswith("lstm")
    out_size = PROJ if kind == "lstm_proj" else HIDDEN  # h's size; c has HIDDEN
    tmod = _torch_rnn(kind)
    _randomize_torch(tmod, rng)
    tparams = [_torch_params(tmod, sfx) for sfx in ("_l0", "_l0_reverse")]
    cells = tuple(
        _eqrnn_from_torch(cell_kind, [_np(t) for t in p], jnp.float64, getkey())
        for p in tparams
    )

    batch = len(LENGTHS)
    xs = _padded_inputs(rng)
    state_sizes = [out_size, HIDDEN] if is_lstm else [HIDDEN]
    init = [rng.normal(size=(2, batch, n)) for n in state_sizes]
    cot_out = rng.normal(size=(batch, TIME, 2 * out_size))
    cot_last = [rng.normal(size=(2, batch, n)) for n in state_sizes]

    # PyTorch, on the packed batch.
    f64 = torch.float64
    txs = _tensor(xs, f64, grad=True)
    tinit = [_tensor(s, f64, grad=True) for s in init]
    packed = pack_padded_sequence(
        txs, torch.from_numpy(LENGTHS), batch_first=True, enforce_sorted=False
    )
    if not with_initial_state:
        tpacked_out, tlast = tmod(packed)
    elif is_lstm:
        tpacked_out, tlast = tmod(packed, (tinit[0], tinit[1]))
    else:
        tpacked_out, tlast = tmod(packed, tinit[0])
    tout, tlengths = pad_packed_sequence(tpacked_out, batch_first=True)
    np.testing.assert_array_equal(_np(tlengths), LENGTHS)
    tlast = tlast if isinstance(tlast, tuple) else (tlast,)
    tloss = (tout * _tensor(cot_out, f64)).sum() + sum(
        (t * _tensor(c, f64)).sum() for t, c in zip(tlast, cot_last, strict=True)
    )
    tloss.backward()

    # eqrnn.
    def per_direction(arrays: list[np.ndarray], d: int) -> Any:
        out = tuple(jnp.asarray(a[d]) for a in arrays)
        return out if is_lstm else out[0]

    hidden = (
        (per_direction(init, 0), per_direction(init, 1))
        if with_initial_state
        else (None, None)
    )
    cots = (
        jnp.asarray(cot_out[..., :out_size]),
        per_direction(cot_last, 0),
        jnp.asarray(cot_out[..., out_size:]),
        per_direction(cot_last, 1),
    )
    (_, outs), (g_cells, g_xs, g_hidden) = _bidirectional_value_and_grad(
        cells, jnp.asarray(xs), jnp.asarray(LENGTHS), hidden, cots
    )
    all_f, last_f, all_b, last_b = outs

    padding = np.arange(TIME)[None, :] >= LENGTHS[:, None]
    for all_states in (all_f, all_b):
        for states in jax.tree.leaves(all_states):  # c of an LSTM too
            assert np.all(np.asarray(states)[padding] == 0)

    actual: dict[str, Any] = {
        "out": jnp.concatenate([_h(all_f), _h(all_b)], axis=-1),
        "last": (last_f, last_b),
        "d_inputs": g_xs,
        "d_params": [_eqrnn_param_grads(kind, g) for g in g_cells],
    }
    expected: dict[str, Any] = {
        "out": _np(tout),
        "last": tuple(per_direction([_np(t) for t in tlast], d) for d in range(2)),
        "d_inputs": _grad(txs),
        "d_params": [_torch_grads_in_eqrnn_layout(cell_kind, p) for p in tparams],
    }
    if with_initial_state:
        actual["d_hidden"] = g_hidden
        expected["d_hidden"] = tuple(
            per_direction([_grad(t) for t in tinit], d) for d in range(2)
        )
    _assert_finite(actual)
    assert_tree_allclose(actual, expected, rtol=1e-10, atol=1e-10)


# Flax's `nnx.RNN` with `seq_lengths` differs from eqrnn in two ways (flax 0.12,
# flax/nnx/nn/recurrent.py), so only what holds in both is compared:
# - it runs the cell over the padding too (after the valid steps, also with
#   `reverse=True`, where `flip_sequences` keeps the padding at the end), so its
#   outputs at padded steps are whatever the cell computes there (NaN here), where
#   eqrnn's are zero: outputs are compared at valid steps only;
# - its final carry is `carries[seq_lengths - 1]`, which for a length of 0 wraps
#   around to the carry after *every* padded step, where eqrnn's `scan_last` returns
#   the initial state: every length here is at least 1.
@pytest.mark.parametrize("kind", ["simple", "gru", "lstm"])
def test_scan_with_length_matches_flax_nnx_rnn_with_seq_lengths(kind, getkey):
    rng = _rng(getkey)
    fcell = _flax_cell(kind, jnp.float64, int(rng.integers(2**31)))
    cell = _eqrnn_from_flax(kind, fcell, jnp.float64, getkey())
    xs = jnp.asarray(_padded_inputs(rng))
    lengths = jnp.asarray(LENGTHS)
    states = [jnp.asarray(rng.normal(size=(len(LENGTHS), HIDDEN))) for _ in range(2)]
    hidden = tuple(states) if kind == "lstm" else states[0]
    valid = (np.arange(TIME)[None, :] < LENGTHS[:, None])[..., None]

    for reverse in (False, True):
        rnn = nnx.RNN(fcell, return_carry=True, reverse=reverse, keep_order=True)
        f_carry, f_out = rnn(
            xs, initial_carry=_to_flax_carry(kind, hidden), seq_lengths=lengths
        )
        all_states, last = _scan_batch(cell, xs, lengths, hidden, reverse=reverse)
        _assert_finite((all_states, last))
        assert_tree_allclose(
            (_h(all_states), last),
            (np.where(valid, f_out, 0.0), _to_flax_carry(kind, f_carry)),
            rtol=1e-10,
            atol=1e-10,
        )
