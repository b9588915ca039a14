"""Mistakes as a user makes them, with the jaxtyping hook off (as for every user):
each gets a message that names the argument, and the fix it suggests runs."""

import re

import flax.nnx as flax
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest
import torch

import eqrnn

from .registry import FAMILY_REPRESENTATIVES


pytestmark = pytest.mark.usefixtures("no_jaxtyping")


def _layers():
    k1, k2, k3 = jr.split(jr.key(0), 3)
    rnn = eqrnn.RNN(eqrnn.GRUCell(3, 8, key=k1))
    bi = eqrnn.Bidirectional(rnn, eqrnn.RNN(eqrnn.GRUCell(3, 8, key=k2)))
    stack = eqrnn.StackedRNN([bi, eqrnn.RNN(eqrnn.GRUCell(16, 4, key=k3))])
    return {"RNN": rnn, "Bidirectional": bi, "StackedRNN": stack}


@pytest.mark.parametrize("name", ["RNN", "Bidirectional", "StackedRNN"])
def test_a_batch_given_to_a_layer_gets_a_vmap_fix_that_runs(name):
    layer = _layers()[name]
    batch = jnp.ones((4, 10, 3))
    lengths = jnp.array([10, 7, 3, 0])
    with pytest.raises(ValueError, match=rf"^{name}: `inputs` must have shape") as e:
        layer(batch)
    message = str(e.value)
    assert f"`layer` being this {name}" in message
    # Both fixes the message gives, as written in it.
    fixes = re.findall(r"`(jax\.vmap\(.*?\)\(batch(?:, lengths)?\))`", message)
    assert len(fixes) == 2, message
    for fix in fixes:
        out = eval(
            fix, {"jax": jax, "layer": layer, "batch": batch, "lengths": lengths}
        )
        assert jax.tree.leaves(out)[0].shape[:2] == (4, 10)


@pytest.mark.parametrize("scan", [eqrnn.scan_last, eqrnn.scan_all_hidden])
def test_a_batch_given_to_a_scan_helper_gets_a_vmap_fix_that_runs(scan):
    cell = eqrnn.GRUCell(3, 8, key=jr.key(0))
    batch = jnp.ones((4, 10, 3))
    with pytest.raises(ValueError, match="A batch of sequences") as e:
        scan(cell, batch)
    fix = re.search(r"`(jax\.vmap\(.*?\)\(batch\))`", str(e.value))
    assert fix is not None, e.value
    out = eval(fix.group(1), {"jax": jax, "eqrnn": eqrnn, "cell": cell, "batch": batch})
    assert out.shape[0] == 4


def test_bidirectional_sum_of_different_sizes_is_refused_at_construction():
    k1, k2 = jr.split(jr.key(0))
    forward = eqrnn.RNN(eqrnn.GRUCell(3, 8, key=k1))
    backward = eqrnn.RNN(eqrnn.GRUCell(3, 5, key=k2))
    for merge in ("sum", "mean", "product"):
        with pytest.raises(ValueError, match="Use merge='concat'"):
            eqrnn.Bidirectional(forward, backward, merge=merge)
    bi = eqrnn.Bidirectional(forward, backward, merge="concat")
    outputs, _ = bi.run(jnp.ones((4, 3)))
    assert outputs.shape == (4, 13)


def test_stacked_layer_of_the_wrong_width_is_named():
    layers = _layers()
    k = jr.key(1)
    stack = eqrnn.StackedRNN(
        [layers["Bidirectional"], eqrnn.RNN(eqrnn.GRUCell(8, 4, key=k))]
    )
    with pytest.raises(
        ValueError,
        match=r"layer 1 reads inputs of width 8, but layer 0's outputs have "
        r"width 16\. Build layer 1's cell with input_size=16\.",
    ):
        stack(jnp.ones((5, 3)))


