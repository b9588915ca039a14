"""The second new-user trial's findings (issue #31), each written the way the user
wrote the mistake, with the jaxtyping hook off (as for every user): no silent result,
a message that names what the user passed, and every fix a message suggests runs."""

import io
import json
import os
import re
import subprocess
import sys
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import torch

import eqrnn


pytestmark = pytest.mark.usefixtures("no_jaxtyping")


def _assert_same_arrays(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _fix(message: str, pattern: str) -> str:
    """The code a message suggests, in backquotes."""
    found = re.search(pattern, message)
    assert found is not None, message
    return found.group(1)


# --- silent results ----------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), 2.7, 300])
def test_pad_sequences_refuses_a_value_the_dtype_cannot_hold_and_the_fix_runs(value):
    sequences = [jnp.array([1, 2, 3], jnp.int8), jnp.array([4], jnp.int8)]
    with pytest.raises(ValueError, match=r"^pad_sequences: `value=") as e:
        eqrnn.pad_sequences(sequences, value=value)
    message = str(e.value)
    assert "int8" in message
    fix = _fix(message, r"`(eqrnn\.pad_sequences\(.*\))`")
    batch, lengths = eval(fix, {"eqrnn": eqrnn, "jnp": jnp, "sequences": sequences})
    assert batch.dtype == jnp.float32
    np.testing.assert_array_equal(batch[1, 1:], np.float32(value))
    np.testing.assert_array_equal(lengths, [3, 1])


def test_pad_sequences_keeps_values_the_dtype_holds():
    ints, _ = eqrnn.pad_sequences([jnp.array([1, 2]), jnp.array([3])], value=-1)
    np.testing.assert_array_equal(ints, [[1, 2], [3, -1]])
    floats, _ = eqrnn.pad_sequences(
        [jnp.array([1.0, 2.0], jnp.float32), jnp.array([3.0], jnp.float32)],
        value=float("nan"),
    )
    assert floats.dtype == jnp.float32 and bool(jnp.isnan(floats[1, 1]))


def _char_rnn():
    vocab, width = 5, 8
    embed = jr.normal(jr.key(1), (vocab, 4), jnp.float32)
    rnn = eqrnn.RNN(eqrnn.GRUCell(4, width, dtype=jnp.float32, key=jr.key(2)))
    head = eqx.nn.Linear(width, vocab, dtype=jnp.float32, key=jr.key(3))
    return embed, rnn, head


def test_generate_returns_what_the_token_sampler_emitted():
    embed, rnn, head = _char_rnn()

    def sample(output, key):
        token = jr.categorical(key, head(output))
        return embed[token], token

    prompt = jnp.array([0, 3, 1])
    _, hidden = rnn.run(embed[prompt[:-1]])  # the docstring's priming
    generate = eqx.filter_jit(
        lambda rnn, first, hidden, key: eqrnn.generate(
            rnn, first, sample, 6, hidden, key=key
        )
    )
    tokens, outputs, final = generate(rnn, embed[prompt[-1]], hidden, jr.key(4))
    assert jnp.issubdtype(tokens.dtype, jnp.integer) and tokens.shape == (6,)
    # The tokens are what `sample` drew: the same loop written out by hand.
    h, x = hidden, embed[prompt[-1]]
    keys = jr.split(jr.key(4), 6)
    for t in range(6):
        cell_key, sample_key = jr.split(keys[t])
        out, h = rnn.step(x, h, key=cell_key)
        x, token = sample(out, sample_key)
        assert int(token) == int(tokens[t])
        np.testing.assert_allclose(out, outputs[t], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h, final, rtol=1e-6, atol=1e-6)
    # Primed: the first output continues the prompt, as running the whole prompt.
    whole = rnn(embed[prompt])
    np.testing.assert_allclose(outputs[0], whole[-1], rtol=1e-6, atol=1e-6)


def test_generate_refuses_a_triple_from_next_input():
    embed, rnn, _ = _char_rnn()
    with pytest.raises(ValueError, match="a pair `\\(input, emitted\\)`"):
        eqrnn.generate(rnn, embed[0], lambda out, key: (embed[0], 1, 2), 3)


# --- poor messages -------------------------------------------------------------------


def test_an_rnn_given_to_rnn_says_it_takes_a_cell_and_the_fix_runs():
    cell = eqrnn.GRUCell(3, 4, key=jr.key(0))
    layer = eqrnn.RNN(cell)
    with pytest.raises(TypeError, match="got an RNN, a layer that runs whole") as e:
        eqrnn.RNN(eqrnn.RNN(cell))(jnp.ones((5, 3)))
    fix = _fix(str(e.value), r"`(eqrnn\.RNN\(layer\.cell\))`")
    out = eval(fix, {"eqrnn": eqrnn, "layer": layer})(jnp.ones((5, 3)))
    assert out.shape == (5, 4)


def test_conv_lstm_with_an_int_input_shape_names_it_and_the_fix_runs():
    with pytest.raises(TypeError, match=r"`input_shape` must be one step's shape") as e:
        eqrnn.ConvLSTMCell(3, 4, kernel_size=3, key=jr.key(0))  # pyright: ignore[reportArgumentType]
    assert "got the int 3" in str(e.value)
    shape = _fix(str(e.value), r"e\.g\. (\(16, 16, 3\))")
    cell = eqrnn.ConvLSTMCell(eval(shape), 4, kernel_size=3, key=jr.key(0))
    assert cell.input_shape == (16, 16, 3)


def test_a_callable_cell_returning_the_wrong_shape_names_both_shapes():
    with pytest.raises(ValueError, match=r"shaped like `hidden` float32\[4\]") as e:
        eqrnn.scan_all_hidden(
            lambda i, h, key=None: jnp.tanh(i),
            jnp.ones((5, 3), jnp.float32),
            jnp.zeros(4, jnp.float32),
        )
    assert "got float32[3]" in str(e.value)


def test_a_flax_style_pair_gets_a_wrap_that_runs():
    def fn(x, h, key=None):  # returns (carry, output), as Flax's cells do
        new = jnp.tanh(h + x.sum())
        return new, new

    inputs, h0 = jnp.ones((5, 3), jnp.float32), jnp.zeros(4, jnp.float32)
    with pytest.raises(ValueError, match=r"a Flax cell's `\(carry, output\)`") as e:
        eqrnn.scan_all_hidden(fn, inputs, h0)
    wrapped = eval(_fix(str(e.value), r"wrap it, e\.g\. `(lambda .*?)`"), {"fn": fn})
    assert eqrnn.scan_all_hidden(wrapped, inputs, h0).shape == (5, 4)


def test_float64_with_x64_off_is_one_clear_error_and_the_fix_runs():
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="jax_enable_x64") as e:
            eqrnn.GRUCell(3, 8, dtype=jnp.float64, key=jr.key(0))
        assert str(e.value).startswith("GRUCell: `dtype=float64`")
        fix = _fix(str(e.value), r"pass `(dtype=jnp\.float32)`")
        cell = eval(
            f"eqrnn.GRUCell(3, 8, {fix}, key=jr.key(0))",
            {"eqrnn": eqrnn, "jnp": jnp, "jr": jr},
        )
        assert cell.weight_ih.dtype == jnp.float32


