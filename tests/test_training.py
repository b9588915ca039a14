"""Truncated BPTT, streaming inference, data-parallel training and checkpoints."""

import io
import os
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import eqrnn

from .helpers import assert_tree_allclose, random_params


class Regressor(eqx.Module):
    cell: eqrnn.GRUCell
    readout: jax.Array

    def __init__(self, key):
        k1, k2, k3 = jr.split(key, 3)
        self.cell = random_params(eqrnn.GRUCell(2, 4, key=k1), k2)
        self.readout = jr.normal(k3, (4,))


def loss_fn(model, chunk, hidden):
    xs, ys = chunk
    hs = eqrnn.scan_all_hidden(model.cell, xs, hidden)
    return jnp.mean((hs @ model.readout - ys) ** 2), hs[-1]


def _data(key, num_steps):
    k1, k2 = jr.split(key)
    return jr.normal(k1, (num_steps, 2)), jr.normal(k2, (num_steps,))


@eqx.filter_jit
def _tbptt(model, opt_state, sequence, hidden, learning_rate, chunk_length):
    return eqrnn.truncated_bptt(
        loss_fn,
        optax.sgd(learning_rate),
        model,
        opt_state,
        sequence,
        hidden,
        chunk_length=chunk_length,
    )


def _opt_state(model):
    return optax.sgd(0.1).init(eqx.filter(model, eqx.is_inexact_array))


def test_tbptt_forward_pass_equals_one_full_scan(getkey):
    model = Regressor(getkey())
    xs, ys = _data(getkey(), 10)
    h0 = model.cell.init_hidden()
    _, _, final, losses = _tbptt(model, _opt_state(model), (xs, ys), h0, 0.0, 4)
    assert_tree_allclose(final, eqrnn.scan_last(model.cell, xs))
    hs = eqrnn.scan_all_hidden(model.cell, xs)
    starts = [h0, hs[3], hs[7]]
    expected = [
        loss_fn(model, (xs[a:b], ys[a:b]), h)[0]
        for (a, b), h in zip([(0, 4), (4, 8), (8, 10)], starts, strict=True)
    ]
    assert_tree_allclose(losses, jnp.stack(expected))


def test_tbptt_updates_equal_grad_of_each_chunk_from_the_carried_state(getkey):
    model = Regressor(getkey())
    xs, ys = _data(getkey(), 10)
    hidden = model.cell.init_hidden()
    trained, _, final, _ = _tbptt(model, _opt_state(model), (xs, ys), hidden, 0.1, 4)
    # The reference: a Python loop, one jax.grad per chunk, gradient stopped at the
    # chunk boundary because `hidden` is an argument, not a function of the model.
    ref = model
    for a, b in [(0, 4), (4, 8), (8, 10)]:
        grads, new_hidden = eqx.filter_grad(loss_fn, has_aux=True)(
            ref, (xs[a:b], ys[a:b]), hidden
        )
        ref = jax.tree.map(lambda p, g: p - 0.1 * g, ref, grads)
        hidden = new_hidden
    assert_tree_allclose(trained, ref)
    assert_tree_allclose(final, hidden)


def test_tbptt_memory_grows_with_the_chunk_not_the_sequence(getkey):
    model = Regressor(getkey())

    def temp_bytes(num_steps):
        sequence = _data(getkey(), num_steps)
        compiled = (
            jax.jit(
                lambda m, s: eqrnn.truncated_bptt(
                    loss_fn,
                    optax.sgd(0.1),
                    m,
                    _opt_state(model),
                    s,
                    model.cell.init_hidden(),
                    chunk_length=16,
                )
            )
            .lower(model, sequence)
            .compile()
        )
        analysis = compiled.memory_analysis()
        assert analysis is not None
        return analysis.temp_size_in_bytes

    short, long = temp_bytes(64), temp_bytes(1024)
    # 16x the sequence; the per-chunk work is the same (losses add 8 bytes a chunk).
    assert long < 1.5 * short + 4096, (short, long)


