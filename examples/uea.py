"""Train a recurrent classifier on a time-series classification set that aeon ships.

The `aeon` package carries a handful of the UCR/UEA archives' data sets inside its
wheel (JapaneseVowels, BasicMotions, GunPoint, ItalyPowerDemand,
PickupGestureWiimoteZ, ...), with their published train/test splits; nothing is
downloaded. Each series is a sequence of `channels` features per step, of a fixed or
a varying length: the script pads them with `eqrnn.pad_sequences`, runs an `eqrnn.RNN`
over the valid steps only (`length=`), and classifies from the mean and the last of
its outputs. Channels are normalised with the training split's statistics only, and
the same defaults are used for every data set. A 1-nearest-neighbour classifier with
the Euclidean distance, computed on the same split, is printed next to it.

    pip install '.[examples]'
    python examples/uea.py --dataset JapaneseVowels
    python examples/uea.py --dataset GunPoint --cell lstm --seeds 0,1,2,3,4
    python examples/uea.py --dataset BasicMotions --cell mingru --mode associative
    python examples/uea.py --list
    python examples/uea.py --table --json benchmarks/cpu-2core-uea.json
"""

import argparse
import functools
import importlib
import inspect
import json
import platform
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

import eqrnn


# Every `mode` by its name.
MODES = {
    m.name: m
    for m in (
        eqrnn.Auto(),
        eqrnn.Sequential(),
        eqrnn.Associative(),
        eqrnn.Chunked(),
        eqrnn.Newton(),
    )
}


def _cell_name(cls: type) -> str:
    """`GRUCell` -> `gru`, `LayerNormLSTMCell` -> `layernorm-lstm`, `LRU` -> `lru`."""
    name = cls.__name__.removesuffix("Cell")
    return re.sub(r"^LayerNorm", "layernorm-", name).lower()


def _vector_cells() -> dict[str, type]:
    """Every concrete cell eqrnn exports that reads one vector per step, by name.

    `ConvLSTMCell` reads an image per step and `CallableCell` wraps a function, so
    neither fits a classifier of feature vectors.
    """
    cells = {}
    for export in eqrnn.__all__:
        cls = getattr(eqrnn, export)
        if (
            inspect.isclass(cls)
            and issubclass(cls, eqrnn.AbstractCell)
            and not inspect.isabstract(cls)
            and cls not in (eqrnn.ConvLSTMCell, eqrnn.CallableCell)
        ):
            cells[_cell_name(cls)] = cls
    return dict(sorted(cells.items()))


CELLS = _vector_cells()
DEFAULT_CELL = "gru"  # the best mean on JapaneseVowels in BENCHMARKS.md's table
TABLE_CELLS = ("gru", "lstm", "mingru", "lru", "slstm", "mlstm")
TABLE_DATASETS = (
    "JapaneseVowels",
    "PickupGestureWiimoteZ",
    "BasicMotions",
    "GunPoint",
    "ItalyPowerDemand",
)


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(
            f"examples/uea.py needs `{module}`: pip install '.[examples]'"
        ) from None


# --- The data ----------------------------------------------------------------------


def shipped_data_dir() -> Path:
    """The folder of data sets inside the installed aeon package."""
    datasets = _require("aeon.datasets")
    return Path(datasets.__file__).parent / "data"