def test_generate_names_first_input_and_step_names_reset():
    rnn = eqrnn.RNN(eqrnn.GRUCell(3, 4, key=jr.key(0)))
    with pytest.raises(ValueError, match=r"^generate: `first_input` must have shape"):
        eqrnn.generate(rnn, jnp.ones(5), lambda out, key: out[:3], 4)
    with pytest.raises(ValueError, match=r"^RNN.step: `reset` must be one flag") as e:
        rnn.step(jnp.ones(3), rnn.init_hidden(), reset=jnp.array([True]))
    fix = _fix(str(e.value), r"`(jax\.vmap\(.*\)\(inputs, hiddens, resets\))`")
    outputs, _ = eval(
        fix,
        {
            "jax": jax,
            "rnn": rnn,
            "inputs": jnp.ones((2, 3)),
            "hiddens": jnp.zeros((2, 4)),
            "resets": jnp.array([True, False]),
        },
    )
    assert outputs.shape == (2, 4)


def test_a_text_mode_file_is_told_to_open_in_binary_and_the_fix_runs(tmp_path):
    path = tmp_path / "model.eqx"
    rnn = eqrnn.RNN(eqrnn.GRUCell(3, 4, key=jr.key(0)))
    eqrnn.save_checkpoint(path, rnn)
    with open(path) as f, pytest.raises(TypeError, match="opened in text mode") as e:
        eqrnn.load_checkpoint(f, rnn)
    mode = _fix(str(e.value), r"`open\(name, ('rb')\)`")
    with open(path, eval(mode)) as f:
        eqrnn.load_checkpoint(f, rnn)
    with open(tmp_path / "other.eqx", "w") as f, pytest.raises(TypeError, match="'wb'"):
        eqrnn.save_checkpoint(f, rnn)


