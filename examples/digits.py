"""Train a small recurrent classifier on handwritten digits.

The data set is scikit-learn's 8x8 handwritten digits (1797 images, shipped inside
the scikit-learn package, so nothing is downloaded), read one pixel row per time step:
a sequence of 8 steps of 8 features, classified into 10 digits from the final hidden
state. It is a real, small task that a recurrent network learns in seconds on a CPU.

    pip install '.[examples]' && python examples/digits.py
    python examples/digits.py --cell lstm --hidden-size 32 --steps 300 --out runs/lstm
"""

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

import eqrnn


CELLS = {
    "gru": eqrnn.GRUCell,
    "lstm": eqrnn.LSTMCell,
    "mgu": eqrnn.MGUCell,
    "simple": eqrnn.SimpleCell,
}


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(
            f"examples/digits.py needs `{module}`: pip install '.[examples]'"
        ) from None


class DigitClassifier(eqx.Module):
    """An RNN over the rows of an image and a linear read-out of its last state."""

    rnn: eqrnn.RNN
    head: eqx.nn.Linear

    def __init__(self, cell: str, hidden_size: int, *, key: PRNGKeyArray):
        cell_key, head_key = jr.split(key)
        rnn_cell = CELLS[cell](8, hidden_size, dtype=jnp.float32, key=cell_key)
        self.rnn = eqrnn.RNN(rnn_cell, return_hidden=True)
        self.head = eqx.nn.Linear(hidden_size, 10, dtype=jnp.float32, key=head_key)

    def hidden_states(self, image: Float[Array, "8 8"]) -> Float[Array, "8 hidden"]:
        outputs, _ = self.rnn(image)
        return outputs

    def __call__(self, image: Float[Array, "8 8"]) -> Float[Array, " 10"]:
        return self.head(self.hidden_states(image)[-1])