def _is_classification(train_file: Path) -> bool:
    with open(train_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            text = line.strip().lower()
            if text.startswith("@classlabel"):
                return text.split()[1:2] == ["true"]
            if text.startswith("@data"):
                break
    return False


def available_datasets(data_dir: str | Path | None = None) -> list[str]:
    """The classification data sets in `data_dir` (default: the ones aeon ships).

    A data set is a folder `NAME` holding `NAME_TRAIN.ts` and `NAME_TEST.ts`, as
    aeon lays them out, whose header says `@classLabel true`.
    """
    root = Path(data_dir) if data_dir is not None else shipped_data_dir()
    names = []
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        train = folder / f"{folder.name}_TRAIN.ts"
        test = folder / f"{folder.name}_TEST.ts"
        if train.is_file() and test.is_file() and _is_classification(train):
            names.append(folder.name)
    return names


def _as_sequences(x: Any) -> list[np.ndarray]:
    """aeon's `(n, channels, time)` array or list of `(channels, time_i)` arrays as
    a list of `(time_i, channels)` float32 arrays."""
    return [np.asarray(s, dtype=np.float32).T for s in x]


def load_dataset(
    name: str, data_dir: str | Path | None = None
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray, list[str]]:
    """The published train/test split of a classification data set, read offline.

    **Returns:**

    `(x_train, y_train, x_test, y_test, classes)`: each `x` a list of
    `(time_i, channels)` float32 arrays, each `y` integer labels indexing `classes`
    (the training split's class names, sorted).
    """
    known = available_datasets(data_dir)
    if name not in known:
        where = f"in {data_dir}" if data_dir is not None else "with aeon (offline)"
        example = "JapaneseVowels" if "JapaneseVowels" in known else (known or ["?"])[0]
        raise ValueError(
            f"unknown data set {name!r}: the classification data sets {where} are "
            f"{', '.join(known) or 'none'}. This script never downloads; try "
            f"`python examples/uea.py --dataset {example}`, or point `--data-dir` at a "
            "folder of downloaded UCR/UEA data sets (NAME/NAME_TRAIN.ts, NAME_TEST.ts)."
        )
    aeon_datasets = _require("aeon.datasets")
    root = str(Path(data_dir) if data_dir is not None else shipped_data_dir())
    # `extract_path` points aeon at the folder that holds the files, so it reads
    # them there and has no reason to download.
    x_train, y_train = aeon_datasets.load_classification(
        name, split="train", extract_path=root
    )
    x_test, y_test = aeon_datasets.load_classification(
        name, split="test", extract_path=root
    )
    classes = sorted({str(c) for c in y_train})
    index = {c: i for i, c in enumerate(classes)}
    unseen = sorted({str(c) for c in y_test} - set(classes))
    if unseen:
        raise ValueError(f"{name}: test labels {unseen} never occur in training.")
    return (
        _as_sequences(x_train),
        np.array([index[str(c)] for c in y_train], dtype=np.int32),
        _as_sequences(x_test),
        np.array([index[str(c)] for c in y_test], dtype=np.int32),
        classes,
    )


def channel_statistics(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each channel over every step of `sequences`."""
    steps = np.concatenate(sequences, axis=0)
    return steps.mean(0), steps.std(0) + 1e-6


def prepare(
    x_train: list[np.ndarray], x_test: list[np.ndarray]
) -> tuple[Array, Array, Array, Array]:
    """Normalise with the training split's statistics and pad both splits to the
    longest series of either (`eqrnn.pad_sequences`): `(xs, lengths)` twice."""
    mean, std = channel_statistics(x_train)
    longest = max(len(s) for s in [*x_train, *x_test])
    xs_train, len_train = eqrnn.pad_sequences(
        [(s - mean) / std for s in x_train], length=longest
    )
    xs_test, len_test = eqrnn.pad_sequences(
        [(s - mean) / std for s in x_test], length=longest
    )
    return xs_train, len_train, xs_test, len_test


def _resample(sequence: np.ndarray, length: int) -> np.ndarray:
    old = np.linspace(0.0, 1.0, len(sequence))
    new = np.linspace(0.0, 1.0, length)
    return np.stack(
        [np.interp(new, old, sequence[:, c]) for c in range(sequence.shape[1])], axis=1
    )


def nearest_neighbour_accuracy(
    x_train: list[np.ndarray],
    y_train: np.ndarray,
    x_test: list[np.ndarray],
    y_test: np.ndarray,
) -> float:
    """Test accuracy of 1-NN with the Euclidean distance on the data as shipped.

    Series of different lengths are first resampled (linear interpolation) to the
    longest training length, so that every series has the same number of steps.
    """
    lengths = {len(s) for s in [*x_train, *x_test]}
    if len(lengths) > 1:
        longest = max(len(s) for s in x_train)
        x_train = [_resample(s, longest) for s in x_train]
        x_test = [_resample(s, longest) for s in x_test]
    train = np.stack([s.ravel() for s in x_train]).astype(np.float64)
    test = np.stack([s.ravel() for s in x_test]).astype(np.float64)
    squared = (
        (test**2).sum(1)[:, None] - 2 * test @ train.T + (train**2).sum(1)[None, :]
    )
    return float(np.mean(y_train[np.argmin(squared, axis=1)] == y_test))


# --- The model ---------------------------------------------------------------------


class SequenceClassifier(eqx.Module):
    """A linear encoder per step, an `eqrnn.RNN`, and a linear read-out of the mean
    and the last of its outputs over the valid steps."""

    encoder: eqx.nn.Linear
    rnn: eqrnn.RNN
    head: eqx.nn.Linear

    def __init__(
        self,
        cell: str,
        channels: int,
        hidden_size: int,
        num_classes: int,
        mode: str = "auto",
        *,
        key: PRNGKeyArray,
    ):
        encoder_key, cell_key, head_key = jr.split(key, 3)
        # Every cell reads `hidden_size` features, so `RGLRU` (input size = hidden
        # size) fits as well as the rest.
        self.encoder = eqx.nn.Linear(channels, hidden_size, key=encoder_key)
        rnn_cell = CELLS[cell](hidden_size, hidden_size, key=cell_key)
        self.rnn = eqrnn.RNN(rnn_cell, mode=mode)  # type: ignore[arg-type]
        self.head = eqx.nn.Linear(2 * hidden_size, num_classes, key=head_key)

    def hidden_states(
        self, x: Float[Array, "time channels"], length: Int[Array, ""]
    ) -> Float[Array, "time hidden"]:
        """The RNN's output at every step (zero after `length`)."""
        # `RNN` returns its outputs alone unless `return_hidden=True`.
        return cast(Array, self.rnn(jax.vmap(self.encoder)(x), length=length))

    def __call__(
        self, x: Float[Array, "time channels"], length: Int[Array, ""]
    ) -> Float[Array, " classes"]:
        outputs = self.hidden_states(x, length)
        last = outputs[jnp.maximum(length - 1, 0)]
        return self.head(jnp.concatenate([eqrnn.masked_mean(outputs, length), last]))


@functools.cache
def _optimizer(steps: int, learning_rate: float) -> Any:
    """AdamW with a warm-up and a cosine decay, clipped; cached, so that `_train_step`
    sees the same (static) optimiser for every seed and compiles once."""
    optax = _require("optax")
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=max(1, steps // 10),
        decay_steps=steps,
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4)
    )


@eqx.filter_jit
def _train_step(
    model: SequenceClassifier,
    opt_state: Any,
    xs: Float[Array, "n time channels"],
    lengths: Int[Array, " n"],
    labels: Int[Array, " n"],
    key: PRNGKeyArray,
    optimizer: Any,
    batch: int,
) -> tuple[SequenceClassifier, Any, Float[Array, ""]]:
    optax = _require("optax")
    idx = jr.choice(key, len(labels), (batch,), replace=False)

    def loss_fn(model: SequenceClassifier) -> Float[Array, ""]:
        logits = jax.vmap(model)(xs[idx], lengths[idx])
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, labels[idx]
        ).mean()

    loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, loss