def test_the_checkpoint_format_is_a_header_line_then_equinox_leaves(tmp_path):
    """What the docs say: one JSON line, then `eqx.tree_serialise_leaves`."""
    path = tmp_path / "model.eqx"
    rnn = eqrnn.RNN(eqrnn.GRUCell(3, 4, key=jr.key(0)))
    eqrnn.save_checkpoint(path, rnn)
    like = eqrnn.RNN(eqrnn.GRUCell(3, 4, key=jr.key(1)))
    with open(path, "rb") as f:
        assert b"tree_serialise_leaves" in f.readline()
        loaded = eqx.tree_deserialise_leaves(f, like)
    _assert_same_arrays(loaded, rnn)


# --- could be better -----------------------------------------------------------------


def test_a_traced_length_past_the_end_names_the_value_and_batch_index():
    cell = eqrnn.GRUCell(3, 4, key=jr.key(0))
    run = jax.jit(jax.vmap(lambda x, n: eqrnn.scan_last(cell, x, length=n)))
    inputs = jnp.ones((3, 5, 3))
    ok = run(inputs, jnp.array([5, 0, 2]))
    assert ok.shape == (3, 4)
    with pytest.raises(Exception, match=r"got 9 at batch index 1\.") as e:
        run(inputs, jnp.array([3, 9, 2])).block_until_ready()
    assert "scan_last: `length` must be in [0, 5]" in str(e.value)
    one = jax.jit(lambda x, n: eqrnn.scan_last(cell, x, length=n))
    with pytest.raises(Exception, match=r"got -1\."):
        one(inputs[0], -1).block_until_ready()
    # Differentiable through the check, and a valid length costs no callback.
    grad = jax.grad(lambda x, n: eqrnn.scan_last(cell, x, length=n).sum())
    assert jax.jit(grad)(inputs[0], 3).shape == (5, 3)


def test_the_vmap_hint_only_where_a_batch_was_passed():
    cell = eqrnn.GRUCell(3, 4, key=jr.key(0))
    x = jnp.ones((5, 3))
    with pytest.raises(ValueError, match="`length` is keyword-only") as e:
        eqrnn.scan_last(cell, x, 5)  # pyright: ignore[reportArgumentType]
    assert "vmap" not in str(e.value)
    assert _fix(str(e.value), r"`(length=5)`") == "length=5"
    assert eqrnn.scan_last(cell, x, length=5).shape == (4,)
    with pytest.raises(ValueError, match=r"shaped like `cell\.init_hidden\(\)`") as e:
        eqrnn.scan_last(cell, x, hidden=0.0)  # pyright: ignore[reportArgumentType]
    assert "vmap" not in str(e.value)
    with pytest.raises(ValueError, match="batch the states with the inputs") as e:
        eqrnn.scan_last(cell, x, hidden=jnp.zeros((2, 4)))
    fix = _fix(str(e.value), r"`(jax\.vmap\(.*\)\(inputs, hiddens\))`")
    out = eval(
        fix,
        {
            "jax": jax,
            "eqrnn": eqrnn,
            "cell": cell,
            "inputs": jnp.ones((2, 5, 3)),
            "hiddens": jnp.zeros((2, 4)),
        },
    )
    assert out.shape == (2, 4)


@pytest.mark.parametrize("reduce", [eqrnn.masked_mean, eqrnn.masked_sum])
def test_masked_reductions_name_themselves(reduce):
    name = reduce.__name__
    with pytest.raises(ValueError, match=rf"^{name}: `length` must be in \[0, 5\]"):
        reduce(jnp.ones((5, 3)), 9)
    with pytest.raises(ValueError, match=rf"^{name}: `length` must be a scalar"):
        reduce(jnp.ones((5, 3)), jnp.array([1, 2]))