def load_digits(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Train and test splits (80/20) of scikit-learn's digits, scaled to [0, 1]."""
    datasets = _require("sklearn.datasets")
    digits = datasets.load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def _progress(step: int, steps: int, loss: float, start: float) -> None:
    width = 30
    done = int(width * step / steps)
    bar = "#" * done + "." * (width - done)
    elapsed = time.perf_counter() - start
    sys.stderr.write(
        f"\r[{bar}] step {step:4d}/{steps}  loss {loss:.4f}  {elapsed:5.1f}s"
    )
    if step == steps:
        sys.stderr.write("\n")
    sys.stderr.flush()


def plot_hidden_states(
    model: DigitClassifier, images: Any, labels: Any, *, max_points: int = 400
) -> Any:
    """The picture `run_demo` writes to `hidden_states.png`.

    Left: each digit's average path through the hidden state, row by row, from the
    shared starting state to the state the read-out classifies, over a cloud of the
    final states of single test images; all projected onto the two directions in
    which the final states vary most, one colour per digit, with a legend. Right: one
    test image next to its hidden state after each row. A caption line under the two
    panels says what the marks mean.

    **Arguments:**

    - `model`: a (trained) `DigitClassifier`.
    - `images`, `labels`: test images `(n, 8, 8)` and their digits `(n,)`.
    - `max_points`: at most this many images are drawn and averaged.

    **Returns:**

    A matplotlib `Figure` (the caller saves and closes it).
    """
    matplotlib = _require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    images, labels = np.asarray(images)[:max_points], np.asarray(labels)[:max_points]
    hs = np.asarray(jax.vmap(model.hidden_states)(jnp.asarray(images)))
    cell = model.rnn.cell
    assert isinstance(cell, eqrnn.AbstractCell)
    start = np.asarray(cell.output(cell.init_hidden()))
    # Paths begin at the starting state, before the first row is read.
    paths = np.concatenate([np.broadcast_to(start, hs[:, :1].shape), hs], axis=1)
    # The two directions in which the final states, which the read-out sees, vary most.
    finals = paths[:, -1]
    centre = finals.mean(0)
    _, _, vt = np.linalg.svd(finals - centre, full_matrices=False)
    proj = (paths - centre) @ vt[:2].T  # (n, 9, 2)
    predicted = int(jnp.argmax(model(jnp.asarray(images[0]))))

    fig = plt.figure(figsize=(13, 5.6))
    grid = fig.add_gridspec(
        1, 4, width_ratios=[2.4, 0.5, 0.75, 1.45], wspace=0.3, left=0.05, right=0.93
    )
    ax = fig.add_subplot(grid[0])
    colours = plt.get_cmap("tab10")
    for digit in range(10):
        mine = proj[labels == digit]
        if not len(mine):
            continue
        ax.scatter(
            mine[:, -1, 0], mine[:, -1, 1], color=colours(digit), s=7, alpha=0.3, lw=0
        )
        mean = mine.mean(0)
        ax.plot(
            mean[:, 0],
            mean[:, 1],
            color=colours(digit),
            lw=2,
            marker="o",
            ms=3,
            label=f"{digit}  ({len(mine)} images)",
        )
        ax.annotate(
            str(digit),
            mean[-1],
            color=colours(digit),
            fontsize=13,
            fontweight="bold",
            ha="center",
            va="center",
            xytext=(0, 10),
            textcoords="offset points",
        )
    ax.scatter(*proj[0, 0], marker="x", color="black", s=60, zorder=3)
    ax.annotate(
        "start", proj[0, 0], xytext=(6, 6), textcoords="offset points", fontsize=9
    )
    handles, names = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], ls="", marker="o", ms=3, color="grey", alpha=0.5),
        Line2D([], [], ls="", marker="x", color="black"),
    ]
    names += ["one image's final state", "start (before row 1)"]
    ax.legend(
        handles,
        names,
        title="digit: mean path",
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        fontsize=8.5,
        frameon=False,
    )
    ax.set_title("Each digit's mean path through the hidden state")
    ax.set_xlabel("direction 1 (the final states vary most along it)")
    ax.set_ylabel("direction 2")

    rows = (0.5, 8.5, 8.5, 0.5)  # row 1 at the top, as the image is read
    image_ax = fig.add_subplot(grid[2])
    image_ax.imshow(images[0], cmap="gray_r", extent=(0.5, 8.5, *rows[2:]))
    image_ax.set_title(f"a test '{labels[0]}',\nrow by row")
    image_ax.set_xticks([])
    image_ax.set_yticks(range(1, 9))
    image_ax.set_ylabel("row = time step")
    heat_ax = fig.add_subplot(grid[3])
    units = min(16, hs.shape[-1])
    shown = heat_ax.imshow(
        hs[0, :, :units],
        cmap="RdBu_r",
        vmin=-1,
        vmax=1,
        aspect="auto",
        extent=(0.5, units + 0.5, *rows[2:]),
    )
    heat_ax.set_title(f"its hidden state after each row\n(predicted: {predicted})")
    heat_ax.set_xlabel(f"hidden unit (first {units} of {hs.shape[-1]})")
    heat_ax.set_yticks(range(1, 9))
    fig.colorbar(shown, ax=heat_ax, fraction=0.06, pad=0.03, label="activation")
    fig.text(
        0.05,
        0.02,
        f"Left: the faint dots are the final hidden states of {len(labels)} test "
        "images, coloured by their true digit; each line is a digit's mean path, from "
        "the shared start (x)\nthrough one circle per row read, to the final state "
        "that the linear read-out classifies. Right: one image and the hidden state "
        "after each of its rows.",
        fontsize=9,
    )
    fig.subplots_adjust(top=0.9, bottom=0.22)
    return fig