def train(
    xs: Array,
    lengths: Array,
    labels: Array,
    num_classes: int,
    *,
    cell: str = DEFAULT_CELL,
    mode: str = "auto",
    hidden_size: int = 64,
    steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[SequenceClassifier, dict[str, float]]:
    """Train a `SequenceClassifier` with AdamW (warm-up then cosine decay) on random
    minibatches of the padded `xs`.

    **Returns:**

    `(model, timings)`: `timings` holds `compile_seconds` (the first step: tracing,
    compiling and one step; close to nothing when the same shapes were compiled
    before in this process), `train_seconds` (every step after it) and
    `final_loss`.
    """
    model_key, data_key = jr.split(jr.key(seed))
    model = SequenceClassifier(
        cell, xs.shape[-1], hidden_size, num_classes, mode, key=model_key
    )
    optimizer = _optimizer(steps, learning_rate)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    batch = min(batch_size, len(labels))

    tqdm = _require("tqdm").tqdm
    bar = tqdm(total=steps, disable=not progress, desc=f"{cell} seed {seed}")
    start = time.perf_counter()
    args = (xs, lengths, labels)
    model, opt_state, loss = _train_step(
        model, opt_state, *args, jr.fold_in(data_key, 0), optimizer, batch
    )
    loss.block_until_ready()
    compiled = time.perf_counter()
    bar.update(1)
    for step in range(1, steps):
        model, opt_state, loss = _train_step(
            model, opt_state, *args, jr.fold_in(data_key, step), optimizer, batch
        )
        if progress and (step % 10 == 9 or step == steps - 1):
            bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
            bar.update(step + 1 - bar.n)
    loss.block_until_ready()
    bar.close()
    return model, {
        "compile_seconds": compiled - start,
        "train_seconds": time.perf_counter() - compiled,
        "final_loss": float(loss),
    }


@eqx.filter_jit
def _predict_batch(
    model: SequenceClassifier,
    xs: Float[Array, "batch time channels"],
    lengths: Int[Array, " batch"],
) -> Int[Array, " batch"]:
    return jnp.argmax(jax.vmap(model)(xs, lengths), axis=-1)


def predict(
    model: SequenceClassifier,
    xs: Float[Array, "n time channels"],
    lengths: Int[Array, " n"],
    batch_size: int = 100,
) -> np.ndarray:
    """The predicted class of every sequence, `batch_size` at a time (the last batch
    padded, so that it compiles once)."""
    predicted = []
    for start in range(0, len(lengths), batch_size):
        x, n = xs[start : start + batch_size], lengths[start : start + batch_size]
        real, missing = len(n), batch_size - len(n)
        if missing and len(lengths) > batch_size:
            x = jnp.concatenate([x, jnp.zeros((missing, *x.shape[1:]), x.dtype)])
            n = jnp.concatenate([n, jnp.ones((missing,), n.dtype)])
        predicted.append(np.asarray(_predict_batch(model, x, n))[:real])
    return np.concatenate(predicted)


def run(
    dataset: str,
    *,
    cell: str = DEFAULT_CELL,
    mode: str = "auto",
    hidden_size: int = 64,
    steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seeds: Sequence[int] = (0,),
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and test one cell on one data set for each seed, and the 1-NN baseline.

    **Returns:**

    A dict with the data set's shape, the 1-NN Euclidean accuracy and, per seed, the
    test accuracy, the final training loss and the times.
    """
    if cell not in CELLS:
        raise ValueError(f"`cell` must be one of {list(CELLS)}, got {cell!r}.")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {list(MODES)}, got {mode!r}.")
    modes = [name for name, m in MODES.items() if m.supports(CELLS[cell])]
    if mode not in modes:
        able = [name for name, cls in CELLS.items() if MODES[mode].supports(cls)]
        raise ValueError(
            f"`mode={mode!r}` does not run {CELLS[cell].__name__} (its modes: "
            f"{', '.join(modes)}); the cells that take it: {', '.join(able)}."
        )
    x_train, y_train, x_test, y_test, classes = load_dataset(dataset, data_dir)
    xs_train, len_train, xs_test, len_test = prepare(x_train, x_test)
    train_lengths = [len(s) for s in x_train]
    result: dict[str, Any] = {
        "dataset": dataset,
        "cell": cell,
        "mode": mode,
        "hidden_size": hidden_size,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "train_size": len(y_train),
        "test_size": len(y_test),
        "channels": int(xs_train.shape[-1]),
        "classes": len(classes),
        "length_min": min(train_lengths + [len(s) for s in x_test]),
        "length_max": int(xs_train.shape[1]),
        "one_nn_euclidean": nearest_neighbour_accuracy(
            x_train, y_train, x_test, y_test
        ),
        "runs": [],
    }
    for seed in seeds:
        model, timings = train(
            xs_train,
            len_train,
            jnp.asarray(y_train),
            len(classes),
            cell=cell,
            mode=mode,
            hidden_size=hidden_size,
            steps=steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            progress=progress,
        )
        predicted = np.asarray(predict(model, xs_test, len_test))
        accuracy = float(np.mean(predicted == y_test))
        result["runs"].append({"seed": seed, "test_accuracy": accuracy, **timings})
    return result


def summary_line(result: dict[str, Any]) -> str:
    accuracies = 100 * np.array([r["test_accuracy"] for r in result["runs"]])
    seconds = np.array([r["train_seconds"] for r in result["runs"]])
    compile_s = max(r["compile_seconds"] for r in result["runs"])
    spread = f" ± {accuracies.std():.1f}" if len(accuracies) > 1 else ""
    per = " per seed" if len(accuracies) > 1 else ""
    return (
        f"{result['dataset']}, {result['cell']} ({result['mode']}): test accuracy: "
        f"{accuracies.mean():.1f}%{spread} over {len(accuracies)} seed(s), 1-NN "
        f"Euclidean {100 * result['one_nn_euclidean']:.1f}%; training time "
        f"{seconds.mean():.1f} s{per} (+ {compile_s:.1f} s compiling)"
    )


# --- The table ---------------------------------------------------------------------


def run_table(
    datasets: Sequence[str],
    cells: Sequence[str],
    seeds: Sequence[int],
    on_result: Any = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """`run` for every data set and cell, in one process (each shape compiles once);
    `on_result(results)` is called after each, e.g. to save what is done so far."""
    results = []
    for dataset in datasets:
        for cell in cells:
            result = run(dataset, cell=cell, seeds=seeds, **options)
            print(summary_line(result), flush=True)
            results.append(result)
            if on_result is not None:
                on_result(results)
    return results


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Mean ± standard deviation of the test accuracy (%) over the seeds, per data
    set and cell, with the mean training time per seed, and the 1-NN row."""
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    cells = list(dict.fromkeys(r["cell"] for r in results))
    by = {(r["dataset"], r["cell"]): r for r in results}
    lines = [
        "| accuracy % (train s) | " + " | ".join(datasets) + " |",
        "|---" * (len(datasets) + 1) + "|",
    ]
    for cell in cells:
        row = []
        for dataset in datasets:
            r = by.get((dataset, cell))
            if r is None:
                row.append("-")
                continue
            acc = 100 * np.array([run["test_accuracy"] for run in r["runs"]])
            secs = np.mean([run["train_seconds"] for run in r["runs"]])
            row.append(f"{acc.mean():.1f} ± {acc.std():.1f} ({secs:.0f} s)")
        name = CELLS[cell].__name__
        lines.append(f"| eqrnn {name} | " + " | ".join(row) + " |")
    nn = [100 * by[(d, cells[0])]["one_nn_euclidean"] for d in datasets]
    lines.append(
        "| 1-NN Euclidean (this run) | " + " | ".join(f"{a:.1f}" for a in nn) + " |"
    )
    return "\n".join(lines)


# --- The command line --------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}"
        )
    return seeds


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python examples/uea.py",
        description=(
            "Train an eqrnn classifier under eqx.filter_jit with optax on a UCR/UEA "
            "time-series classification data set that aeon ships in its wheel "
            "(nothing is downloaded), by name, and print its test accuracy next to "
            "1-NN with the Euclidean distance. Needs pip install '.[examples]'."
        ),
    )
    parser.add_argument(
        "--dataset",
        help="a classification data set aeon ships (see --list), e.g. JapaneseVowels",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the data sets and exit"
    )
    parser.add_argument(
        "--cell",
        choices=tuple(CELLS),
        default=DEFAULT_CELL,
        help=f"the recurrent cell (default {DEFAULT_CELL})",
    )
    parser.add_argument(
        "--mode",
        choices=list(MODES),
        default="auto",
        help=(
            "how the time loop runs (default auto): sequential; newton for the "
            "step-by-step cells; associative or chunked for mingru, minlstm, lru, "
            "rglru and mlstm"
        ),
    )
    parser.add_argument(
        "--hidden-size", type=_positive_int, default=64, help="default 64"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=300, help="optimiser steps (default 300)"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=32, help="default 32"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=3e-3, help="peak rate (default 3e-3)"
    )
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    parser.add_argument(
        "--seeds",
        type=_seeds,
        help="several seeds in one process, e.g. 0,1,2,3,4 (overrides --seed)",
    )
    parser.add_argument(
        "--data-dir",
        help="a folder of UCR/UEA data sets (NAME/NAME_TRAIN.ts) instead of aeon's",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help=(
            "run --cells on --datasets over --seeds (default 0,1,2,3,4) and print a "
            "Markdown table"
        ),
    )
    parser.add_argument(
        "--cells",
        type=_names,
        default=list(TABLE_CELLS),
        help=f"with --table (default {','.join(TABLE_CELLS)})",
    )
    parser.add_argument(
        "--datasets",
        type=_names,
        default=list(TABLE_DATASETS),
        help=f"with --table (default {','.join(TABLE_DATASETS)})",
    )
    parser.add_argument("--json", help="also write every result to this JSON file")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar on stderr"
    )
    return parser


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "equinox": eqx.__version__,
        "eqrnn": eqrnn.__version__,
        "aeon": _require("aeon").__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run with `argv` (default `sys.argv[1:]`); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(available_datasets(args.data_dir)))
        return 0
    options = {
        "mode": args.mode,
        "hidden_size": args.hidden_size,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "data_dir": args.data_dir,
        "progress": not args.no_progress,
    }

    def save(results: list[dict[str, Any]]) -> None:
        if args.json:
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "command": "python examples/uea.py "
                + " ".join(sys.argv[1:] if argv is None else argv),
                "machine": _machine(),
                "results": results,
            }
            path.write_text(json.dumps(record, indent=1) + "\n")

    try:
        if args.table:
            unknown = [c for c in args.cells if c not in CELLS]
            if unknown:
                parser.error(f"--cells: unknown {unknown}; choose from {list(CELLS)}")
            available = available_datasets(args.data_dir)
            for dataset in args.datasets:
                if dataset not in available:
                    load_dataset(dataset, args.data_dir)  # raises, saying what to do
            start = time.perf_counter()
            results = run_table(
                args.datasets,
                args.cells,
                args.seeds or [0, 1, 2, 3, 4],
                on_result=save,
                **options,
            )
            print()
            print(markdown_table(results))
            print(f"\nwall time: {time.perf_counter() - start:.0f} s")
        else:
            if args.dataset is None:
                parser.error("--dataset NAME is needed (see --list)")
            seeds = args.seeds or [args.seed]
            available = available_datasets(args.data_dir)
            if args.dataset not in available:
                load_dataset(args.dataset, args.data_dir)  # raises, saying what to do
            print(
                f"Training a {CELLS[args.cell].__name__} (hidden size "
                f"{args.hidden_size}, mode {args.mode}) on {args.dataset}..."
            )
            results = [run(args.dataset, cell=args.cell, seeds=seeds, **options)]
            r = results[0]
            print(
                f"{r['train_size']} training and {r['test_size']} test series, "
                f"{r['channels']} channel(s), {r['classes']} classes, lengths "
                f"{r['length_min']}-{r['length_max']}"
            )
            print(summary_line(r))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