def test_an_int_key_names_the_argument_and_the_fix_runs():
    with pytest.raises(TypeError, match=r"^GRUCell: `key` must be a JAX random key"):
        eqrnn.GRUCell(3, 4, key=0)  # pyright: ignore[reportArgumentType]
    cell = eqrnn.GRUCell(3, 4, key=jr.key(0))
    with pytest.raises(TypeError, match=r"^scan_last: `key` must be a JAX") as e:
        eqrnn.scan_last(cell, jnp.ones((5, 3)), key=0)  # pyright: ignore[reportArgumentType]
    key = eval(_fix(str(e.value), r"e\.g\. `(jax\.random\.key\(0\))`"), {"jax": jax})
    assert eqrnn.scan_last(cell, jnp.ones((5, 3)), key=key).shape == (4,)
    assert eqrnn.GRUCell(3, 4, key=jr.PRNGKey(0)).hidden_size == 4  # raw keys too


def test_a_checkpoint_loads_into_a_model_differing_only_in_speed_settings(tmp_path):
    path = tmp_path / "model.eqx"
    cell = eqrnn.GRUCell(3, 4, key=jr.key(0))
    eqrnn.save_checkpoint(path, eqrnn.RNN(cell))
    like = eqrnn.RNN(
        eqrnn.GRUCell(3, 4, key=jr.key(1)),
        unroll=4,
        checkpoint=True,
        mode="newton",
        check_finite=True,
    )
    loaded = eqrnn.load_checkpoint(path, like)
    assert loaded.unroll == 4 and loaded.mode == eqrnn.Newton()  # `like`'s settings
    _assert_same_arrays(loaded.cell, cell)
    # What the numbers depend on is still compared.
    with pytest.raises(ValueError, match="reverse"):
        eqrnn.load_checkpoint(path, eqrnn.RNN(cell, reverse=True))


def test_a_version_2_checkpoint_with_speed_settings_still_loads(tmp_path):
    path = tmp_path / "old.eqx"
    rnn = eqrnn.RNN(eqrnn.GRUCell(3, 4, key=jr.key(0)))
    eqrnn.save_checkpoint(path, rnn)
    header, data = path.read_bytes().split(b"\n", 1)
    # The header as version 2 wrote it: the speed settings in the configuration.
    fields = json.loads(header)
    fields["version"] = 2
    fields["configuration"] += [[".unroll", "'auto'"], [".mode", "'auto'"]]
    old = json.dumps(fields)
    path.write_bytes(old.encode() + b"\n" + data)
    loaded = eqrnn.load_checkpoint(path, eqrnn.RNN(rnn.cell, unroll=2))
    assert loaded.unroll == 2


def test_a_model_holding_a_typed_key_saves_and_loads(tmp_path):
    class Model(eqx.Module):
        rnn: eqrnn.RNN
        key: jax.Array

    path = tmp_path / "model.eqx"
    model = Model(eqrnn.RNN(eqrnn.GRUCell(3, 4, key=jr.key(0))), jr.key(7))
    eqrnn.save_checkpoint(path, model)
    like = Model(eqrnn.RNN(eqrnn.GRUCell(3, 4, key=jr.key(1))), jr.key(0))
    loaded = eqrnn.load_checkpoint(path, like)
    np.testing.assert_array_equal(jr.key_data(loaded.key), jr.key_data(model.key))
    assert jr.key_impl(loaded.key) == jr.key_impl(model.key)
    np.testing.assert_array_equal(
        jr.normal(loaded.key, (3,)), jr.normal(model.key, (3,))
    )
    with pytest.raises(ValueError, match="key"):  # a different impl is a mismatch
        eqrnn.load_checkpoint(path, Model(like.rnn, jr.key(0, impl="rbg")))


@pytest.mark.parametrize(
    ("mode", "bidirectional"), [("LSTM", True), ("GRU", False), ("RNN", True)]
)
def test_torch_initial_states_convert_both_ways(mode, bidirectional):
    torch.manual_seed(0)
    module = getattr(torch.nn, mode)(
        3, 8, num_layers=2, bidirectional=bidirectional, batch_first=True
    ).double()
    stack = eqrnn.interop.from_torch(module)
    rows = 2 * (2 if bidirectional else 1)
    h0, c0 = torch.randn(rows, 5, 8).double(), torch.randn(rows, 5, 8).double()
    x = torch.randn(5, 7, 3).double()
    lstm = mode == "LSTM"
    expected, state = module(x, (h0, c0) if lstm else h0)
    hidden = eqrnn.interop.hidden_from_torch(stack, h0, c0 if lstm else None)
    outputs, finals = jax.jit(jax.vmap(stack))(jnp.asarray(x.numpy()), hidden)
    np.testing.assert_allclose(outputs, expected.detach().numpy(), rtol=1e-10)
    back = eqrnn.interop.hidden_to_torch(stack, finals)
    for got, want in zip(
        back if lstm else (back,), state if lstm else (state,), strict=True
    ):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10)


