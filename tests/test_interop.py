"""`eqrnn.interop`: converted models compute what the originals compute, round trips
give the parameters back bit for bit, and every conversion that cannot be exact is
refused with a message that says why.

- PyTorch: multi-layer (bidirectional, projecting) RNN/GRU/LSTM run on a packed batch
  of mixed lengths against the converted `StackedRNN` under `jax.vmap`; cells.
- Flax NNX: `nnx.RNN` with `seq_lengths`, reversed with and without `keep_order`, and
  `nnx.Bidirectional`, against the converted `RNN`/`Bidirectional`.
- Equinox: `equinox.nn.GRUCell`/`LSTMCell`.
"""

import subprocess
import sys
import warnings
from collections.abc import Callable
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
from eqrnn.interop import (
    from_equinox,
    from_flax,
    from_torch,
    to_equinox,
    to_flax,
    to_torch,
)

from .helpers import assert_tree_allclose, flax_cell, random_params


INPUT = 3
HIDDEN = 4
LENGTHS = np.array([5, 2, 4, 1])  # a batch of mixed lengths, padded to 5 steps
TIME = int(LENGTHS.max())


def _rng(getkey: Callable[[], Any]) -> np.random.Generator:
    """A NumPy generator seeded from the test's key (whose seed `getkey` prints)."""
    return np.random.default_rng(int(jr.randint(getkey(), (), 0, 2**31 - 1)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _randomize_torch(module: torch.nn.Module, rng: np.random.Generator) -> None:
    """Every parameter, biases included, drawn from N(0, 0.5^2)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.normal(0.0, 0.5, tuple(p.shape))))


def _valid() -> np.ndarray:
    """`(batch, time)`: which steps are inside each sequence's length."""
    return np.arange(TIME)[None, :] < LENGTHS[:, None]


def _inputs(rng: np.random.Generator, *, nan_padding: bool) -> np.ndarray:
    xs = rng.normal(size=(len(LENGTHS), TIME, INPUT))
    if nan_padding:  # must reach nothing: torch packs it away, eqrnn skips it
        xs[~_valid()] = np.nan
    return xs


def _bitwise_equal(a: Any, b: Any) -> bool:
    """Same pytree structure (static fields included) and bit-identical arrays of the
    same dtype."""
    a_leaves, a_def = jax.tree.flatten(a)
    b_leaves, b_def = jax.tree.flatten(b)
    if a_def != b_def:
        return False
    for x, y in zip(a_leaves, b_leaves, strict=True):
        if eqx.is_array(x) or eqx.is_array(y):
            x, y = np.asarray(x), np.asarray(y)
            if (x.dtype, x.shape, x.tobytes()) != (y.dtype, y.shape, y.tobytes()):
                return False
        elif x != y:
            return False
    return True


@eqx.filter_jit
def _run_batch(model: Any, xs: Any, lengths: Any) -> Any:
    return jax.vmap(lambda x, n: model(x, length=n))(xs, lengths)


# --- PyTorch -----------------------------------------------------------------------


def _torch_rnn(mode: str, **kwargs: Any) -> torch.nn.RNNBase:
    if mode == "LSTM":
        return torch.nn.LSTM(INPUT, HIDDEN, **kwargs)
    if mode == "GRU":
        return torch.nn.GRU(INPUT, HIDDEN, **kwargs)
    return torch.nn.RNN(INPUT, HIDDEN, nonlinearity=mode[4:].lower(), **kwargs)


def _as_torch_finals(finals: tuple[Any, ...], bidirectional: bool, lstm: bool) -> Any:
    """eqrnn's per-layer finals (batched by vmap) in torch's `h_n` (and `c_n`) layout,
    `(num_layers * num_directions, batch, size)`, layer-major."""
    states = [s for final in finals for s in (final if bidirectional else (final,))]
    if lstm:
        return (np.stack([h for h, _ in states]), np.stack([c for _, c in states]))
    return np.stack(states)


TORCH_CASES = [
    # (mode, num_layers, bidirectional, proj_size, dtype)
    ("RNN_TANH", 2, True, 0, torch.float64),
    ("RNN_TANH", 3, True, 0, torch.float64),
    ("RNN_RELU", 2, True, 0, torch.float64),
    ("RNN_RELU", 3, True, 0, torch.float64),
    ("GRU", 2, True, 0, torch.float64),
    ("GRU", 3, True, 0, torch.float64),
    ("LSTM", 2, True, 0, torch.float64),
    ("LSTM", 3, True, 0, torch.float64),
    ("LSTM", 2, False, 2, torch.float64),
    ("LSTM", 2, True, 2, torch.float64),
    ("GRU", 2, True, 0, torch.float32),
]


@pytest.mark.parametrize(
    "mode, num_layers, bidirectional, proj_size, dtype",
    TORCH_CASES,
    ids=[
        f"{m}-{n}layers-{'bi' if b else 'uni'}-proj{p}-{d}"
        for m, n, b, p, d in TORCH_CASES
    ],
)
@pytest.mark.usefixtures("each_platform")
def test_from_torch_stack_equals_torch_on_packed_batch(
    mode, num_layers, bidirectional, proj_size, dtype, getkey
):
    rng = _rng(getkey)
    kwargs: dict[str, Any] = {
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "batch_first": num_layers == 2,  # either way: eqrnn sees one sequence
        "dtype": dtype,
    }
    if proj_size:
        kwargs["proj_size"] = proj_size
    module = _torch_rnn(mode, **kwargs)
    _randomize_torch(module, rng)
    xs = _inputs(rng, nan_padding=True)

    x = torch.tensor(xs, dtype=dtype)
    if not kwargs["batch_first"]:
        x = x.transpose(0, 1)
    packed = pack_padded_sequence(
        x,
        torch.tensor(LENGTHS),
        batch_first=kwargs["batch_first"],
        enforce_sorted=False,
    )
    with torch.no_grad():
        out, finals = module(packed)
    out, _ = pad_packed_sequence(
        out, batch_first=kwargs["batch_first"], total_length=TIME
    )
    out = _np(out) if kwargs["batch_first"] else _np(out).transpose(1, 0, 2)
    expected_finals = jax.tree.map(_np, finals)  # h_n, or (h_n, c_n)

    stack = from_torch(module)
    assert isinstance(stack, eqrnn.StackedRNN) and len(stack.layers) == num_layers
    jdtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    arrays = jax.tree.leaves(eqx.filter(stack, eqx.is_array))
    assert {a.dtype for a in arrays} == {jnp.dtype(jdtype)}
    outputs, eq_finals = _run_batch(stack, jnp.asarray(xs, jdtype), LENGTHS)

    tol = 1e-10 if dtype == torch.float64 else 1e-5
    # Padded steps are zero in both, as `pad_packed_sequence` pads with zeros.
    assert_tree_allclose(outputs, out, rtol=tol, atol=tol)
    assert_tree_allclose(
        _as_torch_finals(eq_finals, bidirectional, lstm=mode == "LSTM"),
        expected_finals,
        rtol=tol,
        atol=tol,
    )


TORCH_CELLS = ["tanh", "relu", "gru", "lstm"]


def _torch_cell(kind: str) -> torch.nn.RNNCell | torch.nn.GRUCell | torch.nn.LSTMCell:
    if kind == "gru":
        return torch.nn.GRUCell(INPUT, HIDDEN, dtype=torch.float64)
    if kind == "lstm":
        return torch.nn.LSTMCell(INPUT, HIDDEN, dtype=torch.float64)
    return torch.nn.RNNCell(INPUT, HIDDEN, nonlinearity=kind, dtype=torch.float64)


@pytest.mark.parametrize("kind", TORCH_CELLS)
@pytest.mark.usefixtures("each_platform")
def test_torch_cell_converts_both_ways_and_equals_torch(kind, getkey):
    rng = _rng(getkey)
    tcell = _torch_cell(kind)
    _randomize_torch(tcell, rng)
    cell = from_torch(tcell)
    expected_type = {"gru": eqrnn.GRUCell, "lstm": eqrnn.LSTMCell}
    assert isinstance(cell, eqrnn.SimpleCell | eqrnn.GRUCell | eqrnn.LSTMCell)
    assert type(cell) is expected_type.get(kind, eqrnn.SimpleCell)

    lstm = kind == "lstm"
    x = rng.normal(size=(2, INPUT))
    states = [rng.normal(size=(2, HIDDEN)) for _ in range(2 if lstm else 1)]
    back = to_torch(cell)
    assert type(back) is type(tcell)
    with torch.no_grad():
        targs = [torch.tensor(s) for s in states]
        hidden: Any = tuple(targs) if lstm else targs[0]
        expected = jax.tree.map(_np, tcell(torch.tensor(x), hidden))
        again = jax.tree.map(_np, back(torch.tensor(x), hidden))
    jstates = [jnp.asarray(s) for s in states]
    hidden = tuple(jstates) if lstm else jstates[0]
    actual = jax.vmap(cell)(jnp.asarray(x), hidden)
    assert_tree_allclose(actual, expected)
    assert_tree_allclose(again, expected)
    # eqrnn -> torch -> eqrnn is bit-exact.
    assert _bitwise_equal(from_torch(back), cell)


def _assert_torch_round_trip(original: torch.nn.Module, back: torch.nn.Module) -> None:
    """torch -> eqrnn -> torch: the same module, weights bit-equal. eqrnn keeps one
    bias per gate, so `bias_ih` comes back as `bias_ih + bias_hh` (GRU: except the
    `n` part) and `bias_hh` as zero (GRU: except `b_hn`), bit-equal to those sums."""
    assert type(back) is type(original)
    orig = {n: p.detach() for n, p in original.named_parameters()}
    new = {n: p.detach() for n, p in back.named_parameters()}
    assert orig.keys() == new.keys()
    gru = isinstance(original, torch.nn.GRU | torch.nn.GRUCell)
    for name, p in orig.items():
        if name.startswith("weight"):
            assert torch.equal(new[name], p), name
        elif name.startswith("bias_ih"):
            b_hh = orig[name.replace("bias_ih", "bias_hh")]
            summed = p + b_hh
            if gru:
                n = p.shape[0] // 3
                summed = torch.cat([summed[: 2 * n], p[2 * n :]])
            assert torch.equal(new[name], summed), name
        else:
            expected = torch.zeros_like(p)
            if gru:
                n = p.shape[0] // 3
                expected[2 * n :] = p[2 * n :]
            assert torch.equal(new[name], expected), name


TORCH_ROUND_TRIPS = [
    ("LSTM", {"num_layers": 2, "bidirectional": True, "proj_size": 2}),
    ("GRU", {"num_layers": 3, "bias": False, "dropout": 0.25}),
    ("RNN_RELU", {"num_layers": 1, "bidirectional": True}),
]


@pytest.mark.parametrize("mode, kwargs", TORCH_ROUND_TRIPS)
@pytest.mark.parametrize("training", [True, False])
def test_torch_stack_round_trip_is_exact(mode, kwargs, training, getkey):
    module = _torch_rnn(mode, dtype=torch.float64, batch_first=True, **kwargs)
    _randomize_torch(module, _rng(getkey))
    module.train(training)
    stack = from_torch(module)
    assert stack.dropout == kwargs.get("dropout", 0.0)
    assert stack.inference is not training
    back = to_torch(stack, batch_first=True)
    for setting in (
        "mode",
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "dropout",
        "bidirectional",
        "proj_size",
        "training",
    ):
        assert getattr(back, setting) == getattr(module, setting), setting
    assert back.batch_first
    _assert_torch_round_trip(module, back)
    # eqrnn -> torch -> eqrnn is bit-exact.
    assert _bitwise_equal(from_torch(back), stack)


@pytest.mark.parametrize("kind", TORCH_CELLS)
def test_torch_cell_round_trip_is_exact(kind, getkey):
    tcell = _torch_cell(kind)
    _randomize_torch(tcell, _rng(getkey))
    back = to_torch(from_torch(tcell))
    assert getattr(back, "nonlinearity", None) == getattr(tcell, "nonlinearity", None)
    _assert_torch_round_trip(tcell, back)


def test_from_torch_state_dict_equals_from_module(getkey):
    rng = _rng(getkey)
    lstm = torch.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=2)
    relu = torch.nn.RNN(INPUT, HIDDEN, num_layers=2, nonlinearity="relu", bias=False)
    gru_cell = torch.nn.GRUCell(INPUT, HIDDEN)
    for m in (lstm, relu, gru_cell):
        _randomize_torch(m, rng)

    assert _bitwise_equal(from_torch(lstm.state_dict(), mode="LSTM"), from_torch(lstm))
    # NumPy arrays, under a prefix, among other keys (a whole model's state dict).
    model = {f"encoder.rnn.{k}": _np(v) for k, v in relu.state_dict().items()}
    model["decoder.weight"] = np.zeros((2, 2), np.float32)
    converted = from_torch(
        model, mode="RNN", nonlinearity="relu", prefix="encoder.rnn."
    )
    assert _bitwise_equal(converted, from_torch(relu))
    assert _bitwise_equal(
        from_torch(gru_cell.state_dict(), mode="GRU"), from_torch(gru_cell)
    )
    with_dropout = from_torch(lstm.state_dict(), mode="LSTM", dropout=0.5)
    assert isinstance(with_dropout, eqrnn.StackedRNN) and with_dropout.dropout == 0.5


# --- Flax NNX ----------------------------------------------------------------------


def _flax_cell(kind: str, seed: int) -> Any:
    return flax_cell(kind, INPUT, HIDDEN, jnp.float64, seed)


def _eqrnn_hidden(kind: str, carry: Any) -> Any:
    """Flax's LSTM carry is `(c, h)`, eqrnn's hidden state `(h, c)`."""
    return carry[::-1] if "lstm" in kind else carry


def _valid_steps(outputs: Any) -> np.ndarray:
    """Flax keeps computing over padding, eqrnn zeros it: compare valid steps only."""
    return np.asarray(outputs)[_valid()]


FLAX_RNN_CASES = [
    # (kind, reverse, keep_order)
    ("simple", False, False),
    ("simple_residual", True, True),
    ("gru", True, False),
    ("lstm", True, True),
    ("optimized_lstm", True, False),
    ("lstm", False, False),
]


@pytest.mark.parametrize("kind, reverse, keep_order", FLAX_RNN_CASES)
@pytest.mark.usefixtures("each_platform")
def test_from_flax_rnn_equals_flax_with_seq_lengths(kind, reverse, keep_order, getkey):
    rng = _rng(getkey)
    rnn = nnx.RNN(
        _flax_cell(kind, int(rng.integers(2**31))),
        return_carry=True,
        reverse=reverse,
        keep_order=keep_order,
    )
    xs = jnp.asarray(_inputs(rng, nan_padding=False))
    carry, expected = rnn(xs, seq_lengths=jnp.asarray(LENGTHS))

    converted = from_flax(rnn)
    assert isinstance(converted, eqrnn.RNN)
    assert (converted.reverse, converted.keep_order) == (reverse, keep_order)
    outputs, final = _run_batch(converted, xs, LENGTHS)
    assert_tree_allclose(_valid_steps(outputs), _valid_steps(expected))
    assert_tree_allclose(final, _eqrnn_hidden(kind, carry))


@pytest.mark.parametrize(
    "kinds, merge_fn",
    [(("lstm", "optimized_lstm"), None), (("gru", "simple"), jnp.add)],
)
@pytest.mark.usefixtures("each_platform")
def test_from_flax_bidirectional_equals_flax(kinds, merge_fn, getkey):
    rng = _rng(getkey)
    fwd, bwd = (nnx.RNN(_flax_cell(k, int(rng.integers(2**31)))) for k in kinds)
    kwargs = {} if merge_fn is None else {"merge_fn": merge_fn}
    bi = nnx.Bidirectional(fwd, bwd, return_carry=True, **kwargs)
    xs = jnp.asarray(_inputs(rng, nan_padding=False))
    (carry_f, carry_b), expected = bi(xs, seq_lengths=jnp.asarray(LENGTHS))

    converted = from_flax(bi)
    assert isinstance(converted, eqrnn.Bidirectional)
    outputs, (final_f, final_b) = _run_batch(converted, xs, LENGTHS)
    assert_tree_allclose(_valid_steps(outputs), _valid_steps(expected))
    assert_tree_allclose(final_f, _eqrnn_hidden(kinds[0], carry_f))
    assert_tree_allclose(final_b, _eqrnn_hidden(kinds[1], carry_b))


def _flax_params(module: Any) -> Any:
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def _flax_settings(module: Any) -> dict[str, Any]:
    names = ("residual", "gate_fn", "activation_fn", "reverse", "keep_order")
    names += ("return_carry", "unroll", "merge_fn")
    return {n: getattr(module, n) for n in names if hasattr(module, n)}


def _flax_module(name: str, seed: int) -> Any:
    if name == "rnn":
        return nnx.RNN(_flax_cell("gru", seed), reverse=True, return_carry=True)
    if name == "bidirectional":
        fwd = nnx.RNN(_flax_cell("optimized_lstm", seed))
        bwd = nnx.RNN(_flax_cell("optimized_lstm", seed + 1))
        return nnx.Bidirectional(fwd, bwd, merge_fn=jnp.multiply)
    return _flax_cell(name, seed)


@pytest.mark.parametrize(
    "name",
    [
        "simple",
        "simple_residual",
        "gru",
        "lstm",
        "optimized_lstm",
        "rnn",
        "bidirectional",
    ],
)
def test_flax_round_trip_is_exact(name, getkey):
    module = _flax_module(name, int(_rng(getkey).integers(2**31)))
    converted = from_flax(module)
    lstm_type = (
        "optimized" if "optimized" in name or name == "bidirectional" else "plain"
    )
    back = to_flax(converted, lstm_type=lstm_type)
    assert type(back) is type(module)
    assert _flax_settings(back) == _flax_settings(module)
    original, again = _flax_params(module), _flax_params(back)
    assert jax.tree.structure(again) == jax.tree.structure(original)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(original), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # eqrnn -> Flax -> eqrnn is bit-exact too.
    assert _bitwise_equal(from_flax(back), converted)


@pytest.mark.parametrize(
    ("flax_unroll", "eqrnn_unroll"), [(1, "auto"), (4, 4), (True, True)]
)
def test_flax_unroll_maps_its_default_to_auto(flax_unroll, eqrnn_unroll):
    # Flax's default (1) is no choice of the user's: it becomes eqrnn's default, the
    # platform's choice, and back; any other value is kept.
    module = nnx.RNN(_flax_cell("gru", 0), unroll=flax_unroll)
    converted = from_flax(module)
    assert type(converted.unroll) is type(eqrnn_unroll)
    assert converted.unroll == eqrnn_unroll
    back = to_flax(converted)
    assert type(back.unroll) is type(flax_unroll) and back.unroll == flax_unroll


def test_to_flax_lstm_type_picks_the_flax_class(getkey):
    cell = random_params(eqrnn.LSTMCell(INPUT, HIDDEN, key=getkey()), getkey())
    plain = to_flax(cell, lstm_type="plain")
    optimized = to_flax(cell, lstm_type="optimized")
    assert type(plain) is nnx.LSTMCell and type(optimized) is nnx.OptimizedLSTMCell
    assert _bitwise_equal(from_flax(plain), cell)
    assert _bitwise_equal(from_flax(optimized), cell)


# --- Equinox -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.usefixtures("each_platform")
def test_equinox_round_trip_is_exact_and_cells_agree(kind, use_bias, getkey):
    cls = eqx.nn.GRUCell if kind == "gru" else eqx.nn.LSTMCell
    original = random_params(cls(INPUT, HIDDEN, use_bias, key=getkey()), getkey())
    cell = from_equinox(original)
    assert type(cell) is (eqrnn.GRUCell if kind == "gru" else eqrnn.LSTMCell)
    back = to_equinox(cell)
    assert _bitwise_equal(back, original)
    assert _bitwise_equal(from_equinox(back), cell)

    x = jr.normal(getkey(), (INPUT,))
    h = jr.normal(getkey(), (HIDDEN,))
    hidden = (h, jr.normal(getkey(), (HIDDEN,))) if kind == "lstm" else h
    assert_tree_allclose(cell(x, hidden), original(x, hidden))


# --- What cannot be converted exactly -----------------------------------------------


def _cell(kind: str, key: Any, **kwargs: Any) -> Any:
    cls = {
        "simple": eqrnn.SimpleCell,
        "gru": eqrnn.GRUCell,
        "lstm": eqrnn.LSTMCell,
        "mgu": eqrnn.MGUCell,
    }[kind]
    return random_params(cls(INPUT, HIDDEN, key=jr.fold_in(key, 0), **kwargs), key)


def _stack(*layers: Any, **kwargs: Any) -> eqrnn.StackedRNN:
    return eqrnn.StackedRNN(layers, **kwargs)


def _bi(kind: str, key: Any, input_size: int = INPUT, **kwargs: Any) -> Any:
    cls = {"gru": eqrnn.GRUCell, "lstm": eqrnn.LSTMCell}[kind]
    k1, k2 = jr.split(key)
    return eqrnn.Bidirectional(
        eqrnn.RNN(cls(input_size, HIDDEN, key=k1)),
        eqrnn.RNN(cls(input_size, HIDDEN, key=k2)),
        **kwargs,
    )


def _nonzero_carry(key: Any, shape: Any, dtype: Any) -> Any:
    return jnp.ones(shape, dtype)


def _flax_with_carry_init() -> Any:
    with warnings.catch_warnings():  # Flax warns about `carry_init` in `__init__`
        warnings.simplefilter("ignore")
        return nnx.GRUCell(INPUT, HIDDEN, carry_init=_nonzero_carry, rngs=nnx.Rngs(0))


# (description, conversion, what the message must say)
REFUSED: list[tuple[str, Callable[[Any], Any], str]] = [
    ("mgu_to_torch", lambda k: to_torch(_cell("mgu", k)), "MGUCell has no counterpart"),
    ("mgu_to_flax", lambda k: to_flax(_cell("mgu", k)), "MGUCell has no counterpart"),
    (
        "mgu_to_equinox",
        lambda k: to_equinox(_cell("mgu", k)),
        "MGUCell has no counterpart",
    ),
    (
        "simple_to_equinox",
        lambda k: to_equinox(_cell("simple", k)),
        "no counterpart in equinox",
    ),
    ("gru_bias_hn_to_flax", lambda k: to_flax(_cell("gru", k)), "non-zero `bias_hn`"),
    (
        "no_bias_to_flax",
        lambda k: to_flax(_cell("lstm", k, use_bias=False)),
        "use_bias=False",
    ),
    ("proj_to_flax", lambda k: to_flax(_cell("lstm", k, proj_size=2)), "proj_size"),
    (
        "proj_to_equinox",
        lambda k: to_equinox(_cell("lstm", k, proj_size=2)),
        "proj_size",
    ),
    (
        "proj_cell_to_torch",
        lambda k: to_torch(_cell("lstm", k, proj_size=2)),
        "no projection",
    ),
    (
        "residual_to_torch",
        lambda k: to_torch(_cell("simple", k, residual=True)),
        "residual",
    ),
    (
        "residual_in_upper_layer_to_torch",
        lambda k: to_torch(
            eqrnn.StackedRNN(
                [
                    eqrnn.RNN(_cell("simple", k)),
                    eqrnn.RNN(eqrnn.SimpleCell(HIDDEN, HIDDEN, residual=True, key=k)),
                ]
            )
        ),
        "residual=True",
    ),
    (
        "residual_backward_cell_to_torch",
        lambda k: to_torch(
            eqrnn.Bidirectional(
                eqrnn.RNN(_cell("simple", k)),
                eqrnn.RNN(eqrnn.SimpleCell(INPUT, HIDDEN, residual=True, key=k)),
            )
        ),
        "residual=True",
    ),
    (
        "gelu_to_torch",
        lambda k: to_torch(_cell("simple", k, activation_fn=jax.nn.gelu)),
        "activation_fn=gelu.*'tanh' or 'relu'",
    ),
    (
        "gate_fn_to_torch",
        lambda k: to_torch(_cell("gru", k, gate_fn=jax.nn.hard_sigmoid)),
        "gate_fn=hard_sigmoid.*sigmoid gates",
    ),
    (
        "activation_to_equinox",
        lambda k: to_equinox(_cell("lstm", k, activation_fn=jax.nn.relu)),
        "activation_fn=relu",
    ),
    (
        "carry_init_to_torch",
        lambda k: to_torch(_cell("gru", k, carry_init=_nonzero_carry)),
        "non-zero starting state",
    ),
    (
        "carry_init_to_flax",
        lambda k: to_flax(eqrnn.SimpleCell(3, 4, carry_init=_nonzero_carry, key=k)),
        "non-zero starting state",
    ),
    (
        "carry_init_to_equinox",
        lambda k: to_equinox(_cell("lstm", k, carry_init=_nonzero_carry)),
        "non-zero starting state",
    ),
    (
        "residual_stack_to_torch",
        lambda k: to_torch(
            _stack(
                eqrnn.RNN(_cell("gru", k)),
                eqrnn.RNN(eqrnn.GRUCell(HIDDEN, HIDDEN, key=k)),
                residual=True,
            )
        ),
        "residual=True",
    ),
    (
        "mixed_stack_to_torch",
        lambda k: to_torch(
            _stack(eqrnn.RNN(_cell("gru", k)), _bi("gru", k, input_size=HIDDEN))
        ),
        "mixes RNN and Bidirectional",
    ),
    (
        "reversed_layer_to_torch",
        lambda k: to_torch(_stack(eqrnn.RNN(_cell("gru", k), reverse=True))),
        "runs in reverse",
    ),
    ("sum_merge_to_torch", lambda k: to_torch(_bi("lstm", k, merge="sum")), "merge"),
    (
        "mixed_sizes_to_torch",
        lambda k: to_torch(
            _stack(
                eqrnn.RNN(_cell("gru", k)),
                eqrnn.RNN(eqrnn.GRUCell(HIDDEN, HIDDEN + 1, key=k)),
            )
        ),
        "hidden_size",
    ),
    (
        "mixed_cells_to_torch",
        lambda k: to_torch(
            _stack(
                eqrnn.RNN(_cell("gru", k)),
                eqrnn.RNN(eqrnn.LSTMCell(HIDDEN, HIDDEN, key=k)),
            )
        ),
        "GRUCell.*LSTMCell",
    ),
    (
        "stack_to_flax",
        lambda k: to_flax(_stack(eqrnn.RNN(_cell("gru", k)))),  # pyright: ignore[reportCallIssue, reportArgumentType]
        "no stacked RNN",
    ),
    ("flax_carry_init", lambda k: from_flax(_flax_with_carry_init()), "carry_init"),
    (
        "flax_compute_dtype",
        lambda k: from_flax(
            # Flax's SimpleCell computes in float32 by default, whatever its params.
            nnx.SimpleCell(INPUT, HIDDEN, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        ),
        "computes in dtype=float32",
    ),
    (
        "torch_module_with_mode",
        lambda k: from_torch(torch.nn.LSTM(3, 4), mode="LSTM"),  # pyright: ignore[reportCallIssue, reportArgumentType]
        "`mode` are read from the torch module",
    ),
    (
        "state_dict_without_mode",
        lambda k: from_torch(torch.nn.GRU(3, 4).state_dict()),  # pyright: ignore[reportCallIssue, reportArgumentType]
        "pass `mode=",
    ),
    (
        "state_dict_wrong_mode",
        lambda k: from_torch(torch.nn.GRU(3, 4).state_dict(), mode="LSTM"),
        r"`weight_hh_l0` of a mode='LSTM' RNN must have shape \(4 \* hidden_size, "
        r"hidden_size\), got \(12, 4\); is `mode` right\?",
    ),
    (
        "state_dict_missing_key",
        lambda k: from_torch(
            {
                "weight_ih_l0": np.zeros((4, 3)),
                "weight_hh_l0": np.zeros((4, 4)),
                "bias_ih_l0": np.zeros(4),
            },
            mode="RNN",
        ),
        r"missing \['bias_hh_l0'\]",
    ),
]


@pytest.mark.parametrize(
    "convert, match", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_inexact_conversion_is_refused_with_the_reason(convert, match, getkey):
    with pytest.raises(ValueError, match=match):
        convert(getkey())


def test_to_flax_accepts_gru_with_zero_bias_hn(getkey):
    cell = _cell("gru", getkey())
    cell = eqx.tree_at(lambda c: c.bias_hn, cell, jnp.zeros(HIDDEN))
    assert _bitwise_equal(from_flax(to_flax(cell)), cell)


def test_wrong_types_are_rejected(getkey):
    with pytest.raises(TypeError):
        from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(TypeError):
        from_flax(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))  # pyright: ignore[reportCallIssue, reportArgumentType]
    with pytest.raises(TypeError):
        from_equinox(eqx.nn.Linear(3, 4, key=getkey()))  # pyright: ignore[reportCallIssue, reportArgumentType]


# --- Saving and loading ------------------------------------------------------------


def _converted(name: str, key: Any) -> Any:
    rng = np.random.default_rng(int(jr.randint(key, (), 0, 2**31 - 1)))
    if name == "stacked_rnn":
        module = torch.nn.LSTM(
            INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=2
        )
    elif name == "simple_cell":
        module = torch.nn.RNNCell(INPUT, HIDDEN, nonlinearity="relu")
    elif name == "gru_cell":
        module = torch.nn.GRUCell(INPUT, HIDDEN)
    elif name == "lstm_cell":
        module = torch.nn.LSTMCell(INPUT, HIDDEN)
    elif name == "rnn":
        return from_flax(nnx.RNN(_flax_cell("lstm", 0), reverse=True))
    elif name == "bidirectional":
        return from_flax(_flax_module("bidirectional", 0))
    else:
        assert name == "equinox_gru_cell"
        return from_equinox(eqx.nn.GRUCell(INPUT, HIDDEN, key=key))
    _randomize_torch(module, rng)
    return from_torch(module)


@pytest.mark.parametrize(
    "name",
    [
        "stacked_rnn",
        "rnn",
        "bidirectional",
        "simple_cell",
        "gru_cell",
        "lstm_cell",
        "equinox_gru_cell",
    ],
)
def test_converted_model_saves_and_loads_bit_exactly(name, tmp_path, getkey):
    model = _converted(name, getkey())
    path = tmp_path / f"{name}.eqx"
    eqx.tree_serialise_leaves(path, model)
    like = jax.tree.map(lambda x: jnp.zeros_like(x) if eqx.is_array(x) else x, model)
    assert not _bitwise_equal(like, model)
    loaded = eqx.tree_deserialise_leaves(path, like)
    assert _bitwise_equal(loaded, model)


# --- Imports -----------------------------------------------------------------------


def test_interop_imports_without_torch_or_flax():
    """Importing `eqrnn.interop`, and converting a NumPy state dict or an Equinox
    cell, loads neither torch nor flax; float64 weights without x64 are refused."""
    code = """
import sys
import jax
import numpy as np
import equinox as eqx
import eqrnn.interop as interop

assert "torch" not in sys.modules and "flax" not in sys.modules, sorted(sys.modules)
state = {
    "weight_ih": np.ones((12, 3), np.float32),
    "weight_hh": np.ones((12, 4), np.float32),
}
cell = interop.from_torch(state, mode="GRU")
assert cell.weight_ih.dtype == np.float32
interop.to_equinox(interop.from_equinox(eqx.nn.LSTMCell(3, 4, key=jax.random.key(0))))
assert "torch" not in sys.modules and "flax" not in sys.modules, sorted(sys.modules)
try:
    interop.from_torch({k: v.astype(np.float64) for k, v in state.items()}, mode="GRU")
except ValueError as e:
    assert "jax_enable_x64" in str(e), e
else:
    raise AssertionError("float64 without x64 was not refused")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
