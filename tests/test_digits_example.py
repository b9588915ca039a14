"""`examples/digits.py` (the Quickstart's demo): it learns the digits, and writes a plot
and a loadable checkpoint. Its functions are imported from the script's path; its
command line runs in this process and as `python examples/digits.py`."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax.random as jr
import optax
import pytest

import eqrnn


ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "examples" / "digits.py"


# The demo trains with optax's Adam (see conftest).
pytestmark = pytest.mark.standard_promotion


def _load_digits_script():
    spec = importlib.util.spec_from_file_location("digits", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


digits = _load_digits_script()


def test_digits_are_sequences_of_rows_with_a_fixed_split():
    x_train, y_train, x_test, y_test = digits.load_digits(0)
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8)
    assert x_train.min() >= 0 and x_train.max() <= 1
    assert set(y_train.tolist()) == set(range(10))
    again = digits.load_digits(0)
    assert (again[3] == y_test).all()


def test_demo_learns_and_writes_a_plot_and_a_checkpoint(tmp_path):
    result = digits.run_demo(
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
    like_model = digits.DigitClassifier("gru", 16, key=jr.key(1))
    like_state = optax.adam(1e-3).init(eqx.filter(like_model, eqx.is_inexact_array))
    model, _, steps = eqrnn.load_checkpoint(
        tmp_path / "model.eqx", (like_model, like_state, 0)
    )
    assert steps == 120
    assert isinstance(model, digits.DigitClassifier)


def test_hidden_state_picture_says_what_it_shows():
    # A new user's complaint: about a hundred overlapping trajectories in ten colours
    # and no legend, so which colour is which digit, and what are the dots?
    import matplotlib.pyplot as plt

    _, _, x_test, y_test = digits.load_digits(0)
    model = digits.DigitClassifier("gru", 8, key=jr.key(0))
    fig = digits.plot_hidden_states(model, x_test[:120], y_test[:120])
    try:
        paths = fig.axes[0]
        # One path per digit (their mean), not one per image.
        drawn = [line for line in paths.get_lines() if len(line.get_xdata()) > 1]
        present = sorted(set(y_test[:120].tolist()))
        assert len(drawn) == len(present) == 10
        assert all(len(line.get_xdata()) == 9 for line in drawn)  # start + 8 rows
        # A legend names each colour's digit and says what the marks are.
        legend = paths.get_legend()
        assert legend is not None, "the trajectories have no legend"
        entries = [text.get_text() for text in legend.get_texts()]
        for digit, line in zip(present, drawn, strict=True):
            (entry,) = [e for e in entries if e.split()[0] == str(digit)]
            assert line.get_label() == entry
        assert "one image's final state" in entries
        assert any(e.startswith("start") for e in entries)
        # Each path's end carries its digit, in the path's colour.
        labels = {t.get_text(): t.get_color() for t in paths.texts}
        for digit, line in zip(present, drawn, strict=True):
            assert labels[str(digit)] == line.get_color()
        # The final state of each image is a dot, coloured by its digit.
        dots = sum(len(c.get_offsets()) for c in paths.collections) - 1  # less start
        assert dots == 120
        # A caption line says what the panels show.
        (caption,) = fig.texts
        assert "final hidden states of 120 test images" in caption.get_text()
        assert "mean path" in caption.get_text()
    finally:
        plt.close(fig)


def test_demo_rejects_an_unknown_cell(tmp_path):
    with pytest.raises(ValueError, match="`cell` must be one of"):
        digits.run_demo(cell="transformer", out_dir=tmp_path)


def test_digits_command_prints_the_accuracy_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "run"
    status = digits.main(["--steps", "20", "--hidden-size", "8", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "Held-out accuracy:" in printed and "360 test images" in printed
    assert (out / "hidden_states.png").exists() and (out / "model.eqx").exists()


def test_digits_script_runs_from_the_repository_root(tmp_path):
    # The Quickstart's command, at a tiny size: `python examples/digits.py`.
    out = tmp_path / "run"
    argv = ["examples/digits.py", "--steps", "10", "--hidden-size", "4"]
    done = subprocess.run(
        [sys.executable, *argv, "--cell", "mgu", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "Training a MGU (hidden size 4) on scikit-learn's handwritten digits, one "
        "8-pixel row per time step..."
    )
    assert lines[1].startswith("Held-out accuracy: ") and "360 test images" in lines[1]
    assert lines[2:] == [
        f"Hidden-state trajectories: {out / 'hidden_states.png'}",
        f"Checkpoint (model, optimiser state, step): {out / 'model.eqx'}",
    ]
    assert "step   10/10" in done.stderr  # the progress bar


def test_the_package_holds_no_demo_bench_or_command_line():
    # The package holds the library only (DESIGN.md section 6).
    for module in ("eqrnn._demo", "eqrnn._cli", "eqrnn._bench", "eqrnn.__main__"):
        assert importlib.util.find_spec(module) is None, module