def test_torch_initial_states_are_checked():
    stack = eqrnn.interop.from_torch(torch.nn.LSTM(3, 8, num_layers=2).double())
    h0 = torch.zeros(2, 8).double()
    with pytest.raises(ValueError, match="pass `c0` too"):
        eqrnn.interop.hidden_from_torch(stack, h0)
    with pytest.raises(ValueError, match=r"num_layers \* num_directions = 2"):
        eqrnn.interop.hidden_from_torch(stack, h0[:1], h0[:1])
    with pytest.raises(ValueError, match=r"the cell's shape \(8,\)"):
        eqrnn.interop.hidden_from_torch(stack, h0[:, :4], h0[:, :4])
    unbatched = eqrnn.interop.hidden_from_torch(stack, h0, h0)
    _, finals = stack(jnp.ones((4, 3)), unbatched)
    h_n, c_n = eqrnn.interop.hidden_to_torch(stack, finals)
    assert h_n.shape == c_n.shape == (2, 8)


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.GRU(3, 4))
        self.head = torch.nn.Linear(4, 2)


def test_from_torch_of_a_whole_model_points_at_the_submodule_and_the_fix_runs():
    model = _Model()
    with pytest.raises(TypeError, match=r"It holds a GRU at `encoder\.0`") as e:
        eqrnn.interop.from_torch(model)
    fix = _fix(str(e.value), r"`(from_torch\(.*\))`")
    stack = eval(fix, {"from_torch": eqrnn.interop.from_torch, "model": model})
    assert stack.layers[0].init_hidden().shape == (4,)


def test_from_torch_of_a_whole_state_dict_suggests_the_prefix_and_the_fix_runs():
    state_dict = _Model().state_dict()
    with pytest.raises(ValueError, match=r"pass `prefix='encoder\.0\.'`") as e:
        eqrnn.interop.from_torch(state_dict, mode="GRU")
    prefix = eval(_fix(str(e.value), r"`prefix=('.*?')`"))
    stack = eqrnn.interop.from_torch(state_dict, mode="GRU", prefix=prefix)
    assert isinstance(stack, eqrnn.StackedRNN)
    assert stack.init_hidden()[0].shape == (4,)


# --- the first hour ------------------------------------------------------------------


def test_to_keras_works_without_keras_backend_set():
    """A fresh process with no KERAS_BACKEND and no TensorFlow: `to_keras` picks the
    JAX backend, and `from_keras`'s documented recipe imports keras."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    code = (
        "import jax, eqrnn\n"
        "cell = eqrnn.ConvLSTMCell((6, 2), 3, kernel_size=3, key=jax.random.key(0))\n"
        "layer = eqrnn.interop.to_keras(cell)\n"
        "import keras\n"
        "assert keras.backend.backend() == 'jax', keras.backend.backend()\n"
        "back = eqrnn.interop.from_keras(layer, input_shape=(6, 2))\n"
        "assert (back.cell.weight_ih == cell.weight_ih).all()\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)


def test_public_signatures_carry_shapes():
    """No public argument or return is a bare `Any` (issue #31 found three)."""
    import inspect

    for fn in (eqrnn.generate, eqrnn.load_checkpoint, eqrnn.pad_sequences):
        signature = inspect.signature(fn)
        annotations = [p.annotation for p in signature.parameters.values()]
        for annotation in [*annotations, signature.return_annotation]:
            assert annotation is not inspect.Parameter.empty, fn.__name__
            assert annotation is not Any, (fn.__name__, annotation)


def test_load_checkpoint_reads_a_file_object(tmp_path):
    rnn = eqrnn.RNN(eqrnn.GRUCell(3, 4, key=jr.key(0)))
    buffer = io.BytesIO()
    eqrnn.save_checkpoint(buffer, rnn)
    buffer.seek(0)
    loaded = eqrnn.load_checkpoint(buffer, rnn)
    _assert_same_arrays(loaded, rnn)