@pytest.mark.parametrize(
    "chunk_length, error, match",
    [
        (0, ValueError, "`chunk_length` must be positive, got 0"),
        (-3, ValueError, "`chunk_length` must be positive, got -3"),
        (11, ValueError, r"`chunk_length` \(11\) is longer than the sequence"),
        (2.0, TypeError, "`chunk_length` must be an int"),
    ],
)
def test_tbptt_rejects_bad_chunk_lengths(
    chunk_length, error, match, getkey, no_jaxtyping
):
    model = Regressor(getkey())
    with pytest.raises(error, match=match):
        eqrnn.truncated_bptt(
            loss_fn,
            optax.sgd(0.1),
            model,
            _opt_state(model),
            _data(getkey(), 10),
            model.cell.init_hidden(),
            chunk_length=chunk_length,
        )


def test_tbptt_rejects_sequences_of_different_lengths(getkey):
    model = Regressor(getkey())
    with pytest.raises(ValueError, match="same length on `time_axis=0`"):
        eqrnn.truncated_bptt(
            loss_fn,
            optax.sgd(0.1),
            model,
            _opt_state(model),
            (jnp.ones((10, 2)), jnp.ones(9)),
            model.cell.init_hidden(),
            chunk_length=2,
        )


# --- streaming ---------------------------------------------------------------


def test_streaming_one_step_at_a_time_equals_the_scan_with_resets(getkey):
    rnn = eqrnn.RNN(random_params(eqrnn.LSTMCell(2, 3, key=getkey()), getkey()))
    xs = jr.normal(getkey(), (7, 2))
    resets = jnp.array([False, False, True, False, False, True, False])
    step = eqx.filter_jit(lambda rnn, x, h, r: rnn.step(x, h, reset=r))
    hidden = rnn.init_hidden()
    outputs, states = [], []
    for x, r in zip(xs, resets, strict=True):
        out, hidden = step(rnn, x, hidden, r)
        outputs.append(out)
        states.append(hidden)
    expected = eqrnn.scan_all_hidden(rnn.cell, xs, resets=resets)
    assert_tree_allclose(jax.tree.map(lambda *a: jnp.stack(a), *states), expected)
    assert_tree_allclose(jnp.stack(outputs), rnn(xs, resets=resets))


def test_streaming_a_stack_equals_the_stack_in_inference_mode(getkey):
    stack = eqrnn.StackedRNN(
        [
            eqrnn.RNN(random_params(eqrnn.GRUCell(2, 3, key=getkey()), getkey())),
            eqrnn.RNN(random_params(eqrnn.LSTMCell(3, 3, key=getkey()), getkey())),
        ],
        dropout=0.5,
        residual=True,
    )
    xs = jr.normal(getkey(), (5, 2))
    hidden = stack.init_hidden()
    outputs = []
    for x in xs:
        out, hidden = stack.step(x, hidden)
        outputs.append(out)
    expected, finals = stack(xs, inference=True)
    assert_tree_allclose(jnp.stack(outputs), expected)
    assert_tree_allclose(hidden, finals)


def test_a_bidirectional_or_reversed_layer_cannot_stream(getkey):
    cell = eqrnn.GRUCell(2, 3, key=getkey())
    with pytest.raises(ValueError, match="cannot be streamed"):
        eqrnn.RNN(cell, reverse=True).step(jnp.ones(2), cell.init_hidden())
    stack = eqrnn.StackedRNN([eqrnn.Bidirectional(eqrnn.RNN(cell), eqrnn.RNN(cell))])
    with pytest.raises(TypeError, match="layer 0 is a Bidirectional"):
        stack.init_hidden()


# --- checkpoints -------------------------------------------------------------


