"""Randomised differential test: eqrnn against PyTorch on packed sequences.

Hypothesis draws a whole PyTorch recurrent module (`nn.RNN` with tanh or relu,
`nn.GRU`, `nn.LSTM` with or without `proj_size`; 1-8 inputs and hidden units, 1-3
layers, one or two directions, with or without biases, `batch_first` or not, dropout
in eval mode or none, float64 or now and then float32), random weights, and a batch of
1-4 sequences of lengths 1-12 padded to a common length, optionally with NaN in the
padding and a starting state. PyTorch runs it on the packed batch
(`pack_padded_sequence(..., enforce_sorted=False)`); `eqrnn.interop.from_torch`
converts it, optionally with other `unroll`/`checkpoint` settings, and the
`StackedRNN` runs under `jax.vmap` with `length`. The two must agree on every step's
outputs (zero at padding in both), on `h_n` (and `c_n`) and, on about half the draws,
on the gradients of a random linear function of all of these w.r.t. the inputs, the
starting state and every weight. eqrnn alone also runs one extra sequence of length
0 (PyTorch refuses those): zero outputs, the starting state as final state, zero
gradient for its inputs.

How many examples run is set by the Hypothesis profile, registered in `conftest.py`:

- `ci`, the default (what a plain `python -m pytest` runs): the 5 examples below and
  8 generated ones, derandomised so every run draws the same ones (they change when
  this file does); about 30 s of CPU, nearly all of it JAX compiling.
- `nightly`: the 5 examples and 400 fresh random ones a run (about 6 minutes of CPU,
  9 on a busy two-core machine). Run only the differential tests with it::

      python -m pytest -m differential --hypothesis-profile=nightly \\
          --hypothesis-show-statistics

A failure prints the minimal draw and a `@reproduce_failure` line that replays it.
"""

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import eqrnn
from eqrnn.interop import from_torch

from .helpers import tolerance


# Each test runs under the CPU's and the GPU's choices (`eqrnn.tuned_for`).
pytestmark = [pytest.mark.differential, pytest.mark.usefixtures("each_platform")]

KINDS = ("rnn_tanh", "rnn_relu", "gru", "lstm", "lstm_proj")
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}
# `(unroll, checkpoint, mode)` of every `RNN` in the stack; the first is
# from_torch's own. Newton's method runs with each linearisation.
SCAN_OPTIONS = (
    ("auto", False, "auto"),
    (1, False, "auto"),
    (2, False, "auto"),
    (1, True, "auto"),
    (True, 3, "auto"),
    ("auto", False, "newton"),
    ("auto", False, eqrnn.Newton("diagonal")),
    ("auto", 3, eqrnn.Newton("blocks")),
)


