"""The `mode` objects: each gives the numbers of its name, `Auto().select` says what
`Auto` runs, a bad mode is refused naming `mode`, and the objects pass through
`jax.jit` as arguments and as `RNN` fields."""

import os
import traceback
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import eqrnn

from .helpers import assert_tree_allclose


def _readout(tree: Any) -> Any:
    return sum(
        jnp.sum(
            jnp.sin(leaf)
            * jnp.arange(1, leaf.size + 1, dtype=leaf.dtype).reshape(leaf.shape)
        )
        for leaf in jax.tree.leaves(tree)
    )


@eqx.filter_jit
def _values_and_grads(cell, xs, mode):
    def loss(cell, xs):
        return _readout(eqrnn.scan_all_hidden(cell, xs, mode=mode, length=5))

    hs = eqrnn.scan_all_hidden(cell, xs, mode=mode, length=5)
    return hs, jax.grad(loss, argnums=(0, 1))(cell, xs)


def _cells(key: Any) -> dict[str, Any]:
    k1, k2, k3 = jr.split(key, 3)
    return {
        "linear": eqrnn.MinGRU(3, 4, dtype=jnp.float64, key=k1),
        "step": eqrnn.GRUCell(3, 4, dtype=jnp.float64, key=k2),
        "mlstm": eqrnn.MLSTMCell(3, 4, num_heads=2, dtype=jnp.float64, key=k3),
    }


CASES = [
    ("linear", "auto", eqrnn.Auto()),
    ("linear", "sequential", eqrnn.Sequential()),
    ("linear", "associative", eqrnn.Associative()),
    ("linear", "chunked", eqrnn.Chunked()),
    ("step", "auto", eqrnn.Auto()),
    ("step", "sequential", eqrnn.Sequential()),
    ("step", "newton", eqrnn.Newton()),
    ("mlstm", "auto", eqrnn.Auto()),
    ("mlstm", "chunked", eqrnn.Chunked()),
    ("mlstm", "sequential", eqrnn.Sequential()),
    ("mlstm", "associative", eqrnn.Associative()),
]


@pytest.mark.parametrize("kind, name, mode", CASES)
def test_each_mode_object_gives_the_numbers_of_its_name(getkey, kind, name, mode):
    cell = _cells(getkey())[kind]
    xs = jr.normal(getkey(), (7, 3), jnp.float64)
    by_object = _values_and_grads(cell, xs, mode)
    by_name = _values_and_grads(cell, xs, name)
    assert_tree_allclose(by_object, by_name, rtol=0, atol=0)
    # And the object is the mode: against the sequential scan, to rounding.
    reference = _values_and_grads(cell, xs, "sequential")
    assert_tree_allclose(by_object, reference, rtol=1e-9, atol=1e-9)


def test_linear_scan_takes_mode_objects():
    a = jnp.full((5, 3), 0.5)
    b = jnp.ones((5, 3))
    for name, mode in [
        ("auto", eqrnn.Auto()),
        ("sequential", eqrnn.Sequential()),
        ("associative", eqrnn.Associative()),
        ("chunked", eqrnn.Chunked()),
    ]:
        assert_tree_allclose(
            eqrnn.linear_scan(a, b, mode=mode), eqrnn.linear_scan(a, b, mode=name)
        )


@pytest.mark.parametrize(
    "platform, expected",
    [
        ("cpu", {"linear": eqrnn.Sequential(), "mlstm": eqrnn.Chunked()}),
        ("gpu", {"linear": eqrnn.Associative(), "mlstm": eqrnn.Chunked()}),
        ("tpu", {"linear": eqrnn.Associative(), "mlstm": eqrnn.Chunked()}),
    ],
)
def test_auto_select_says_what_auto_runs(getkey, platform, expected):
    cells = _cells(getkey())
    lstm = eqrnn.LSTMCell(3, 4, key=getkey())
    with eqrnn.tuned_for(platform):
        # Step-by-step cells, ours or Equinox's or a function: never Newton.
        assert eqrnn.Auto().select(cells["step"]) == eqrnn.Sequential()
        assert eqrnn.Auto().select(lstm) == eqrnn.Sequential()
        assert eqrnn.Auto().select(eqx.nn.GRUCell(3, 4, key=getkey())) == (
            eqrnn.Sequential()
        )
        assert eqrnn.Auto().select(lambda x, h, key=None: h) == eqrnn.Sequential()
        assert eqrnn.Auto().select(cells["linear"]) == expected["linear"]
        assert (
            eqrnn.Auto().select(eqrnn.LRU(3, 4, 5, key=getkey()))
            == (expected["linear"])
        )
        assert eqrnn.Auto().select(cells["mlstm"]) == expected["mlstm"]


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_auto_runs_what_select_says(getkey, platform):
    cells = _cells(getkey())
    xs = jr.normal(getkey(), (6, 3), jnp.float64)
    with eqrnn.tuned_for(platform):
        for cell in cells.values():
            chosen = eqrnn.Auto().select(cell)
            assert_tree_allclose(
                eqrnn.scan_all_hidden(cell, xs, mode=eqrnn.Auto()),
                eqrnn.scan_all_hidden(cell, xs, mode=chosen),
                rtol=0,
                atol=0,
            )