def _plot(model: DigitClassifier, images: Any, labels: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = plot_hidden_states(model, images, labels)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(
    cell: str = "gru",
    hidden_size: int = 64,
    steps: int = 500,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    out_dir: str | Path = "eqrnn-demo",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the digit classifier and write a plot and a checkpoint to `out_dir`.

    **Arguments:**

    - `cell`: `"gru"`, `"lstm"`, `"mgu"` or `"simple"`.
    - `hidden_size`: the size of the hidden state.
    - `steps`: optimiser steps (Adam).
    - `batch_size`: sequences per step.
    - `learning_rate`: Adam's learning rate.
    - `out_dir`: where `hidden_states.png` and `model.eqx` go.
    - `seed`: the seed of the split, the initialisation and the batches.
    - `progress`: show a progress bar on stderr.

    **Returns:**

    A dict with the test accuracy, the final training loss, the paths written and the
    wall time.
    """
    if cell not in CELLS:
        raise ValueError(f"`cell` must be one of {sorted(CELLS)}, got {cell!r}.")
    optax = _require("optax")
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_digits(seed)
    model_key, data_key = jr.split(jr.key(seed))
    model = DigitClassifier(cell, hidden_size, key=model_key)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def train_step(model, opt_state, images, labels):
        def loss_fn(model):
            logits = jax.vmap(model)(images)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, loss

    @eqx.filter_jit
    def predict(
        model: DigitClassifier, images: Float[Array, "batch 8 8"]
    ) -> Int[Array, " batch"]:
        return jnp.argmax(jax.vmap(model)(images), axis=-1)

    x_train_j, y_train_j = jnp.asarray(x_train), jnp.asarray(y_train)
    loss = jnp.nan
    for step in range(1, steps + 1):
        idx = jr.choice(jr.fold_in(data_key, step), len(y_train), (batch_size,))
        model, opt_state, loss = train_step(
            model, opt_state, x_train_j[idx], y_train_j[idx]
        )
        if progress and (step % 10 == 0 or step == steps):
            _progress(step, steps, float(loss), start)
    accuracy = float(jnp.mean(predict(model, jnp.asarray(x_test)) == y_test))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_path, ckpt_path = out / "hidden_states.png", out / "model.eqx"
    _plot(model, x_test, y_test, plot_path)
    eqrnn.save_checkpoint(ckpt_path, (model, opt_state, steps))
    return {
        "cell": cell,
        "hidden_size": hidden_size,
        "steps": steps,
        "test_accuracy": accuracy,
        "test_size": len(y_test),
        "final_loss": float(loss),
        "plot": str(plot_path),
        "checkpoint": str(ckpt_path),
        "seconds": time.perf_counter() - start,
    }


# --- The command line --------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python examples/digits.py",
        description=(
            "Train an eqrnn classifier under eqx.filter_jit with optax on "
            "scikit-learn's 8x8 handwritten digits, read one pixel row per time step "
            "(shipped with scikit-learn: nothing is downloaded). Shows a progress "
            "bar, prints the held-out accuracy, and writes a plot of hidden-state "
            "trajectories and a checkpoint. Needs pip install '.[examples]'."
        ),
    )
    parser.add_argument(
        "--cell",
        choices=tuple(CELLS),
        default="gru",
        help="the recurrent cell (default gru)",
    )
    parser.add_argument(
        "--hidden-size", type=_positive_int, default=64, help="default 64"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=500, help="Adam steps (default 500)"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=64, help="default 64"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=3e-3, help="default 3e-3"
    )
    parser.add_argument(
        "--out",
        default="eqrnn-demo",
        help="folder for hidden_states.png and model.eqx (default ./eqrnn-demo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run with `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = build_parser().parse_args(argv)
    print(
        f"Training a {args.cell.upper()} (hidden size {args.hidden_size}) on "
        "scikit-learn's handwritten digits, one 8-pixel row per time step..."
    )
    result = run_demo(
        cell=args.cell,
        hidden_size=args.hidden_size,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        out_dir=args.out,
        seed=args.seed,
    )
    print(
        f"Held-out accuracy: {100 * result['test_accuracy']:.1f}% on "
        f"{result['test_size']} test images (final training loss "
        f"{result['final_loss']:.4f}, {result['seconds']:.0f} s)."
    )
    print(f"Hidden-state trajectories: {result['plot']}")
    print(f"Checkpoint (model, optimiser state, step): {result['checkpoint']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
