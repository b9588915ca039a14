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


def _plot(model: DigitClassifier, images: Any, labels: Any, path: Path) -> None:
    matplotlib = _require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hs = np.asarray(jax.vmap(model.hidden_states)(jnp.asarray(images[:200])))
    # Project every state onto the two main directions of all states.
    flat = hs.reshape(-1, hs.shape[-1])
    flat = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    proj = (hs - hs.reshape(-1, hs.shape[-1]).mean(0)) @ vt[:2].T
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = plt.get_cmap("tab10")
    for digit in range(10):
        for p in proj[labels[:200] == digit][:6]:
            axes[0].plot(p[:, 0], p[:, 1], color=colours(digit), alpha=0.6, lw=1)
            axes[0].scatter(p[-1, 0], p[-1, 1], color=colours(digit), s=12)
    axes[0].set_title("Hidden-state trajectories (2 main directions), by digit")
    axes[0].set_xlabel("direction 1")
    axes[0].set_ylabel("direction 2")
    for unit in range(min(8, hs.shape[-1])):
        axes[1].plot(range(1, 9), hs[0, :, unit], marker="o", ms=3)
    axes[1].set_title(f"First 8 hidden units over time (a '{labels[0]}')")
    axes[1].set_xlabel("time step (image row)")
    axes[1].set_ylabel("activation")
    fig.tight_layout()
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