@pytest.mark.parametrize("name", ["RNN", "Bidirectional", "StackedRNN"])
def test_hidden_is_positional_in_layers_as_in_the_scan_helpers(name):
    layer = _layers()[name]
    x = jr.normal(jr.key(2), (6, 3))
    if name == "RNN":
        hidden = layer.init_hidden() + 1
    elif name == "Bidirectional":
        hidden = (jnp.ones(8), None)
    else:
        hidden = ((jnp.ones(8), None), None)
    by_position = layer(x, hidden)
    by_keyword = layer(x, hidden=hidden)
    for a, b in zip(
        jax.tree.leaves(by_position), jax.tree.leaves(by_keyword), strict=True
    ):
        assert jnp.array_equal(a, b)
    assert not jnp.array_equal(
        jax.tree.leaves(by_position)[0], jax.tree.leaves(layer(x))[0]
    )


def test_to_torch_asks_for_batch_first_and_keeps_the_layout_it_is_given():
    from eqrnn.interop import from_torch, to_torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 8)  # (time, batch, features), PyTorch's default
    stack = from_torch(lstm)
    with pytest.raises(ValueError, match="pass `batch_first=True`") as e:
        to_torch(stack)
    fix = re.search(r"`(to_torch\(stack, batch_first=False\))`", str(e.value))
    assert fix is not None, e.value
    back = eval(fix.group(1), {"to_torch": to_torch, "stack": stack})
    assert back.batch_first is False
    inputs = torch.randn(5, 2, 3)
    with torch.no_grad():
        expected, got = lstm(inputs)[0], back(inputs)[0]
    assert torch.allclose(expected, got, atol=1e-6)
    assert to_torch(stack, batch_first=True).batch_first is True
    with pytest.raises(ValueError, match="`batch_first` is a setting"):
        to_torch(eqrnn.GRUCell(3, 4, key=jr.key(0)), batch_first=True)


def test_truncated_bptt_with_a_loss_fn_returning_only_the_loss_says_what_to_return():
    cell = eqrnn.GRUCell(2, 3, key=jr.key(0))
    optimizer = optax.sgd(1e-2)
    opt_state = optimizer.init(cell)  # pyright: ignore[reportArgumentType]
    sequence = jnp.ones((6, 2))

    def loss_only(model, chunk, hidden):
        return jnp.mean(eqrnn.scan_all_hidden(model, chunk, hidden) ** 2)

    def fixed(model, chunk, hidden):
        hs = eqrnn.scan_all_hidden(model, chunk, hidden)
        return jnp.mean(hs**2), hs[-1]

    args = (optimizer, cell, opt_state, sequence, cell.init_hidden())
    with pytest.raises(TypeError, match=r"must return `\(loss, new_hidden\)`"):
        eqrnn.truncated_bptt(loss_only, *args, chunk_length=3)  # pyright: ignore[reportArgumentType]
    *_, losses = eqrnn.truncated_bptt(fixed, *args, chunk_length=3)
    assert losses.shape == (2,)


def test_dir_shows_only_the_public_names():
    assert "importlib" not in dir(eqrnn)
    assert set(eqrnn.__all__) <= set(dir(eqrnn))


# One cell per family (the registry's first of each).
@pytest.mark.parametrize("cls", FAMILY_REPRESENTATIVES, ids=lambda c: c.__name__)
def test_streaming_is_bit_exact_in_float32_for_step_cells_on_cpu(cls):
    """On the CPU a step-by-step cell projects each step's input inside the loop,
    so a one-step scan computes what each step of the whole sequence computes. A
    linear cell (and the GPU's path) projects the whole sequence in one matmul,
    which may round differently: there the difference is a float32 rounding."""
    rnn = eqrnn.RNN(cls(3, 5, dtype=jnp.float32, key=jr.key(0)))
    xs = jr.normal(jr.key(1), (9, 3), jnp.float32)
    resets = jnp.zeros(9, bool).at[4].set(True)
    step = jax.jit(lambda x, h, r: rnn.step(x, h, reset=r))
    hidden = rnn.init_hidden()
    outputs = []
    for x, r in zip(xs, resets, strict=True):
        out, hidden = step(x, hidden, r)
        outputs.append(out)
    expected, final = rnn.run(xs, resets=resets)
    pairs = [(jnp.stack(outputs), expected)]
    pairs += list(zip(jax.tree.leaves(hidden), jax.tree.leaves(final), strict=True))
    for got, want in pairs:
        if issubclass(cls, eqrnn.AbstractStepCell):
            assert jnp.array_equal(got, want)
        else:
            assert jnp.allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"RNN\.step: `input` must have shape"):
        rnn.step(xs[:2], rnn.init_hidden())