@dataclasses.dataclass(frozen=True)
class Draw:
    """One example: a PyTorch module, a batch, and what to compare."""

    kind: str  # one of KINDS
    input_size: int
    hidden_size: int
    proj_size: int  # 0 unless kind == "lstm_proj"
    num_layers: int
    bidirectional: bool
    bias: bool
    batch_first: bool
    dropout: float  # > 0 only in eval mode
    training: bool
    dtype: str
    time: int  # padded length
    lengths: tuple[int, ...]  # one per sequence, each in [1, time]
    initial_state: bool
    nan_padding: bool
    empty_sequence: bool  # eqrnn also runs a sequence of length 0
    grads: bool
    scan_options: tuple[int | bool | str, bool | int, Any]
    scale: float  # weights ~ N(0, scale^2)
    seed: int

    @property
    def lstm(self) -> bool:
        return self.kind.startswith("lstm")

    @property
    def num_dirs(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:
        """The size of `h` (and of each direction's outputs)."""
        return self.proj_size or self.hidden_size


@st.composite
def draws(draw: st.DrawFn) -> Draw:
    kind = draw(st.sampled_from(KINDS))
    hidden_size = draw(st.integers(2 if kind == "lstm_proj" else 1, 8))
    num_layers = draw(st.integers(1, 3))
    # PyTorch warns (an error here) about dropout with one layer; dropout only
    # compares in eval mode, where it is off.
    dropout = draw(st.sampled_from((0.0, 0.5))) if num_layers > 1 else 0.0
    time = draw(st.integers(1, 12))
    batch = draw(st.integers(1, 4))
    return Draw(
        kind=kind,
        input_size=draw(st.integers(1, 8)),
        hidden_size=hidden_size,
        proj_size=draw(st.integers(1, hidden_size - 1)) if kind == "lstm_proj" else 0,
        num_layers=num_layers,
        bidirectional=draw(st.booleans()),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        dropout=dropout,
        training=draw(st.booleans()) if dropout == 0 else False,
        dtype=draw(st.sampled_from(("float64", "float64", "float64", "float32"))),
        time=time,
        lengths=tuple(
            draw(st.lists(st.integers(1, time), min_size=batch, max_size=batch))
        ),
        initial_state=draw(st.booleans()),
        nan_padding=draw(st.booleans()),
        empty_sequence=draw(st.booleans()),
        grads=draw(st.booleans()),
        scan_options=draw(st.sampled_from(SCAN_OPTIONS)),
        scale=draw(st.sampled_from((0.5, 0.2, 1.0))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


# Every kind of cell but tanh's (drawn most often) with every option on, run first on
# every profile: in CI, the generated examples are few, and many of them small.
_RICH = Draw(
    kind="lstm",
    input_size=3,
    hidden_size=5,
    proj_size=0,
    num_layers=2,
    bidirectional=True,
    bias=True,
    batch_first=True,
    dropout=0.5,
    training=False,
    dtype="float64",
    time=7,
    lengths=(7, 3, 1, 5),
    initial_state=True,
    nan_padding=True,
    empty_sequence=True,
    grads=True,
    scan_options=SCAN_OPTIONS[0],
    scale=0.5,
    seed=0,
)
EXAMPLES = (
    _RICH,
    dataclasses.replace(
        _RICH,
        kind="lstm_proj",
        proj_size=2,
        dtype="float32",
        scan_options=(1, True, "auto"),
    ),
    dataclasses.replace(
        _RICH,
        kind="gru",
        num_layers=3,
        bidirectional=False,
        dropout=0.0,
        training=True,
        batch_first=False,
        scan_options=(True, 3, "auto"),
    ),
    dataclasses.replace(
        _RICH, kind="rnn_relu", bias=False, scale=1.0, scan_options=(2, False, "auto")
    ),
    # Newton's method (per-unit blocks: LSTM's 2x2) on the rich draw, float64.
    dataclasses.replace(_RICH, scan_options=SCAN_OPTIONS[-1]),
)


# --- PyTorch -----------------------------------------------------------------------


def _torch_module(d: Draw, rng: np.random.Generator) -> torch.nn.RNNBase:
    kwargs: dict[str, Any] = {
        "num_layers": d.num_layers,
        "bias": d.bias,
        "batch_first": d.batch_first,
        "dropout": d.dropout,
        "bidirectional": d.bidirectional,
        "dtype": TORCH_DTYPES[d.dtype],
    }
    sizes = (d.input_size, d.hidden_size)
    if d.kind.startswith("rnn"):
        module = torch.nn.RNN(*sizes, nonlinearity=d.kind[4:], **kwargs)
    elif d.kind == "gru":
        module = torch.nn.GRU(*sizes, **kwargs)
    else:
        module = torch.nn.LSTM(*sizes, proj_size=d.proj_size, **kwargs)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.normal(0.0, d.scale, tuple(p.shape))))
    return module.train(d.training)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _grad(t: torch.Tensor) -> np.ndarray:
    assert t.grad is not None
    return _np(t.grad)


def _run_torch(
    d: Draw,
    module: torch.nn.RNNBase,
    xs: np.ndarray,
    start: tuple[np.ndarray, ...],
    cot_out: np.ndarray,
    cot_finals: tuple[np.ndarray, ...],
) -> dict[str, Any]:
    """Outputs `(batch, time, num_dirs * out_size)`, finals `(h_n,)` or `(h_n, c_n)`
    and, if `d.grads`, the gradients of `sum(outputs * cot_out) + sum(finals *
    cot_finals)` w.r.t. the inputs, the starting state and every parameter (by
    PyTorch's name)."""
    x = torch.tensor(xs, requires_grad=d.grads)
    hx = [torch.tensor(s, requires_grad=d.grads) for s in start]
    with torch.set_grad_enabled(d.grads):
        packed = pack_padded_sequence(
            x if d.batch_first else x.transpose(0, 1),
            torch.tensor(d.lengths),
            batch_first=d.batch_first,
            enforce_sorted=False,
        )
        if not d.initial_state:
            packed_out, finals = module(packed)
        elif d.lstm:
            packed_out, finals = module(packed, (hx[0], hx[1]))
        else:
            packed_out, finals = module(packed, hx[0])
        out, out_lengths = pad_packed_sequence(
            packed_out, batch_first=d.batch_first, total_length=d.time
        )
        out = out if d.batch_first else out.transpose(0, 1)
        finals = finals if isinstance(finals, tuple) else (finals,)
        np.testing.assert_array_equal(_np(out_lengths), d.lengths)
        result: dict[str, Any] = {
            "outputs": _np(out),
            "finals": tuple(_np(f) for f in finals),
        }
        if d.grads:
            loss = (out * torch.from_numpy(cot_out)).sum()
            for f, c in zip(finals, cot_finals, strict=True):
                loss = loss + (f * torch.from_numpy(c)).sum()
            loss.backward()
            result["d_inputs"] = _grad(x)
            if d.initial_state:
                result["d_start"] = tuple(_grad(h) for h in hx)
            result["d_params"] = {n: _grad(p) for n, p in module.named_parameters()}
    return result


# --- eqrnn -------------------------------------------------------------------------


def _per_layer(d: Draw, states: tuple[Any, ...]) -> tuple[Any, ...]:
    """PyTorch's `(h,)`/`(h, c)`, each `(num_layers * num_dirs, batch, size)`, as
    the per-layer states of a `StackedRNN` (batched on axis 0, as under vmap)."""

    def state(i: int) -> Any:
        return (states[0][i], states[1][i]) if d.lstm else states[0][i]

    layers = []
    for k in range(d.num_layers):
        dirs = [state(k * d.num_dirs + j) for j in range(d.num_dirs)]
        layers.append((dirs[0], dirs[1]) if d.bidirectional else dirs[0])
    return tuple(layers)


def _torch_layout(d: Draw, layers: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    """The inverse of `_per_layer`."""
    states = [s for layer in layers for s in (layer if d.bidirectional else (layer,))]
    if d.lstm:
        return tuple(np.stack([np.asarray(s[i]) for s in states]) for i in range(2))
    return (np.stack([np.asarray(s) for s in states]),)


def _with_scan_options(
    stack: eqrnn.StackedRNN, unroll: Any, checkpoint: Any, mode: Any
) -> Any:
    """`stack` with `unroll`, `checkpoint` and `mode` set in every `RNN` (static
    fields)."""

    def rnn(r: eqrnn.RNN) -> eqrnn.RNN:
        return eqrnn.RNN(
            r.cell,
            reverse=r.reverse,
            keep_order=r.keep_order,
            unroll=unroll,
            checkpoint=checkpoint,
            mode=mode,
        )

    layers = [
        rnn(layer)
        if isinstance(layer, eqrnn.RNN)
        else eqrnn.Bidirectional(
            rnn(layer.forward), rnn(layer.backward), merge=layer.merge
        )
        for layer in stack.layers
    ]
    return eqrnn.StackedRNN(
        layers,
        dropout=stack.dropout,
        residual=stack.residual,
        inference=stack.inference,
    )


def _batched(model: Any, xs: Any, lengths: Any, start: Any) -> Any:
    return jax.vmap(lambda x, n, h: model(x, hidden=h, length=n))(xs, lengths, start)


@eqx.filter_jit
def _forward(model: Any, xs: Any, lengths: Any, start: Any) -> Any:
    return _batched(model, xs, lengths, start)


@eqx.filter_jit
def _forward_and_grads(
    model: Any, xs: Any, lengths: Any, start: Any, cot_out: Any, cot_finals: Any
) -> Any:
    """`((outputs, finals), (d model, d xs, d start))` for the loss PyTorch's is."""

    def loss(diff: Any) -> Any:
        model, xs, start = diff
        outputs, finals = _batched(model, xs, lengths, start)
        products = jax.tree.map(lambda a, b: jnp.sum(a * b), finals, cot_finals)
        value = jnp.sum(outputs * cot_out) + sum(jax.tree.leaves(products))
        return value, (outputs, finals)

    (_, result), grads = eqx.filter_value_and_grad(loss, has_aux=True)(
        (model, xs, start)
    )
    return result, grads


def _cells(layer: Any) -> list[Any]:
    if isinstance(layer, eqrnn.RNN):
        return [layer.cell]
    return [layer.forward.cell, layer.backward.cell]


def _param_grads_by_torch_name(d: Draw, grads: Any) -> dict[str, Any]:
    """eqrnn's parameter gradients under PyTorch's names. eqrnn's `bias` is `bias_ih
    + bias_hh` (a GRU's without the `n` part of `bias_hh`, kept as `bias_hn`), so
    its gradient is `bias_ih`'s; `bias_hh`'s is left out but for `bias_hn`."""
    out: dict[str, Any] = {}
    for k, layer in enumerate(grads.layers):
        for cell, suffix in zip(_cells(layer), ("", "_reverse"), strict=False):
            s = f"_l{k}{suffix}"
            out["weight_ih" + s] = cell.weight_ih
            out["weight_hh" + s] = cell.weight_hh
            if d.bias:
                out["bias_ih" + s] = cell.bias
                if d.kind == "gru":
                    out["bias_hh" + s + "[n]"] = cell.bias_hn
            if d.proj_size:
                out["weight_hr" + s] = cell.weight_hr
    return out


def _torch_param_grads(d: Draw, grads: dict[str, np.ndarray]) -> dict[str, Any]:
    """PyTorch's, with the same names as `_param_grads_by_torch_name`."""
    out: dict[str, Any] = {}
    for name, g in grads.items():
        if name.startswith("bias_hh"):
            if d.kind == "gru":
                out[name + "[n]"] = g[2 * d.hidden_size :]
        else:
            out[name] = g
    return out


# --- comparing ---------------------------------------------------------------------


def _assert_close(what: str, actual: Any, expected: Any, dtype: str) -> None:
    """Finite, and equal up to `tolerance(dtype)` (1e-10 for float64, 1e-5 for
    float32) as rtol and as atol relative to the largest magnitude compared (at
    least 1), so that a cancellation to near zero in a large gradient is measured
    against its scale. (The largest errors seen over hundreds of draws were about
    2e-15 and 1.3e-6.)"""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.all(np.isfinite(a)), f"{what}: eqrnn is not finite:\n{a}"
    tol = tolerance(dtype)
    scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
    np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale, err_msg=what)


def _assert_zero(what: str, actual: Any) -> None:
    a = np.asarray(actual)
    assert np.all(a == 0), f"{what}: expected exactly zero, got\n{a}"


@settings(deadline=None)  # the first call of each new configuration compiles
@given(d=draws())
@example(d=EXAMPLES[0])
@example(d=EXAMPLES[1])
@example(d=EXAMPLES[2])
@example(d=EXAMPLES[3])
@example(d=EXAMPLES[4])
def test_from_torch_stack_equals_torch_on_packed_batch(d: Draw) -> None:
    rng = np.random.default_rng(d.seed)
    module = _torch_module(d, rng)
    np_dtype = np.dtype(d.dtype)
    batch = len(d.lengths)
    # eqrnn's batch: PyTorch's, then (if drawn) one sequence of length 0.
    rows = batch + int(d.empty_sequence)
    lengths = np.array(d.lengths + (0,) * int(d.empty_sequence))
    padding = np.arange(d.time)[None, :] >= lengths[:, None]  # (rows, time)

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np_dtype)

    xs = normal(rows, d.time, d.input_size)
    if d.nan_padding:  # PyTorch packs it away; eqrnn must let it reach nothing
        xs[padding] = np.nan
    num_states = d.num_layers * d.num_dirs
    sizes = (d.out_size, d.hidden_size) if d.lstm else (d.out_size,)
    start = tuple(normal(num_states, rows, n) for n in sizes)
    cot_out = normal(rows, d.time, d.num_dirs * d.out_size)
    cot_finals = tuple(normal(num_states, rows, n) for n in sizes)

    expected = _run_torch(
        d,
        module,
        xs[:batch],
        tuple(s[:, :batch] for s in start),
        cot_out[:batch],
        tuple(c[:, :batch] for c in cot_finals),
    )

    stack = from_torch(module)
    assert isinstance(stack, eqrnn.StackedRNN)
    assert len(stack.layers) == d.num_layers
    assert stack.inference == (not d.training)
    dtypes = {a.dtype for a in jax.tree.leaves(eqx.filter(stack, eqx.is_array))}
    assert dtypes == {jnp.dtype(d.dtype)}
    if d.scan_options != SCAN_OPTIONS[0]:
        unroll, checkpoint, mode = d.scan_options
        if d.kind == "lstm_proj" and isinstance(mode, eqrnn.Newton):
            # `h` and `c` differ in size: only the full Jacobian (tested to say so).
            mode = "newton"
        stack = _with_scan_options(stack, unroll, checkpoint, mode)

    eq_start = _per_layer(d, start) if d.initial_state else None
    args = (stack, jnp.asarray(xs), jnp.asarray(lengths), eq_start)
    if d.grads:
        (outputs, finals), (g_stack, g_xs, g_start) = _forward_and_grads(
            *args, jnp.asarray(cot_out), _per_layer(d, cot_finals)
        )
    else:
        outputs, finals = _forward(*args)
        g_stack = g_xs = g_start = None

    # Outputs: zero at padding, as `pad_packed_sequence` pads.
    outputs = np.asarray(outputs)
    _assert_zero("outputs at padded steps", outputs[padding])
    _assert_close("outputs", outputs[:batch], expected["outputs"], d.dtype)

    # Final states; a sequence of length 0 ends where it starts.
    finals = _torch_layout(d, finals)
    for i, (f, e) in enumerate(zip(finals, expected["finals"], strict=True)):
        name = "c_n" if i else "h_n"
        _assert_close(name, f[:, :batch], e, d.dtype)
        if d.empty_sequence:
            start_of_empty = start[i][:, batch] if d.initial_state else 0.0
            np.testing.assert_array_equal(f[:, batch], start_of_empty, err_msg=name)

    if not d.grads:
        return
    _assert_zero("d inputs at padded steps", np.asarray(g_xs)[padding])
    _assert_close("d inputs", np.asarray(g_xs)[:batch], expected["d_inputs"], d.dtype)
    if d.initial_state:
        assert g_start is not None
        g_start = _torch_layout(d, g_start)
        for i, (g, e) in enumerate(zip(g_start, expected["d_start"], strict=True)):
            name = "d c_0" if i else "d h_0"
            _assert_close(name, g[:, :batch], e, d.dtype)
            if d.empty_sequence:  # the final state is the starting state
                np.testing.assert_array_equal(
                    g[:, batch], cot_finals[i][:, batch], err_msg=name
                )
    actual_params = _param_grads_by_torch_name(d, g_stack)
    expected_params = _torch_param_grads(d, expected["d_params"])
    assert sorted(actual_params) == sorted(expected_params)
    for name, g in actual_params.items():
        _assert_close(f"d {name}", g, expected_params[name], d.dtype)