def test_a_bad_mode_is_refused_naming_mode(getkey, no_jaxtyping):
    cells = _cells(getkey())
    xs = jnp.ones((4, 3), jnp.float64)
    for bad in ("fast", 3, eqx.nn.Identity(), None):
        with pytest.raises(ValueError, match=r"scan_last: `mode` must be one of "):
            eqrnn.scan_last(cells["linear"], xs, mode=bad)  # pyright: ignore[reportArgumentType]
        with pytest.raises(ValueError, match=r"RNN: `mode` must be one of "):
            eqrnn.RNN(cells["linear"], mode=bad)  # pyright: ignore[reportArgumentType]
    # A mode the cell cannot run, as object or name: the same message.
    for mode in ("associative", eqrnn.Associative()):
        with pytest.raises(ValueError, match=r"`mode='associative'` needs a cell"):
            eqrnn.scan_last(cells["step"], xs, mode=mode)
    for mode in ("newton", eqrnn.Newton("diagonal")):
        with pytest.raises(ValueError, match=r"`mode='newton'` runs a cell"):
            eqrnn.RNN(cells["linear"], mode=mode)
    a = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"linear_scan: `mode` must be one of"):
        eqrnn.linear_scan(a, a, mode=eqrnn.Newton())  # pyright: ignore[reportCallIssue, reportArgumentType]


def test_rnn_keeps_the_mode_object_and_jits(getkey):
    cell = eqrnn.MinGRU(3, 4, dtype=jnp.float64, key=getkey())
    xs = jr.normal(getkey(), (6, 3), jnp.float64)
    by_name = eqrnn.RNN(cell, mode="associative")
    by_object = eqrnn.RNN(cell, mode=eqrnn.Associative())
    assert by_name.mode == by_object.mode == eqrnn.Associative()
    assert hash(by_name.mode) == hash(eqrnn.Associative())
    run = jax.jit(lambda rnn, xs: rnn(xs))
    assert_tree_allclose(run(by_object, xs), eqx.filter_jit(by_name)(xs))
    step = eqrnn.RNN(eqrnn.GRUCell(3, 4, dtype=jnp.float64, key=getkey()))
    newton = eqrnn.RNN(step.cell, mode=eqrnn.Newton("diagonal", tol=1e-12))
    assert jax.tree.leaves(eqrnn.Newton("diagonal")) == []  # options are static
    assert_tree_allclose(run(newton, xs), step(xs), rtol=1e-9, atol=1e-9)


def test_scan_helpers_take_mode_objects_under_jit(getkey):
    cell = eqrnn.MinGRU(3, 4, dtype=jnp.float64, key=getkey())
    xs = jr.normal(getkey(), (6, 3), jnp.float64)
    last = jax.jit(eqrnn.scan_last, static_argnames="mode")
    assert_tree_allclose(
        last(cell, xs, mode=eqrnn.Associative()),
        eqrnn.scan_last(cell, xs, mode="sequential"),
    )
    filtered = eqx.filter_jit(eqrnn.scan_last)
    assert_tree_allclose(
        filtered(cell, xs, mode=eqrnn.Chunked()),
        eqrnn.scan_last(cell, xs, mode="sequential"),
    )


def _eqrnn_frames() -> list[str]:
    """The names of the eqrnn functions on the stack, outermost first."""
    package = os.path.dirname(eqrnn.__file__) + os.sep
    return [f.name for f in traceback.extract_stack() if f.filename.startswith(package)]


def test_at_most_seven_eqrnn_frames_from_rnn_call_to_a_cells_arithmetic(
    getkey, monkeypatch
):
    # The generic step: a GRU with its own activation, which records the stack.
    seen: list[list[str]] = []

    def tanh(x):
        seen.append(_eqrnn_frames())
        return jnp.tanh(x)

    cell = eqrnn.GRUCell(2, 3, activation_fn=tanh, key=getkey())
    eqrnn.RNN(cell)(jnp.ones((4, 2), cell.dtype))
    generic = seen[-1]
    assert generic[0] == "__call__" and generic[-1] == "_pointwise", generic
    assert len(generic) <= 7, generic

    # The fused step the CPU runs by default: the kernel is one frame more than
    # what calls it.
    original = eqrnn._gru.gru_pointwise  # pyright: ignore[reportAttributeAccessIssue]

    def recording(*args):
        seen.append(_eqrnn_frames())
        return original(*args)

    monkeypatch.setattr(eqrnn._gru, "gru_pointwise", recording)  # pyright: ignore[reportAttributeAccessIssue]
    with eqrnn.tuned_for("cpu"):
        eqrnn.RNN(eqrnn.GRUCell(2, 3, key=getkey()))(jnp.ones((4, 2), cell.dtype))
    fused = seen[-1]
    assert fused[0] == "__call__", fused
    assert len(fused) + 1 <= 7, fused

    # A linear cell: the coefficients are the arithmetic.
    seen.clear()
    mingru = eqrnn.MinGRU(2, 3, key=getkey())
    monkeypatch.setattr(
        type(mingru),
        "linear_coefficients",
        _recorded(type(mingru).linear_coefficients, seen),
    )
    eqrnn.RNN(mingru)(jnp.ones((4, 2), mingru.dtype))
    assert seen and len(seen[-1]) + 1 <= 7, seen[-1]


def _recorded(method, seen):
    def wrapper(*args):
        seen.append(_eqrnn_frames())
        return method(*args)

    return wrapper