def test_a_built_in_merge_shows_its_name():
    from eqrnn.interop import from_flax

    rngs = flax.Rngs(0)
    layer = flax.Bidirectional(
        flax.RNN(flax.GRUCell(3, 4, rngs=rngs)), flax.RNN(flax.GRUCell(3, 4, rngs=rngs))
    )
    bi = from_flax(layer)
    assert "merge='concat'" in repr(bi)
    assert "merge='sum'" in repr(
        eqrnn.Bidirectional(bi.forward, bi.backward, merge="sum")
    )


@pytest.mark.parametrize("jit", [False, True])
def test_check_finite_raises_its_message_without_a_logged_traceback(jit, caplog):
    cell = eqrnn.GRUCell(2, 3, key=jr.key(0))
    xs = jnp.ones((5, 2)).at[2, 0].set(jnp.nan)

    def run(cell, xs):
        return eqrnn.scan_last(cell, xs, check_finite=True)

    caplog.set_level("DEBUG")
    error = FloatingPointError if not jit else Exception
    with pytest.raises(error, match="first becomes NaN or inf at step 2"):
        jax.block_until_ready((jax.jit(run) if jit else run)(cell, xs))
    assert not [r for r in caplog.records if "callback failed" in r.getMessage()]


def test_to_flax_asks_which_flax_lstm_and_keeps_the_class_it_is_given():
    from eqrnn.interop import from_flax, to_flax

    optimized = flax.OptimizedLSTMCell(3, 4, rngs=flax.Rngs(0))
    cell = from_flax(optimized)
    for model in (cell, eqrnn.RNN(cell)):
        with pytest.raises(ValueError, match="pass `lstm_type=") as e:
            to_flax(model)  # pyright: ignore[reportCallIssue, reportArgumentType]
        fix = re.search(r"`(to_flax\(model, lstm_type=\"optimized\"\))`", str(e.value))
        assert fix is not None, e.value
        back = eval(fix.group(1), {"to_flax": to_flax, "model": model})
        back_cell = back if model is cell else back.cell
        assert type(back_cell) is flax.OptimizedLSTMCell
    assert type(to_flax(cell, lstm_type="plain")) is flax.LSTMCell
    # Cells with one Flax counterpart need no `lstm_type`.
    assert type(to_flax(eqrnn.SimpleCell(3, 4, key=jr.key(0)))) is flax.SimpleCell


@pytest.mark.parametrize("mode", ["associative", "chunked"])
def test_forward_mode_through_a_parallel_linear_cell_runs(mode):
    # The #19 case: jax.jvp through mode="associative" raised JAX's "can't apply
    # forward-mode autodiff (jvp) to a custom_vjp function". It now runs, and
    # agrees with the step-by-step scan.
    cell = eqrnn.MinGRU(3, 4, key=jr.key(0))
    x = jr.normal(jr.key(1), (9, 3))

    def run(x, mode):
        return eqrnn.scan_all_hidden(cell, x, mode=mode)

    tangent = jnp.ones_like(x)
    got = jax.jit(lambda x: jax.jvp(lambda x: run(x, mode), (x,), (tangent,)))(x)
    want = jax.jvp(lambda x: run(x, "sequential"), (x,), (tangent,))
    for g, w in zip(got, want, strict=True):
        assert jnp.allclose(g, w, rtol=1e-12, atol=1e-12)