def _train(model, opt_state, optimizer, data, steps):
    @eqx.filter_jit
    def step(model, opt_state, xs, ys):
        def loss(model):
            return loss_fn(model, (xs, ys), model.cell.init_hidden())[0]

        value, grads = eqx.filter_value_and_grad(loss)(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, value

    for _ in range(steps):
        model, opt_state, _ = step(model, opt_state, *data)
    return model, opt_state


@pytest.mark.standard_promotion
def test_resuming_from_a_checkpoint_equals_training_straight_through(getkey, tmp_path):
    optimizer = optax.adam(1e-2)
    model = Regressor(getkey())
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    data = _data(getkey(), 6)
    straight, _ = _train(model, opt_state, optimizer, data, 4)

    half, half_state = _train(model, opt_state, optimizer, data, 2)
    eqrnn.save_checkpoint(tmp_path / "ckpt.eqx", (half, half_state, 2))
    fresh = Regressor(getkey())
    fresh_state = optimizer.init(eqx.filter(fresh, eqx.is_inexact_array))
    loaded, loaded_state, step = eqrnn.load_checkpoint(
        tmp_path / "ckpt.eqx", (fresh, fresh_state, 0)
    )
    assert step == 2
    resumed, _ = _train(loaded, loaded_state, optimizer, data, 2)
    assert_tree_allclose(resumed, straight, rtol=0, atol=0)


def test_loading_into_a_different_model_names_the_mismatch(getkey):
    buffer = io.BytesIO()
    eqrnn.save_checkpoint(buffer, eqrnn.GRUCell(2, 4, key=getkey()))
    other = eqrnn.GRUCell(2, 5, key=getkey())
    buffer.seek(0)
    with pytest.raises(
        ValueError, match=r"leaf 0 is `\.weight_ih` \(float64\[12, 2\]\)"
    ):
        eqrnn.load_checkpoint(buffer, other)
    buffer.seek(0)
    with pytest.raises(ValueError, match="leaf 0 is"):
        eqrnn.load_checkpoint(buffer, eqrnn.LSTMCell(2, 4, key=getkey()))


def test_corrupt_or_foreign_checkpoints_are_rejected(getkey, tmp_path):
    cell = eqrnn.GRUCell(2, 4, key=getkey())
    path = tmp_path / "cell.eqx"
    eqrnn.save_checkpoint(path, cell)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        eqrnn.load_checkpoint(path, cell)
    path.write_bytes(b"\x93NUMPY not a checkpoint")
    with pytest.raises(ValueError, match="is not an eqrnn checkpoint"):
        eqrnn.load_checkpoint(path, cell)


# --- data parallelism --------------------------------------------------------

_SHARDED_SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx, jax.numpy as jnp, jax.random as jr, numpy as np, optax
    import eqrnn

    assert len(jax.devices()) == 8, jax.devices()
    cell = eqrnn.LSTMCell(3, 5, key=jr.key(0))
    xs = jr.normal(jr.key(1), (16, 6, 3))
    lengths = jnp.arange(16) % 6 + 1
    optimizer = optax.adam(1e-2)

    @eqx.filter_jit
    def train_step(cell, opt_state, xs, lengths):
        def loss(cell):
            hs, _ = jax.vmap(
                lambda x, n: eqrnn.scan_all_hidden(cell, x, length=n)
            )(xs, lengths)
            return jnp.mean(hs**2)

        value, grads = eqx.filter_value_and_grad(loss)(cell)
        params = eqx.filter(cell, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(cell, updates), opt_state, value

    def run(cell, xs, lengths, devices):
        batch, replicated = eqrnn.data_parallel_shardings(devices)
        cell = eqx.filter_shard(cell, replicated)
        opt_state = eqx.filter_shard(
            optimizer.init(eqx.filter(cell, eqx.is_inexact_array)), replicated
        )
        xs, lengths = eqrnn.shard_batch((xs, lengths), batch)
        values = []
        for _ in range(3):
            cell, opt_state, value = train_step(cell, opt_state, xs, lengths)
            values.append(value)
        return cell, jnp.stack(values), xs

    sharded, loss8, xs8 = run(cell, xs, lengths, jax.devices())
    assert len(xs8.sharding.device_set) == 8
    single, loss1, _ = run(cell, xs, lengths, jax.devices()[:1])
    np.testing.assert_allclose(loss8, loss1, rtol=1e-6, atol=1e-12)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
        if eqx.is_array(a):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    try:
        eqrnn.shard_batch(jnp.ones((12, 3)), eqrnn.data_parallel_shardings()[0])
    except ValueError as e:
        assert "a batch of 12 does not divide over 8 devices" in str(e), e
    else:
        raise AssertionError("an uneven batch was accepted")
    print("OK")
    """
)


def test_data_parallel_training_on_8_devices_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_shard_batch_rejects_an_uneven_batch():
    batch, _ = eqrnn.data_parallel_shardings(jax.devices()[:1])
    # One device divides everything; a scalar has no batch axis.
    with pytest.raises(ValueError, match="does not divide over 1 devices"):
        eqrnn.shard_batch(jnp.ones(()), batch)
    np.testing.assert_array_equal(eqrnn.shard_batch(jnp.ones(3), batch), jnp.ones(3))


def test_a_differently_configured_model_is_refused_naming_the_setting(getkey):
    key = getkey()
    cases = [
        (
            eqrnn.SimpleCell(2, 4, key=key),
            eqrnn.SimpleCell(2, 4, activation_fn=jax.nn.relu, key=key),
            r"`\.activation_fn` is jax\.numpy\.tanh in the checkpoint but "
            r"`\.activation_fn` is .*relu in `like`",
        ),
        (
            eqrnn.RNN(eqrnn.GRUCell(2, 4, key=key)),
            eqrnn.RNN(eqrnn.GRUCell(2, 4, key=key), reverse=True),
            r"`\.reverse` is False in the checkpoint but `\.reverse` is True",
        ),
    ]
    for saved, like, message in cases:
        buffer = io.BytesIO()
        eqrnn.save_checkpoint(buffer, saved)
        buffer.seek(0)
        with pytest.raises(ValueError, match="configuration of `like`: " + message):
            eqrnn.load_checkpoint(buffer, like)


def test_a_different_optimiser_is_named_by_its_state(getkey):
    cell = eqrnn.GRUCell(2, 4, key=getkey())
    params = eqx.filter(cell, eqx.is_inexact_array)
    buffer = io.BytesIO()
    eqrnn.save_checkpoint(buffer, (cell, optax.adam(1e-3).init(params)))
    buffer.seek(0)
    sgd = optax.sgd(1e-3, momentum=0.9).init(params)
    with pytest.raises(
        ValueError,
        match=r"`\[1\]\[0\]` is ScaleByAdamState in the checkpoint but "
        r"`\[1\]\[0\]` is TraceState in `like`",
    ):
        eqrnn.load_checkpoint(buffer, (cell, sgd))


def test_a_flipped_byte_anywhere_in_the_arrays_is_refused(getkey, tmp_path):
    cell = eqrnn.GRUCell(2, 4, key=getkey())
    path = tmp_path / "cell.eqx"
    eqrnn.save_checkpoint(path, cell)
    data = path.read_bytes()
    start = data.index(b"\n") + 1
    for offset in (start, (start + len(data)) // 2, len(data) - 1):
        corrupt = bytearray(data)
        corrupt[offset] ^= 0x40
        path.write_bytes(bytes(corrupt))
        with pytest.raises(ValueError, match="do not match the checksum"):
            eqrnn.load_checkpoint(path, cell)


_SAVE_FOREVER = textwrap.dedent(
    """
    import sys
    import jax.numpy as jnp
    import eqrnn

    i = 0
    while True:
        i += 1
        # 8 MB per save, so that a kill often lands inside one.
        eqrnn.save_checkpoint(
            sys.argv[1], {"step": jnp.full((2_000_000,), i, jnp.float32)}
        )
        print(i, flush=True)
    """
)


def test_a_process_killed_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    """`kill -9` at random moments of a save loop: what is left always loads, and
    holds one save's values throughout (the previous checkpoint or the new one)."""
    path = tmp_path / "ckpt.eqx"
    like = {"step": jnp.zeros((2_000_000,), jnp.float32)}
    rng = np.random.default_rng(0)
    for _ in range(3):
        with subprocess.Popen(
            [sys.executable, "-c", _SAVE_FOREVER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdout is not None
            process.stdout.readline()  # one save has completed
            time.sleep(rng.uniform(0.0, 0.3))
            process.kill()
        loaded = eqrnn.load_checkpoint(path, like)["step"]
        assert loaded[0] >= 1 and bool(jnp.all(loaded == loaded[0]))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    # A killed save may leave its temporary file; never a half-written target.
    assert all(name.startswith(f".{path.name}.") for name in leftovers), leftovers
