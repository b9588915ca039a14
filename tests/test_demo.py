"""`eqrnn demo`: it learns the digits, and writes a plot and a loadable checkpoint."""

import equinox as eqx
import jax.random as jr
import optax
import pytest

import eqrnn
from eqrnn._demo import DigitClassifier, load_digits, run_demo


def test_digits_are_sequences_of_rows_with_a_fixed_split():
    x_train, y_train, x_test, y_test = load_digits(0)
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8)
    assert x_train.min() >= 0 and x_train.max() <= 1
    assert set(y_train.tolist()) == set(range(10))
    again = load_digits(0)
    assert (again[3] == y_test).all()


def test_demo_learns_and_writes_a_plot_and_a_checkpoint(tmp_path):
    result = run_demo(
        cell="gru",
        hidden_size=16,
        steps=120,
        learning_rate=1e-2,
        out_dir=tmp_path,
        progress=False,
    )
    # Chance is 10%; 120 steps of a tiny GRU already get well past it.
    assert result["test_accuracy"] > 0.5, result
    plot = tmp_path / "hidden_states.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    like_model = DigitClassifier("gru", 16, key=jr.key(1))
    like_state = optax.adam(1e-3).init(eqx.filter(like_model, eqx.is_inexact_array))
    model, _, steps = eqrnn.load_checkpoint(
        tmp_path / "model.eqx", (like_model, like_state, 0)
    )
    assert steps == 120
    assert isinstance(model, DigitClassifier)


def test_demo_rejects_an_unknown_cell(tmp_path):
    with pytest.raises(ValueError, match="`cell` must be one of"):
        run_demo(cell="transformer", out_dir=tmp_path)


def test_eqrnn_demo_command_prints_the_accuracy_and_writes_its_files(tmp_path, capsys):
    from eqrnn._cli import main

    out = tmp_path / "run"
    status = main(["demo", "--steps", "20", "--hidden-size", "8", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "Held-out accuracy:" in printed and "360 test images" in printed
    assert (out / "hidden_states.png").exists() and (out / "model.eqx").exists()
