"""`examples/uea.py`: it finds the classification data sets aeon ships, refuses any
other name without downloading, trains on a variable-length set, and its command line
prints the test accuracy. Its functions are imported from the script's path."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import eqrnn

from .registry import ALL_CELLS


ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "examples" / "uea.py"


# The example trains with optax's AdamW (see conftest).
pytestmark = pytest.mark.standard_promotion


def _load_uea_script():
    spec = importlib.util.spec_from_file_location("uea", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


uea = _load_uea_script()


def test_lists_the_classification_sets_aeon_ships_and_no_regression_set():
    names = uea.available_datasets()
    for name in ("JapaneseVowels", "BasicMotions", "GunPoint", "UnitTest"):
        assert name in names
    assert "Covid3Month" not in names  # a regression set (@targetLabel)


def test_cell_choices_are_every_vector_cell_eqrnn_exports():
    # The registry is the tests' one list of cells.
    assert set(uea.CELLS.values()) == set(ALL_CELLS)
    assert uea.CELLS["layernorm-lstm"] is eqrnn.LayerNormLSTMCell
    assert uea.DEFAULT_CELL in uea.CELLS


def test_an_unknown_name_is_refused_with_the_shipped_sets_and_a_command(capsys):
    status = uea.main(["--dataset", "PLAID", "--steps", "1"])
    assert status == 2
    err = capsys.readouterr().err
    assert "unknown data set 'PLAID'" in err and "never downloads" in err
    assert "JapaneseVowels" in err and "GunPoint" in err
    assert "python examples/uea.py --dataset JapaneseVowels" in err


def test_a_mode_the_cell_lacks_is_refused_before_loading():
    with pytest.raises(ValueError, match=r"the cells that take it: .*mingru"):
        uea.run("JapaneseVowels", cell="gru", mode="associative")


def test_variable_lengths_are_padded_and_normalised_with_training_statistics():
    x_train, _, x_test, _, classes = uea.load_dataset("JapaneseVowels")
    assert len(x_train) == 270 and len(x_test) == 370 and len(classes) == 9
    assert {s.shape[1] for s in x_train} == {12}
    assert len({len(s) for s in x_train}) > 1
    xs, lengths, xs_test, _ = uea.prepare(x_train, x_test)
    assert xs.shape[1] == xs_test.shape[1] == max(len(s) for s in x_train + x_test)
    assert [int(n) for n in lengths] == [len(s) for s in x_train]
    mask = jax.vmap(eqrnn.sequence_mask, in_axes=(0, None))
    valid = np.asarray(mask(lengths, xs.shape[1]))
    steps = np.asarray(xs)[valid]
    np.testing.assert_allclose(steps.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(steps.std(0), 1, atol=1e-3)


def test_nearest_neighbour_baseline_on_a_toy_split():
    train = [np.zeros((4, 1)), np.ones((4, 1))]
    test = [np.full((4, 1), 0.2), np.full((6, 1), 0.9)]  # lengths differ: resampled
    labels = np.array([0, 1])
    assert uea.nearest_neighbour_accuracy(train, labels, test, labels) == 1.0


def test_run_trains_on_a_variable_length_set_for_a_few_steps():
    result = uea.run(
        "JapaneseVowels", hidden_size=8, steps=3, seeds=(0, 1), progress=False
    )
    assert result["classes"] == 9 and result["length_max"] == 29
    assert 0.9 < result["one_nn_euclidean"] < 1.0
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    for r in result["runs"]:
        assert 0 <= r["test_accuracy"] <= 1 and np.isfinite(r["final_loss"])
    # The second seed reuses the first one's compiled step.
    assert result["runs"][1]["compile_seconds"] < result["runs"][0]["compile_seconds"]


def test_uea_script_runs_from_the_repository_root(tmp_path):
    out = tmp_path / "result.json"
    argv = ["examples/uea.py", "--dataset", "UnitTest", "--steps", "4"]
    done = subprocess.run(
        [sys.executable, *argv, "--hidden-size", "4", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert re.search(r"test accuracy: \d+\.\d%", last), last
    assert "training time" in last and "1-NN Euclidean" in last
    assert "4/4" in done.stderr  # the progress bar
    assert '"dataset": "UnitTest"' in out.read_text()
