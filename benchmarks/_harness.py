"""The harness behind `benchmarks/bench.py`: eqrnn and its peers, side by side, in one
run. The other scripts of `benchmarks/` share its loss (`scan_loss`), its argument
types (`positive_int`, `parse_size`) and `generic_step_options`.

Every implementation computes the same thing from the same weights and inputs: all
hidden states of a batch of sequences (batch first, float32), the loss
`sum(h of every step and example)`, and for the forward+backward pass the gradient of
that loss w.r.t. the parameters and the inputs.

- eqrnn: `jax.vmap(lambda x: eqrnn.scan_all_hidden(cell, x))(inputs)`, differentiated
  on an `eqx.partition` of the cell into parameters and static parts.
- PyTorch: `torch.nn.LSTM` / `torch.nn.GRU` (CPU, `batch_first=True`), with as many
  threads as XLA uses cores; the forward pass runs under `torch.no_grad()`, as
  inference would, so PyTorch may pick its inference kernels there.
- Flax NNX: `nnx.RNN(cell)` with `nnx.LSTMCell`, `nnx.OptimizedLSTMCell` or
  `nnx.GRUCell` (batched cells, scanned over time by Flax).
- Equinox: `eqx.nn.LSTMCell` / `eqx.nn.GRUCell` under a hand-written `jax.lax.scan`
  inside `jax.vmap`, the classic pattern.

The GRU's `b_hn` is zero in the shared weights, because Flax's `GRUCell` has no such
term; every other weight and bias is drawn at random.

Timing: each JAX function is compiled ahead of time (`jax.jit(f).lower(...).compile()`,
whose wall time is reported as the compile time, after one untimed compilation of a
small scan that takes the process's first-compilation cost) and the compiled
executable is what is timed. After warm-up calls, every repetition runs every
(implementation, pass) once, in an order rotated by one each repetition (round-robin),
so that noise on a shared machine hits all of them alike; the garbage collector runs
between repetitions only.
Each call ends with `jax.block_until_ready` on its result (PyTorch on CPU is
synchronous). Times are wall-clock (`time.perf_counter`), reported as the median and
the minimum over repetitions.

Peak memory: for JAX, the compiled executable's `memory_analysis()`, i.e. XLA's buffer
plan: argument + output + temp bytes. For PyTorch, the bytes of the parameters and
inputs plus the peak of the CPU allocator's live bytes during one call, from
`torch.profiler`'s allocation events. Where it cannot be measured it is reported as
n/a.

Three studies run eqrnn alone instead of the comparison: `run_checkpoint_study`
(LSTM with and without `checkpoint=True`), `run_parallel_study` (the parallel-in-time
cells in each scan mode next to `GRUCell`: time, tokens per second, speedup, memory)
and `run_long_study` (every cell over long sequences with and without checkpointing,
each configuration in a fresh process so that its peak resident memory is its own,
and whether the loss and gradients stay finite). Their loss is the sum of
`cell.output(hidden)` over every step and sequence, with input size = hidden size.

Nothing here imports torch or flax at module level: each peer is imported when it is
run, and a peer that fails to import is skipped with a note. eqrnn is used through its
public API only.
"""

import abc
import argparse
import contextlib
import dataclasses
import datetime
import functools
import gc
import importlib
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import eqrnn


# The types of `eqrnn.scan_all_hidden`'s `unroll` and `mode` arguments.
Unroll = int | Literal["auto"]
Mode = Literal["auto", "sequential", "associative", "chunked"]


def _sigmoid(x: Any) -> Any:
    return jax.nn.sigmoid(x)


def _tanh(x: Any) -> Any:
    return jnp.tanh(x)


def generic_step_options(cls: type) -> dict[str, Any]:
    """Constructor options under which a built-in cell runs its generic `step`, with
    the same numbers: its default nonlinearity as another function object (a cell's
    `fused_step` exists only for `jax.nn.sigmoid` and `jnp.tanh` themselves)."""
    if "gate_fn" in inspect.signature(cls.__init__).parameters:
        return {"gate_fn": _sigmoid}
    return {"activation_fn": _tanh}


@runtime_checkable
class TextOut(Protocol):
    """Where the tables go: `sys.stdout`, a file, an `io.StringIO`."""

    def write(self, s: str, /) -> int: ...

    def flush(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Size:
    """A problem size: `time` steps, `batch` sequences, `input_size`, `hidden_size`."""

    name: str
    time: int
    batch: int
    input_size: int
    hidden_size: int

    def describe(self) -> str:
        return f"T={self.time} B={self.batch} I={self.input_size} H={self.hidden_size}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "T": self.time,
            "B": self.batch,
            "I": self.input_size,
            "H": self.hidden_size,
        }


SIZES: dict[str, Size] = {
    "small": Size("small", 2048, 8, 32, 64),
    "mid": Size("mid", 256, 32, 64, 256),
    "large": Size("large", 128, 64, 128, 512),
}
CHECKPOINT_STUDY_SIZE = Size("checkpoint-study", 4096, 8, 32, 64)
CELLS = ("lstm", "gru")
PEERS = ("torch", "flax", "equinox")
PASSES = ("fwd", "fwd_bwd")
PASS_LABELS = {"fwd": "fwd", "fwd_bwd": "fwd+bwd"}

JAX_COMPILE_METHOD = (
    "wall time of jax.jit(f).lower(*args).compile(): tracing, lowering and XLA "
    "compilation, after one untimed compilation of a small scan in the process"
)
JAX_MEMORY_METHOD = (
    "XLA buffer plan of the compiled executable (memory_analysis()): "
    "argument + output + temp bytes"
)
TORCH_MEMORY_METHOD = (
    "bytes of the parameters and inputs + peak live bytes of the CPU allocator during "
    "one call, from torch.profiler(profile_memory=True) allocation events"
)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What `run_bench` measures; the command line builds one from its options."""

    cells: tuple[str, ...] = CELLS
    sizes: tuple[Size, ...] = tuple(SIZES.values())
    peers: tuple[str, ...] = PEERS
    passes: tuple[str, ...] = PASSES
    reps: int = 10
    warmup: int = 2
    unroll: Unroll = "auto"
    checkpoint: bool | int = False
    checkpoint_study: bool = False
    parallel_study: bool = False
    long_study: bool = False
    # The studies' own settings; `()`/`None` picks each study's default.
    lengths: tuple[int, ...] = ()
    scan_modes: tuple[str, ...] = ()
    batch_size: int | None = None
    hidden_size: int | None = None
    in_process: bool = False
    memory_limit_gib: float = 4.0
    json_path: str | None = None
    seed: int = 0
    command: tuple[str, ...] = ()


# --- Command-line argument types (argparse `type=`) --------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parse_size(text: str) -> tuple[int, int, int, int]:
    """`"T,B,I,H"`: time steps, batch, input size, hidden size."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            "expected four positive integers T,B,I,H (time steps, batch, input size, "
            f"hidden size), got {text!r}"
        )
    return values  # pyright: ignore[reportReturnType]


def parse_unroll(text: str) -> Unroll:
    return "auto" if text == "auto" else positive_int(text)


# --- Shared weights ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """Weights in PyTorch's layout (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`,
    gates stacked LSTM i, f, g, o / GRU r, z, n) and a batch of inputs, float32."""

    cell: str
    size: Size
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_ih: np.ndarray
    bias_hh: np.ndarray
    inputs: np.ndarray  # (batch, time, input_size)

    @property
    def folded_bias(self) -> np.ndarray:
        """The bias eqrnn, Equinox and Flax add once: `b_ih + b_hh` (for the GRU, only
        the r and z parts of `b_hh`; its `b_hn` stays apart)."""
        if self.cell == "lstm":
            return self.bias_ih + self.bias_hh
        h = self.size.hidden_size
        return np.concatenate(
            [self.bias_ih[: 2 * h] + self.bias_hh[: 2 * h], self.bias_ih[2 * h :]]
        )

    @property
    def bias_hn(self) -> np.ndarray:
        return self.bias_hh[2 * self.size.hidden_size :]

    @property
    def parameter_bytes(self) -> int:
        arrays = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return sum(a.nbytes for a in arrays)


def make_problem(cell: str, size: Size, seed: int) -> Problem:
    """Weights drawn as PyTorch draws them, U(-1/sqrt(H), 1/sqrt(H)), and N(0, 1)
    inputs."""
    rng = np.random.default_rng(seed)
    h = size.hidden_size
    gates = 4 if cell == "lstm" else 3
    bound = 1.0 / math.sqrt(h)

    def draw(*shape: int) -> np.ndarray:
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    weight_ih = draw(gates * h, size.input_size)
    weight_hh = draw(gates * h, h)
    bias_ih = draw(gates * h)
    bias_hh = draw(gates * h)
    if cell == "gru":
        # Flax's GRUCell has no b_hn: zero it, so every implementation computes the
        # same function.
        bias_hh[2 * h :] = 0.0
    inputs = rng.standard_normal((size.batch, size.time, size.input_size))
    return Problem(
        cell,
        size,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        inputs.astype(np.float32),
    )


# --- Implementations ---------------------------------------------------------------


class Implementation(abc.ABC):
    """One implementation, ready to run each pass (`"fwd"`, `"fwd_bwd"`).

    `call(pass_)` runs one pass to completion and returns its result; `summarize`
    turns a result into the loss (and the norm of the input gradient) for the
    cross-check; `compile_info` and `memory` describe the pass.
    """

    name: str
    peer: str

    @abc.abstractmethod
    def prepare(self, pass_: str) -> None:
        """See the class docstring."""

    @abc.abstractmethod
    def call(self, pass_: str) -> Any:
        """See the class docstring."""

    @abc.abstractmethod
    def summarize(self, pass_: str, result: Any) -> dict[str, float]:
        """See the class docstring."""

    @abc.abstractmethod
    def compile_info(self, pass_: str) -> dict[str, Any]:
        """See the class docstring."""

    def measure_memory(self, pass_: str) -> None:
        """Measure what `memory` reports, where that needs a run (after timing).
        Only torch needs one; JAX's memory comes from the compiled executable."""
        del pass_

    @abc.abstractmethod
    def memory(self, pass_: str) -> dict[str, Any]:
        """See the class docstring."""


class JaxImplementation(Implementation):
    """A JAX loss `loss_fn(params, inputs)`, compiled ahead of time: the forward
    pass is `loss_fn`, the forward+backward pass `jax.value_and_grad(loss_fn,
    argnums=(0, 1))`."""

    def __init__(
        self,
        name: str,
        peer: str,
        loss_fn: Callable[[Any, Any], Any],
        params: Any,
        inputs: Any,
    ):
        self.name = name
        self.peer = peer
        self._loss_fn = loss_fn
        self._params = params
        self._inputs = inputs
        self._compiled: dict[str, Any] = {}
        self._compile_info: dict[str, dict[str, Any]] = {}

    def prepare(self, pass_: str) -> None:
        if pass_ == "fwd":
            fn = self._loss_fn
        else:
            fn = jax.value_and_grad(self._loss_fn, argnums=(0, 1))
        _warm_up_compiler()
        start = time.perf_counter()
        lowered = jax.jit(fn).lower(self._params, self._inputs)
        lowered_at = time.perf_counter()
        self._compiled[pass_] = lowered.compile()
        end = time.perf_counter()
        self._compile_info[pass_] = {
            "method": JAX_COMPILE_METHOD,
            "seconds": end - start,
            "trace_lower_s": lowered_at - start,
            "xla_compile_s": end - lowered_at,
        }

    def call(self, pass_: str) -> Any:
        return jax.block_until_ready(self._compiled[pass_](self._params, self._inputs))

    def summarize(self, pass_: str, result: Any) -> dict[str, float]:
        if pass_ == "fwd":
            return {"loss": float(result)}
        loss, (grad_params, grad_inputs) = result
        return {
            "loss": float(loss),
            "grad_inputs_norm": _norm(grad_inputs),
            "grad_params_norm": _norm(grad_params),
        }

    def compile_info(self, pass_: str) -> dict[str, Any]:
        return self._compile_info[pass_]

    def memory(self, pass_: str) -> dict[str, Any]:
        try:
            stats = self._compiled[pass_].memory_analysis()
        except Exception as e:  # a backend without it: say so, never guess.
            return {"peak_bytes": None, "method": f"n/a ({type(e).__name__}: {e})"}
        if stats is None:
            return {"peak_bytes": None, "method": "n/a (memory_analysis() is None)"}
        temp = int(stats.temp_size_in_bytes)
        argument = int(stats.argument_size_in_bytes)
        output = int(stats.output_size_in_bytes)
        return {
            "peak_bytes": temp + argument + output,
            "method": JAX_MEMORY_METHOD,
            "temp_bytes": temp,
            "argument_bytes": argument,
            "output_bytes": output,
            "alias_bytes": int(stats.alias_size_in_bytes),
        }


def _norm(tree: Any) -> float:
    """The 2-norm of every leaf of `tree` together, in float64 (inf or NaN if any
    entry is)."""
    leaves = [np.asarray(leaf, np.float64).ravel() for leaf in jax.tree.leaves(tree)]
    return float(np.linalg.norm(np.concatenate(leaves))) if leaves else 0.0


def _h_of(cell: str, hiddens: Any) -> Any:
    """What the layer above sees: `h` of an LSTM's `(h, c)`."""
    return hiddens[0] if cell == "lstm" else hiddens


def _jax_inputs(problem: Problem) -> Any:
    return jnp.asarray(problem.inputs, jnp.float32)


def _with_shared_weights(
    problem: Problem, make: Callable[[Any], Any], bias_hn_field: str
) -> Any:
    """An eqrnn or Equinox cell holding the shared weights. Only the cell's structure
    is built (`eqx.filter_eval_shape`), so its initialisers neither run nor compile;
    `bias_hn_field` names the GRU's `b_hn` field."""
    abstract = eqx.filter_eval_shape(make, jax.random.key(0))
    fields = ["weight_ih", "weight_hh", "bias"]
    values = [problem.weight_ih, problem.weight_hh, problem.folded_bias]
    if problem.cell == "gru":
        fields.append(bias_hn_field)
        values.append(problem.bias_hn)
    cell = eqx.tree_at(
        lambda c: tuple(getattr(c, f) for f in fields),
        abstract,
        tuple(jnp.asarray(v, jnp.float32) for v in values),
    )
    if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(cell)):
        raise TypeError(
            f"{type(cell).__name__} has parameters the benchmark does not set"
        )
    return cell


GENERIC = "eqrnn generic step"


def build_eqrnn(
    problem: Problem,
    *,
    unroll: Unroll = "auto",
    checkpoint: bool | int = False,
    name: str = "eqrnn",
    generic: bool = False,
) -> Implementation:
    """eqrnn's cell under `scan_all_hidden`, vmapped over the batch; `generic=True`
    makes the scan run the cell's generic step instead of its fused one."""
    size = problem.size
    cls = eqrnn.LSTMCell if problem.cell == "lstm" else eqrnn.GRUCell
    options = generic_step_options(cls) if generic else {}
    cell = _with_shared_weights(
        problem,
        lambda key: cls(
            size.input_size, size.hidden_size, dtype=jnp.float32, key=key, **options
        ),
        "bias_hn",
    )
    loss_fn, params = scan_loss(cell, unroll=unroll, checkpoint=checkpoint)
    return JaxImplementation(name, "eqrnn", loss_fn, params, _jax_inputs(problem))


def scan_loss(cell: Any, **scan_options: Any) -> tuple[Callable[[Any, Any], Any], Any]:
    """`(loss_fn, params)`: `loss_fn(params, inputs)` is the sum of `h` at every step
    of `eqrnn.scan_all_hidden(cell, x, **scan_options)`, vmapped over the batch of
    `inputs` (`(batch, time, input_size)`), with `params` the cell's arrays. Also
    the loss of `benchmarks/fused_vs_generic.py` and `benchmarks/profile_scan.py`."""
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    def loss_fn(params: Any, inputs: Any) -> Any:
        cell = eqx.combine(params, static)
        hiddens = jax.vmap(lambda x: eqrnn.scan_all_hidden(cell, x, **scan_options))(
            inputs
        )
        return jnp.sum(jax.tree.leaves(hiddens)[0])

    return loss_fn, params


def build_equinox(problem: Problem) -> Implementation:
    size = problem.size
    h = size.hidden_size
    cls = eqx.nn.LSTMCell if problem.cell == "lstm" else eqx.nn.GRUCell
    cell = _with_shared_weights(
        problem,
        lambda key: cls(size.input_size, h, dtype=jnp.float32, key=key),
        "bias_n",
    )
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    kind = problem.cell

    def loss_fn(params: Any, inputs: Any) -> Any:
        cell = eqx.combine(params, static)
        zeros = jnp.zeros(h, jnp.float32)
        init = (zeros, zeros) if kind == "lstm" else zeros

        def one_sequence(x: Any) -> Any:
            def step(hidden: Any, x_t: Any) -> tuple[Any, Any]:
                hidden = cell(x_t, hidden)
                return hidden, hidden

            _, hiddens = jax.lax.scan(step, init, x)
            return hiddens

        return jnp.sum(_h_of(kind, jax.vmap(one_sequence)(inputs)))

    return JaxImplementation(
        "equinox", "equinox", loss_fn, params, _jax_inputs(problem)
    )


_FLAX_LSTM_GATES = (("ii", "hi"), ("if_", "hf"), ("ig", "hg"), ("io", "ho"))


def _flax_params(problem: Problem, flax_cell: str) -> dict[str, Any]:
    """The shared weights as the pure-dict parameters of `nnx.RNN(flax_cell)`; Flax
    kernels are `(in, out)`."""
    h = problem.size.hidden_size
    w_ih, w_hh, bias = problem.weight_ih, problem.weight_hh, problem.folded_bias
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    if flax_cell == "LSTMCell":
        cell: dict[str, Any] = {}
        for g, (i_name, h_name) in enumerate(_FLAX_LSTM_GATES):
            rows = slice(g * h, (g + 1) * h)
            cell[i_name] = {"kernel": f32(w_ih[rows].T)}
            cell[h_name] = {"kernel": f32(w_hh[rows].T), "bias": f32(bias[rows])}
    elif flax_cell == "OptimizedLSTMCell":
        cell = {
            "dense_i": {"kernel": f32(w_ih.T)},
            "dense_h": {"kernel": f32(w_hh.T), "bias": f32(bias)},
        }
    else:
        cell = {
            "dense_i": {"kernel": f32(w_ih.T), "bias": f32(bias)},
            "dense_h": {"kernel": f32(w_hh.T)},
        }
    return {"cell": cell}


def build_flax(problem: Problem, flax_cell: str) -> Implementation:
    from flax import nnx

    size = problem.size
    h = size.hidden_size
    cls = getattr(nnx, flax_cell)

    def make() -> Any:
        cell = cls(
            size.input_size,
            h,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            rngs=nnx.Rngs(0),
        )
        return nnx.RNN(cell, rngs=False)

    # The structure only, so that the initialisers neither run nor compile.
    graphdef, params, rest = nnx.split(nnx.eval_shape(make), nnx.Param, ...)
    nnx.replace_by_pure_dict(params, _flax_params(problem, flax_cell))
    kind = problem.cell

    def loss_fn(params: Any, inputs: Any) -> Any:
        rnn = nnx.merge(graphdef, params, rest)
        zeros = jnp.zeros((inputs.shape[0], h), jnp.float32)
        carry = (zeros, zeros) if kind == "lstm" else zeros  # LSTM: (c, h)
        return jnp.sum(rnn(inputs, initial_carry=carry))

    return JaxImplementation(
        f"flax {flax_cell}", "flax", loss_fn, params, _jax_inputs(problem)
    )


@contextlib.contextmanager
def _without_kineto_banner() -> Iterator[None]:
    """torch.profiler's Kineto backend prints `USDT:`/`STAGE:` lines straight to file
    descriptor 2 when it starts and stops, and the allocator a warning for each block
    freed that was allocated before (which the peak rightly leaves out): drop those
    lines, pass on the rest."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(True):
                if not (
                    line.startswith(("USDT:", "STAGE:"))
                    or "allocated before the profiling started" in line
                ):
                    sys.stderr.write(line)


def _torch_peak_allocated(fn: Callable[[], Any]) -> tuple[int | None, str]:
    """The peak of the CPU allocator's live bytes while `fn` runs, above what was
    live before, or `(None, why)`."""
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
    except ImportError as e:
        return None, f"n/a (torch.profiler unavailable: {e})"
    with _without_kineto_banner():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    try:
        roots = prof.profiler.kineto_results.experimental_event_tree()  # pyright: ignore[reportOptionalMemberAccess]
    except AttributeError as e:
        return None, f"n/a (no allocation events: {e})"
    events: list[tuple[int, int]] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            fields: Any = node.extra_fields  # an allocation's fields
            if str(fields.device) == "cpu":
                events.append((node.start_time_ns, int(fields.alloc_size)))
    if not events:
        return None, "n/a (the profiler recorded no CPU allocations)"
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak, TORCH_MEMORY_METHOD


class TorchImplementation(Implementation):
    """`torch.nn.LSTM` / `torch.nn.GRU`, CPU, `batch_first=True`, float32."""

    def __init__(self, problem: Problem):
        import torch

        self._torch = torch
        size = problem.size
        cls = torch.nn.LSTM if problem.cell == "lstm" else torch.nn.GRU
        self.name = "torch"
        self.peer = "torch"
        self._module = cls(
            size.input_size, size.hidden_size, batch_first=True, dtype=torch.float32
        )
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                param = getattr(self._module, f"{name}_l0")
                param.copy_(torch.from_numpy(getattr(problem, name)))
        self._inputs = torch.from_numpy(problem.inputs)
        self._argument_bytes = problem.parameter_bytes + problem.inputs.nbytes
        self._memory: dict[str, dict[str, Any]] = {}

    def prepare(self, pass_: str) -> None:
        pass

    def call(self, pass_: str) -> Any:
        torch = self._torch
        if pass_ == "fwd":
            with torch.no_grad():
                out, _ = self._module(self._inputs)
                return out.sum()
        for param in self._module.parameters():
            param.grad = None
        inputs = self._inputs.detach().requires_grad_(True)
        out, _ = self._module(inputs)
        loss = out.sum()
        loss.backward()
        return loss, inputs.grad

    def summarize(self, pass_: str, result: Any) -> dict[str, float]:
        if pass_ == "fwd":
            return {"loss": float(result.item())}
        loss, grad_inputs = result
        norm = np.linalg.norm(grad_inputs.numpy().astype(np.float64))
        return {"loss": float(loss.item()), "grad_inputs_norm": float(norm)}

    def compile_info(self, pass_: str) -> dict[str, Any]:
        return {"method": "eager (nothing to compile)", "seconds": None}

    def measure_memory(self, pass_: str) -> None:
        peak, method = _torch_peak_allocated(lambda: self.call(pass_))
        self._memory[pass_] = {
            "peak_bytes": None if peak is None else self._argument_bytes + peak,
            "method": method,
            "argument_bytes": self._argument_bytes,
            "allocated_peak_bytes": peak,
        }

    def memory(self, pass_: str) -> dict[str, Any]:
        return self._memory[pass_]


# --- Peers -------------------------------------------------------------------------


def load_peers(
    requested: Sequence[str], out: TextOut
) -> tuple[list[str], dict[str, str]]:
    """Import each requested peer; one that fails is skipped with a printed note."""
    modules = {"torch": "torch", "flax": "flax.nnx", "equinox": "equinox"}
    loaded: list[str] = []
    skipped: dict[str, str] = {}
    for peer in requested:
        try:
            importlib.import_module(modules[peer])
        except ImportError as e:
            skipped[peer] = f"{type(e).__name__}: {e}"
            print(f"note: skipping {peer}, it cannot be imported ({e}).", file=out)
        else:
            loaded.append(peer)
    return loaded, skipped


def build_implementations(
    problem: Problem, peers: Sequence[str], config: BenchConfig
) -> list[Implementation]:
    impls = [
        build_eqrnn(problem, unroll=config.unroll, checkpoint=config.checkpoint),
        build_eqrnn(
            problem,
            unroll=config.unroll,
            checkpoint=config.checkpoint,
            name=GENERIC,
            generic=True,
        ),
    ]
    if "torch" in peers:
        impls.append(TorchImplementation(problem))
    if "flax" in peers:
        flax_cells = (
            ("LSTMCell", "OptimizedLSTMCell")
            if problem.cell == "lstm"
            else ("GRUCell",)
        )
        impls.extend(build_flax(problem, c) for c in flax_cells)
    if "equinox" in peers:
        impls.append(build_equinox(problem))
    return impls


# --- Measurement -------------------------------------------------------------------


@functools.cache
def _warm_up_compiler() -> None:
    """Compile a small vmapped scan and its gradient, untimed, once per process:
    the first XLA compilation in a process is slower than the same one later, and
    would count against whichever implementation is compiled first (eqrnn's)."""

    def loss(weight: Any, xs: Any) -> Any:
        def body(h: Any, x: Any) -> Any:
            h = jnp.tanh(jnp.concatenate([x, h]) @ weight)
            return h, h

        return jax.lax.scan(body, jnp.zeros(weight.shape[1]), xs)[1].sum()

    def batched(weight: Any, xs: Any) -> Any:
        return jax.vmap(loss, (None, 0))(weight, xs).sum()

    weight, xs = jnp.zeros((5, 3)), jnp.zeros((1, 4, 2))
    jax.jit(batched).lower(weight, xs).compile()
    jax.jit(jax.value_and_grad(batched)).lower(weight, xs).compile()


def measure(
    impls: Sequence[Implementation],
    passes: Sequence[str],
    reps: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """Compile, warm up, then time every (implementation, pass) round-robin.

    Returns one record per implementation with, per pass, the per-repetition times,
    their median and minimum, compile time, memory and the first call's loss.
    """
    records: list[dict[str, Any]] = []
    for impl in impls:
        record: dict[str, Any] = {"implementation": impl.name, "peer": impl.peer}
        for pass_ in passes:
            impl.prepare(pass_)
            first = impl.summarize(pass_, impl.call(pass_))
            for _ in range(warmup - 1):
                impl.call(pass_)
            if pass_ == "fwd" or "loss" not in record:
                record["loss"] = first["loss"]
            for key in ("grad_inputs_norm", "grad_params_norm"):
                if key in first:
                    record[key] = first[key]
            record[pass_] = {
                "first_loss": first["loss"],
                "times_ms": [],
                "compile": impl.compile_info(pass_),
            }
        records.append(record)

    slots = [(i, pass_) for i in range(len(impls)) for pass_ in passes]
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for rep in range(reps):
            shift = rep % len(slots)
            for i, pass_ in slots[shift:] + slots[:shift]:
                start = time.perf_counter()
                impls[i].call(pass_)
                elapsed = time.perf_counter() - start
                records[i][pass_]["times_ms"].append(1e3 * elapsed)
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()

    # Memory last: PyTorch's is measured under the profiler, which must not
    # perturb the timings.
    for impl, record in zip(impls, records, strict=True):
        for pass_ in passes:
            impl.measure_memory(pass_)
            record[pass_]["memory"] = impl.memory(pass_)
            times = record[pass_]["times_ms"]
            record[pass_]["median_ms"] = statistics.median(times)
            record[pass_]["min_ms"] = min(times)
    _add_ratios(records, passes)
    return records


def _add_ratios(records: list[dict[str, Any]], passes: Sequence[str]) -> None:
    by_name = {r["implementation"]: r for r in records}
    eqrnn = by_name.get("eqrnn")
    torch = by_name.get("torch")
    for record in records:
        if eqrnn is not None:
            ref = eqrnn["loss"]
            record["loss_rel_diff_vs_eqrnn"] = abs(record["loss"] - ref) / max(
                abs(ref), 1e-30
            )
        for pass_ in passes:
            entry = record[pass_]
            for key, ref_record in (("torch", torch), ("eqrnn", eqrnn)):
                for stat in ("median", "min"):
                    entry[f"{stat}_ratio_to_{key}"] = (
                        None
                        if ref_record is None
                        else entry[f"{stat}_ms"] / ref_record[pass_][f"{stat}_ms"]
                    )


# --- Output ------------------------------------------------------------------------


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _fmt_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


def _fmt_compile(info: dict[str, Any]) -> str:
    seconds = info.get("seconds")
    return "eager" if seconds is None else f"{seconds:.2f}"


def _fmt_mib(memory: dict[str, Any]) -> str:
    peak = memory.get("peak_bytes")
    if peak is None:
        return "n/a"
    mib = peak / 2**20
    return f"{mib:.3g}" if mib < 1000 else f"{mib:.0f}"


def _compile_and_memory_header(passes: Sequence[str]) -> list[str]:
    labels = "|".join(PASS_LABELS[p] for p in passes)
    return [f"compile s {labels}", f"peak MiB {labels}"]


def _compile_and_memory_cells(
    record: dict[str, Any], passes: Sequence[str]
) -> list[str]:
    return [
        "|".join(_fmt_compile(record[p]["compile"]) for p in passes),
        "|".join(_fmt_mib(record[p]["memory"]) for p in passes),
    ]


def format_block(
    title: str, records: Sequence[dict[str, Any]], passes: Sequence[str], reps: int
) -> str:
    """The table of one (cell, size): times in ms, median [min] over `reps`, and
    their ratios to PyTorch's median and min."""
    header = ["implementation"]
    for pass_ in passes:
        label = PASS_LABELS[pass_]
        header += [f"{label} ms", "/torch med|min"]
    header += _compile_and_memory_header(passes)
    rows = [header]
    for r in records:
        row = [r["implementation"]]
        for pass_ in passes:
            e = r[pass_]
            row += [
                f"{_fmt_ms(e['median_ms'])} [{_fmt_ms(e['min_ms'])}]",
                f"{_fmt_ratio(e['median_ratio_to_torch'])}|"
                f"{_fmt_ratio(e['min_ratio_to_torch'])}",
            ]
        row += _compile_and_memory_cells(r, passes)
        rows.append(row)
    lines = [f"== {title}: ms = median [min] of {reps} reps", *_table(rows)]
    speedups = []
    for r in records:
        if r["peer"] != "flax" or r[passes[0]]["median_ratio_to_eqrnn"] is None:
            continue
        parts = ", ".join(
            f"{PASS_LABELS[p]} {r[p]['median_ratio_to_eqrnn']:.2f}x" for p in passes
        )
        speedups.append(f"{r['implementation'].removeprefix('flax ')} {parts}")
    if speedups:
        lines.append(
            "eqrnn speedup vs Flax (flax median / eqrnn median): " + "; ".join(speedups)
        )
    generic = next((r for r in records if r["implementation"] == GENERIC), None)
    if generic is not None and generic[passes[0]]["median_ratio_to_eqrnn"] is not None:
        parts = ", ".join(
            f"{PASS_LABELS[p]} {generic[p]['median_ratio_to_eqrnn']:.2f}x"
            for p in passes
        )
        lines.append(
            "eqrnn fused step vs generic step (generic median / eqrnn median): " + parts
        )
    return "\n".join(lines)


def _loss_notes(records: Sequence[dict[str, Any]], tolerance: float) -> list[str]:
    notes = []
    for r in records:
        diff = r.get("loss_rel_diff_vs_eqrnn")
        if diff is not None and diff > tolerance:
            notes.append(
                f"note: {r['implementation']}'s loss {r['loss']:.7g} differs from "
                f"eqrnn's by {diff:.1e} (relative)."
            )
    return notes


# The environment variables that change how the C allocator serves and returns
# large buffers: glibc's tunables and `MALLOC_*` variables, a preloaded allocator
# and its settings (jemalloc's `MALLOC_CONF`, `TCMALLOC_*`). They change every
# implementation's times, PyTorch's most (whether each call's buffers are fresh
# pages, faulted in on first touch): benchmarks/NOTES.md, "The memory allocator".
ALLOCATOR_VARIABLES = ("GLIBC_TUNABLES", "LD_PRELOAD")
ALLOCATOR_PREFIXES = ("MALLOC_", "TCMALLOC_")


def allocator_environment() -> dict[str, str]:
    """The allocator settings of this process's environment (`ALLOCATOR_VARIABLES`
    and the variables named `ALLOCATOR_PREFIXES*`) that are set."""
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name in ALLOCATOR_VARIABLES or name.startswith(ALLOCATOR_PREFIXES)
    }


def machine_info(torch_threads: int | None) -> dict[str, Any]:
    def version(module: str) -> str | None:
        mod = sys.modules.get(module)
        return None if mod is None else getattr(mod, "__version__", None)

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "jax_cores": jax_core_count(),
        "torch_num_threads": torch_threads,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "allocator_env": allocator_environment(),
        "eqrnn_source": _source_revision(),
        "versions": {
            "eqrnn": eqrnn.__version__,
            "jax": jax.__version__,
            "jaxlib": version("jaxlib"),
            "equinox": eqx.__version__,
            "numpy": np.__version__,
            "torch": version("torch"),
            "flax": version("flax"),
        },
    }


def _source_revision() -> dict[str, Any] | None:
    """The git commit of the eqrnn source being measured, and the files of `eqrnn/`
    changed since (`None` outside a git checkout)."""
    package = os.path.dirname(os.path.abspath(eqrnn.__file__))

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=package,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    # Only a checkout of eqrnn itself: not, say, a project whose virtual environment
    # holds an installed eqrnn.
    top = git("rev-parse", "--show-toplevel")
    if top is None or os.path.realpath(top.strip()) != os.path.realpath(
        os.path.dirname(package)
    ):
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    changed = git("status", "--porcelain", "--", ".") or ""
    return {
        "commit": commit.strip(),
        "changed_files": [line[3:] for line in changed.splitlines() if line.strip()],
    }


def jax_core_count() -> int:
    """The cores XLA's CPU thread pool uses: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --- Runs --------------------------------------------------------------------------


def run_bench(config: BenchConfig, out: TextOut | None = None) -> dict[str, Any]:
    """Run the benchmark that `config` describes, print its tables to `out` (default
    stdout), write the JSON report if `config.json_path` is set, and return it."""
    # sys.stdout is typed `TextIO | Any`: declare, so that the `Any` does not leak.
    stream: TextOut = sys.stdout if out is None else out
    # The studies run eqrnn alone.
    study = config.checkpoint_study or config.parallel_study or config.long_study
    requested = () if study else config.peers
    peers, skipped = load_peers(requested, stream)
    torch_threads, restore_threads = _set_torch_threads(peers)
    try:
        report: dict[str, Any] = {
            "command": list(config.command),
            "machine": machine_info(torch_threads),
            "settings": {
                "cells": list(config.cells),
                "sizes": [s.as_dict() for s in config.sizes],
                "peers": list(requested),
                "passes": list(config.passes),
                "reps": config.reps,
                "warmup": config.warmup,
                "eqrnn_options": {
                    "unroll": config.unroll,
                    "checkpoint": config.checkpoint,
                },
                "seed": config.seed,
                "dtype": "float32",
                "loss": STUDY_LOSS
                if config.parallel_study or config.long_study
                else "sum of h over every step and example; gradients w.r.t. "
                "the parameters and the inputs",
                "compile_method": JAX_COMPILE_METHOD,
                "timer": "time.perf_counter, round-robin over implementations",
            },
            "skipped_peers": skipped,
        }
        machine = report["machine"]
        threads = "" if torch_threads is None else f", torch threads {torch_threads}"
        order = "one after another" if config.long_study else "round-robin"
        print(
            f"benchmarks/bench.py: jax {machine['versions']['jax']} on "
            f"{machine['jax_backend']} ({machine['jax_cores']} cores){threads}, "
            f"float32, {config.reps} reps {order} after {config.warmup} warm-up "
            "calls.",
            file=stream,
        )
        allocator = machine["allocator_env"]
        print(
            "memory allocator: "
            + (
                ", ".join(f"{k}={v}" for k, v in allocator.items())
                if allocator
                else "the C library's defaults"
            )
            + " (it changes every implementation's times, see BENCHMARKS.md).",
            file=stream,
        )
        print(f"compile s: {JAX_COMPILE_METHOD}.", file=stream)
        print(f"peak MiB, JAX: {JAX_MEMORY_METHOD}.", file=stream)
        if "torch" in peers:
            print(f"peak MiB, torch: {TORCH_MEMORY_METHOD}.", file=stream)
        if config.unroll != "auto" or config.checkpoint is not False:
            print(
                f"eqrnn options: unroll={config.unroll}, "
                f"checkpoint={config.checkpoint}.",
                file=stream,
            )
        if config.checkpoint_study:
            report["checkpoint_study"] = run_checkpoint_study(config, stream)
        elif config.parallel_study:
            report["parallel_study"] = run_parallel_study(config, stream)
        elif config.long_study:
            report["long_study"] = run_long_study(config, stream)
        else:
            report["results"] = _run_comparison(config, peers, stream)
    finally:
        restore_threads()
    if config.json_path is not None:
        with open(config.json_path, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        print(f"wrote {config.json_path}", file=stream)
    return report


def _set_torch_threads(peers: Sequence[str]) -> tuple[int | None, Callable[[], None]]:
    """Give PyTorch as many threads as XLA uses cores; returns the count and a
    function restoring the previous one."""
    if "torch" not in peers:
        return None, lambda: None
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(jax_core_count())
    return torch.get_num_threads(), lambda: torch.set_num_threads(previous)


def _run_comparison(
    config: BenchConfig, peers: Sequence[str], out: TextOut
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for cell in config.cells:
        for size in config.sizes:
            problem = make_problem(cell, size, config.seed)
            impls = build_implementations(problem, peers, config)
            records = measure(impls, config.passes, config.reps, config.warmup)
            for r in records:
                r["cell"] = cell
                r["size"] = size.as_dict()
            results.extend(records)
            title = f"{cell} {size.name} ({size.describe()})"
            print("", file=out)
            print(format_block(title, records, config.passes, config.reps), file=out)
            for note in _loss_notes(records, tolerance=1e-3):
                print(note, file=out)
            out.flush()
    return results


def run_checkpoint_study(config: BenchConfig, out: TextOut) -> dict[str, Any]:
    """eqrnn LSTM forward+backward with `checkpoint=False` against `checkpoint=True`:
    time and XLA's planned memory."""
    custom = [s for s in config.sizes if s.name == "custom"]
    size = custom[0] if custom else CHECKPOINT_STUDY_SIZE
    problem = make_problem("lstm", size, config.seed)
    impls = [
        build_eqrnn(
            problem, unroll=config.unroll, checkpoint=flag, name=f"checkpoint={flag}"
        )
        for flag in (False, True)
    ]
    records = measure(impls, ("fwd_bwd",), config.reps, config.warmup)
    plain, ckpt = (r["fwd_bwd"] for r in records)

    def ratio(key: str) -> float | None:
        a, b = ckpt["memory"].get(key), plain["memory"].get(key)
        return None if a is None or b is None or b == 0 else a / b

    study = {
        "cell": "lstm",
        "size": size.as_dict(),
        "results": records,
        "time_ratio_median": ckpt["median_ms"] / plain["median_ms"],
        "time_ratio_min": ckpt["min_ms"] / plain["min_ms"],
        "temp_bytes_ratio": ratio("temp_bytes"),
        "peak_bytes_ratio": ratio("peak_bytes"),
        "loss_rel_diff": abs(records[1]["loss"] - records[0]["loss"])
        / max(abs(records[0]["loss"]), 1e-30),
    }
    lines = [
        "",
        f"== checkpoint study: eqrnn lstm fwd+bwd, {size.describe()}: "
        f"ms = median [min] of {config.reps} reps",
    ]
    for r in records:
        e = r["fwd_bwd"]
        temp = e["memory"].get("temp_bytes")
        temp_s = "n/a" if temp is None else f"{temp / 2**20:.3g}"
        lines.append(
            f"{r['implementation']:<17} {_fmt_ms(e['median_ms'])} "
            f"[{_fmt_ms(e['min_ms'])}] ms  temp {temp_s} MiB  "
            f"peak {_fmt_mib(e['memory'])} MiB  compile {_fmt_compile(e['compile'])} s"
        )
    lines.append(
        "checkpoint=True / checkpoint=False: time "
        f"{_fmt_ratio(study['time_ratio_median'])} (median), "
        f"{_fmt_ratio(study['time_ratio_min'])} (min); temp bytes "
        f"{_fmt_ratio(study['temp_bytes_ratio'])}; peak bytes "
        f"{_fmt_ratio(study['peak_bytes_ratio'])} (XLA buffer plan)"
    )
    print("\n".join(lines), file=out)
    return study


# --- Studies of every cell: parallel-in-time and long sequences --------------------

# Command-line name -> class. Every one is built as `cls(input_size, hidden_size,
# dtype=float32, key=...)` with its default initialisation; `RGLRU` needs
# `input_size == hidden_size`, so the studies use I = H throughout.
CELL_CLASSES: dict[str, type[Any]] = {
    "simple": eqrnn.SimpleCell,
    "gru": eqrnn.GRUCell,
    "lstm": eqrnn.LSTMCell,
    "mgu": eqrnn.MGUCell,
    "mingru": eqrnn.MinGRU,
    "minlstm": eqrnn.MinLSTM,
    "lru": eqrnn.LRU,
    "rglru": eqrnn.RGLRU,
    "lnlstm": eqrnn.LayerNormLSTMCell,
    "lngru": eqrnn.LayerNormGRUCell,
    "slstm": eqrnn.SLSTMCell,
    "mlstm": eqrnn.MLSTMCell,
}
# Constructor options besides the sizes: xLSTM's cells with four heads.
CELL_OPTIONS: dict[str, dict[str, Any]] = {
    "slstm": {"num_heads": 4},
    "mlstm": {"num_heads": 4},
}
ALL_CELLS = tuple(CELL_CLASSES)
LINEAR_CELLS = ("mingru", "minlstm", "lru", "rglru")
# The cells that run in every `--scan-modes` (in parallel over time).
MODE_CELLS = (*LINEAR_CELLS, "mlstm")
SCAN_MODES = ("sequential", "associative", "chunked")
# Newton's method for the step-by-step cells: `mode="newton"` and each
# linearisation (`eqrnn.Newton("full" | "blocks" | "diagonal")`).
NEWTON_MODES = ("newton", "newton-full", "newton-blocks", "newton-diagonal")


def scan_mode(mode: str) -> Any:
    """The `mode=` of the scan helpers for a command-line mode name."""
    if mode.startswith("newton-"):
        return eqrnn.Newton(mode.removeprefix("newton-"))
    return mode


def modes_for(cell: str, modes: Sequence[str]) -> tuple[str | None, ...]:
    """The `--scan-modes` that `cell` runs in (`None`: its default, unlabelled):
    the linear-scan modes for the cells that run in parallel over time, else the
    default and the Newton modes."""
    if cell in MODE_CELLS:
        return tuple(m for m in modes if m not in NEWTON_MODES)
    return (None, *(m for m in modes if m in NEWTON_MODES))


PARALLEL_BASELINE = "gru"
PARALLEL_CELLS = (PARALLEL_BASELINE, *LINEAR_CELLS)
PARALLEL_LENGTHS = (1024, 4096, 16384)
PARALLEL_BATCH = 16
PARALLEL_HIDDEN = 256
PARALLEL_REPS = 3
PARALLEL_TARGET_T = 4096
PARALLEL_TARGET_SPEEDUP = 3.0

LONG_CELLS = ALL_CELLS
LONG_LENGTHS = (1000, 10000, 100000)
LONG_BATCH = 1
LONG_HIDDEN = 32
LONG_REPS = 3
LONG_MODE = "auto"

STUDY_WARMUP = 1
STUDY_LOSS = (
    "sum of cell.output(hidden) over every step and example (h for GRU/LSTM-type "
    "cells, the output y for LRU); gradients w.r.t. the parameters and the inputs"
)
RSS_METHOD = (
    "peak resident set size of a fresh process that ran only this configuration: "
    "VmHWM of /proc/self/status (Linux), else getrusage(RUSAGE_SELF).ru_maxrss; it "
    "includes the Python, JAX and XLA runtime and the compilation"
)


def cell_label(name: str) -> str:
    """The class name of a command-line cell name: `"mingru"` -> `"MinGRU"`."""
    return CELL_CLASSES[name].__name__


def make_cell(name: str, size: int, seed: int) -> Any:
    """An eqrnn cell with `input_size = hidden_size = size`, float32, default
    initialisation from `seed`."""
    cls = CELL_CLASSES[name]
    options = CELL_OPTIONS.get(name, {})
    return cls(size, size, dtype=jnp.float32, key=jax.random.key(seed), **options)


def output_sum_loss(
    static: Any, *, mode: str = "auto", checkpoint: bool | int = False
) -> Callable[[Any, Any], Any]:
    """`loss_fn(params, inputs)` for inputs `(batch, time, input_size)`: the sum of
    `cell.output(hidden)` over every step and example, where `cell =
    eqx.combine(params, static)` runs over each sequence with `scan_all_hidden(...,
    mode=mode, checkpoint=checkpoint)` under `jax.vmap`."""
    mode_arg = scan_mode(mode)

    def loss_fn(params: Any, inputs: Any) -> Any:
        cell = eqx.combine(params, static)

        def one_sequence(x: Any) -> Any:
            hiddens = eqrnn.scan_all_hidden(
                cell, x, mode=mode_arg, checkpoint=checkpoint
            )
            return jax.vmap(cell.output)(hiddens)

        return jnp.sum(jax.vmap(one_sequence)(inputs))

    return loss_fn


def study_inputs(batch: int, time_steps: int, size: int, seed: int) -> Any:
    """N(0, 1) inputs `(batch, time, size)`, float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, time_steps, size), dtype=np.float32)
    return jnp.asarray(x, jnp.float32)


def build_cell_implementation(
    name: str,
    size: int,
    inputs: Any,
    seed: int,
    *,
    mode: str | None = None,
    checkpoint: bool | int = False,
) -> JaxImplementation:
    """eqrnn cell `name` (I = H = `size`) over `inputs`, loss `output_sum_loss`.
    `mode=None`: the cell's default (`"auto"`), labelled without a mode."""
    cell = make_cell(name, size, seed)
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    loss_fn = output_sum_loss(static, mode=mode or "auto", checkpoint=checkpoint)
    label = cell_label(name) if mode is None else f"{cell_label(name)} {mode}"
    return JaxImplementation(label, "eqrnn", loss_fn, params, inputs)


def _fmt_rate(per_s: float | None) -> str:
    if per_s is None:
        return "n/a"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= scale:
            return f"{per_s / scale:.3g}{suffix}"
    return f"{per_s:.3g}"


def _fmt_speedup(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _table(rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Aligned columns: the first `left` left-aligned, the rest right-aligned."""
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if j < left else c.rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def run_parallel_study(config: BenchConfig, out: TextOut) -> dict[str, Any]:
    """Every parallel-in-time cell in every scan mode next to eqrnn's `GRUCell`, at
    each sequence length: forward and forward+backward time, tokens per second,
    speedup over `GRUCell`, compile time and XLA's planned peak memory. Each length
    is one round-robin over all of them."""
    cells = config.cells or PARALLEL_CELLS
    modes = config.scan_modes or SCAN_MODES
    lengths = config.lengths or PARALLEL_LENGTHS
    batch = config.batch_size or PARALLEL_BATCH
    size = config.hidden_size or PARALLEL_HIDDEN
    passes = config.passes
    study: dict[str, Any] = {
        "cells": list(cells),
        "scan_modes": list(modes),
        "lengths": list(lengths),
        "batch": batch,
        "input_size": size,
        "hidden_size": size,
        "passes": list(passes),
        "loss": STUDY_LOSS,
        "baseline": cell_label(PARALLEL_BASELINE),
        "tokens_per_s": "batch * T / time (median time; the _best rate from the min)",
        "speedup_vs_gru": "GRUCell's time / this time at the same T (median, min)",
        "results": [],
    }
    print(
        f"\n== parallel study: eqrnn cells, B={batch}, I=H={size}, float32; loss: "
        f"{STUDY_LOSS}. ms = median [min] of {config.reps} reps; tok/s = B*T / "
        "median; xGRU = GRUCell's time / this time, median|min, same T.",
        file=out,
    )
    for t in lengths:
        inputs = study_inputs(batch, t, size, config.seed)
        impls: list[Implementation] = []
        keys: list[tuple[str, str | None]] = []
        for cell in cells:
            for mode in modes_for(cell, modes):
                impls.append(
                    build_cell_implementation(
                        cell, size, inputs, config.seed, mode=mode
                    )
                )
                keys.append((cell, mode))
        records = measure(impls, passes, config.reps, config.warmup)
        baseline = next(
            (r for r, (c, _) in zip(records, keys, strict=True) if c == "gru"), None
        )
        for record, (cell, mode) in zip(records, keys, strict=True):
            record.update(
                {
                    "cell": cell_label(cell),
                    "mode": mode,
                    "T": t,
                    "size": {"T": t, "B": batch, "I": size, "H": size},
                }
            )
            record["finite"] = all(
                math.isfinite(record.get(k, 0.0))
                for k in ("loss", "grad_inputs_norm", "grad_params_norm")
            )
            for pass_ in passes:
                e = record[pass_]
                e["tokens_per_s"] = batch * t / (e["median_ms"] / 1e3)
                e["tokens_per_s_best"] = batch * t / (e["min_ms"] / 1e3)
                for stat in ("median", "min"):
                    e[f"speedup_vs_gru_{stat}"] = (
                        None
                        if baseline is None
                        else baseline[pass_][f"{stat}_ms"] / e[f"{stat}_ms"]
                    )
        study["results"].extend(records)
        print("", file=out)
        print(
            _format_parallel_block(records, passes, batch, size, t, config.reps),
            file=out,
        )
        out.flush()
    study["mingru_fwd_bwd_speedup"] = _mingru_summary(study["results"])
    for line in _mingru_summary_lines(study["mingru_fwd_bwd_speedup"]):
        print(line, file=out)
    return study


def _format_parallel_block(
    records: Sequence[dict[str, Any]],
    passes: Sequence[str],
    batch: int,
    size: int,
    t: int,
    reps: int,
) -> str:
    header = ["cell", "mode"]
    for pass_ in passes:
        label = PASS_LABELS[pass_]
        header += [f"{label} ms", "tok/s", "xGRU"]
    header += _compile_and_memory_header(passes)
    rows = [header]
    for r in records:
        row = [r["cell"], r["mode"] or "-"]
        for pass_ in passes:
            e = r[pass_]
            row += [
                f"{_fmt_ms(e['median_ms'])} [{_fmt_ms(e['min_ms'])}]",
                _fmt_rate(e["tokens_per_s"]),
                f"{_fmt_speedup(e['speedup_vs_gru_median'])}|"
                f"{_fmt_speedup(e['speedup_vs_gru_min'])}",
            ]
        row += _compile_and_memory_cells(r, passes)
        rows.append(row)
    title = f"== T={t} (B={batch} I={size} H={size}): ms = median [min] of {reps} reps"
    lines = [title, *_table(rows, left=2)]
    for r in records:
        if not r["finite"]:
            lines.append(
                f"note: {r['implementation']}: loss {r['loss']}, gradient norms "
                f"{r.get('grad_inputs_norm')} (inputs), "
                f"{r.get('grad_params_norm')} (parameters): not finite."
            )
    return "\n".join(lines)


def _mingru_summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """MinGRU's fwd+bwd speedup over GRUCell, per T and mode."""
    summary: dict[str, Any] = {}
    for r in results:
        if r["cell"] != "MinGRU" or "fwd_bwd" not in r:
            continue
        e = r["fwd_bwd"]
        if e["speedup_vs_gru_median"] is None:
            continue
        summary.setdefault(str(r["T"]), {})[r["mode"]] = {
            "median": e["speedup_vs_gru_median"],
            "min": e["speedup_vs_gru_min"],
        }
    return summary


def _mingru_summary_lines(summary: dict[str, Any]) -> list[str]:
    if not summary:
        return []
    lines = [
        "",
        f"MinGRU fwd+bwd speedup over GRUCell, median [min] (target: >= "
        f"{PARALLEL_TARGET_SPEEDUP:g}x at T={PARALLEL_TARGET_T}):",
    ]
    for t, by_mode in summary.items():
        parts = ", ".join(
            f"{mode} {v['median']:.2f}x [{v['min']:.2f}x]"
            for mode, v in by_mode.items()
        )
        lines.append(f"  T={t}: {parts}")
    if str(PARALLEL_TARGET_T) in summary:
        best = max(v["median"] for v in summary[str(PARALLEL_TARGET_T)].values())
        met = "met" if best >= PARALLEL_TARGET_SPEEDUP else "not met"
        lines.append(
            f"  target at T={PARALLEL_TARGET_T}: {met} (best median {best:.2f}x)"
        )
    return lines


# --- Long sequences with checkpointing ---------------------------------------------

_LONG_RESULT_MARKER = "EQRNN-LONG-STUDY-RESULT "


def _peak_rss_bytes() -> tuple[int | None, str]:
    """This process's peak resident set size so far, and how it was read.

    On Linux, `VmHWM` of `/proc/self/status`: the high-water mark of this process's
    own address space. `getrusage`'s `ru_maxrss` is not used there because Linux
    carries the parent's high-water mark over `fork`/`vfork` + `exec` into it, so a
    child of a large process would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None, "n/a (no /proc/self/status, no resource module)"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


def _all_finite(tree: Any) -> bool:
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(tree))


def run_long_configuration(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration of the long study, in this process: compile forward+backward
    of `scan_all_hidden(cell, x, checkpoint=..., mode=...)` under `jax.vmap`, check
    XLA's plan against the memory limit, run it once (is the loss and every gradient
    finite?), warm up, time `reps` calls. `spec` holds `cell`, `T`, `batch`,
    `hidden_size`, `checkpoint`, `mode`, `reps`, `warmup`, `seed`, `memory_limit_bytes`
    and `measure_rss` (report the process's peak resident memory: meaningful only in
    a process that runs this configuration alone)."""
    t, batch, size = spec["T"], spec["batch"], spec["hidden_size"]
    result: dict[str, Any] = {
        k: spec[k] for k in ("cell", "T", "batch", "hidden_size", "checkpoint", "mode")
    }
    result["cell"] = cell_label(spec["cell"])
    rss: dict[str, Any] = {}
    measure_rss = spec["measure_rss"]
    if measure_rss:
        jax.block_until_ready(jnp.zeros(()) + 1)  # start the backend first
        rss["after_start_bytes"], how = _peak_rss_bytes()
        rss["method"] = f"{RSS_METHOD} (read: {how})"
    else:
        rss["method"] = "n/a (run in the benchmark's own process)"
    result["rss"] = rss

    inputs = study_inputs(batch, t, size, spec["seed"])
    mode = spec["mode"] if spec["cell"] in MODE_CELLS else "auto"
    impl = build_cell_implementation(
        spec["cell"],
        size,
        inputs,
        spec["seed"],
        mode=mode,
        checkpoint=spec["checkpoint"],
    )
    impl.prepare("fwd_bwd")
    result["compile"] = impl.compile_info("fwd_bwd")
    result["memory"] = memory = impl.memory("fwd_bwd")
    if measure_rss:
        rss["after_compile_bytes"] = _peak_rss_bytes()[0]
    planned = memory.get("peak_bytes")
    if planned is not None and planned > spec["memory_limit_bytes"]:
        result["skipped"] = (
            f"XLA plans {planned / 2**30:.2f} GiB, over the "
            f"{spec['memory_limit_bytes'] / 2**30:g} GiB limit: not run"
        )
        return result

    loss, grads = impl.call("fwd_bwd")
    result["loss"] = float(loss)
    result["grad_inputs_norm"] = _norm(grads[1])
    result["grad_params_norm"] = _norm(grads[0])
    result["finite"] = bool(np.isfinite(float(loss))) and _all_finite(grads)
    del loss, grads
    for _ in range(spec["warmup"] - 1):
        impl.call("fwd_bwd")
    times: list[float] = []
    gc.collect()
    for _ in range(spec["reps"]):
        start = time.perf_counter()
        impl.call("fwd_bwd")
        times.append(1e3 * (time.perf_counter() - start))
    result["times_ms"] = times
    result["median_ms"] = statistics.median(times)
    result["min_ms"] = min(times)
    result["tokens_per_s"] = batch * t / (result["median_ms"] / 1e3)
    if measure_rss:
        rss["peak_bytes"] = _peak_rss_bytes()[0]
    return result


def _long_study_worker() -> None:
    """The entry point of a long-study subprocess: a JSON spec on stdin, the result
    as one marked JSON line on stdout."""
    spec = json.loads(sys.stdin.read())
    result = run_long_configuration(spec)
    print(_LONG_RESULT_MARKER + json.dumps(result), flush=True)


def run_long_configuration_in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    """`run_long_configuration(spec)` in a fresh Python process, so that its peak
    resident memory is this configuration's alone. A process that fails (say, killed
    for memory) gives a result with `error` and the end of its stderr."""
    # The same eqrnn as this process's, and this harness.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(eqrnn.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, env.get("PYTHONPATH")) if p
    )
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {here!r}); "
        "from _harness import _long_study_worker; _long_study_worker()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps({**spec, "measure_rss": True}),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_LONG_RESULT_MARKER):
            return json.loads(line.removeprefix(_LONG_RESULT_MARKER))
    return {
        "cell": cell_label(spec["cell"]),
        **{k: spec[k] for k in ("T", "batch", "hidden_size", "checkpoint", "mode")},
        "error": f"the subprocess exited with status {done.returncode}",
        "stderr_tail": done.stderr[-2000:],
    }


def run_long_study(config: BenchConfig, out: TextOut) -> dict[str, Any]:
    """Forward+backward of every cell over long sequences with `checkpoint=True`
    and `checkpoint=False`: time, XLA's planned peak, the peak resident memory of a
    process that ran only that configuration, and whether the loss and every
    gradient are finite."""
    cells = config.cells or LONG_CELLS
    lengths = config.lengths or LONG_LENGTHS
    batch = config.batch_size or LONG_BATCH
    size = config.hidden_size or LONG_HIDDEN
    modes = config.scan_modes or (LONG_MODE,)
    limit = int(config.memory_limit_gib * 2**30)
    study: dict[str, Any] = {
        "cells": list(cells),
        "lengths": list(lengths),
        "batch": batch,
        "input_size": size,
        "hidden_size": size,
        "scan_modes": list(modes),
        "checkpoints": [True, False],
        "loss": STUDY_LOSS,
        "memory_limit_bytes": limit,
        "process": "in-process" if config.in_process else "one subprocess each",
        "rss_method": None if config.in_process else RSS_METHOD,
        "timing": "each configuration on its own, one after another (not "
        "round-robin): median and min of reps calls after warm-up",
        "results": [],
    }
    where = (
        "all in this process (no per-configuration RSS)"
        if config.in_process
        else "each in a fresh process (RSS = its peak resident memory)"
    )
    print(
        f"\n== long study: fwd+bwd of scan_all_hidden(cell, x, checkpoint=...) under "
        f"vmap, B={batch}, I=H={size}, float32, {config.reps} reps after "
        f"{config.warmup} warm-up call(s), configurations {where}; "
        f"not run where XLA plans more than {config.memory_limit_gib:g} GiB.",
        file=out,
    )
    print(
        "ms = median [min]; plan = XLA buffer plan (argument + output + temp) MiB; "
        "finite = loss and every gradient finite.",
        file=out,
    )
    rows: list[list[str]] = [
        [
            "cell",
            "mode",
            "T",
            "ckpt=True ms",
            "plan",
            "RSS",
            "ckpt=False ms",
            "plan",
            "RSS",
            "finite",
            "compile s T|F",
        ]
    ]
    for cell in cells:
        for mode in modes if cell in MODE_CELLS else ("auto",):
            for t in lengths:
                pair = []
                for checkpoint in (True, False):
                    spec = {
                        "cell": cell,
                        "T": t,
                        "batch": batch,
                        "hidden_size": size,
                        "checkpoint": checkpoint,
                        "mode": mode,
                        "reps": config.reps,
                        "warmup": config.warmup,
                        "seed": config.seed,
                        "memory_limit_bytes": limit,
                        "measure_rss": False,
                    }
                    if config.in_process:
                        result = run_long_configuration(spec)
                    else:
                        result = run_long_configuration_in_subprocess(spec)
                    study["results"].append(result)
                    pair.append(result)
                    print(_long_progress(result), file=out)
                    out.flush()
                rows.append(_long_row(pair, mode if cell in MODE_CELLS else "-"))
    print("", file=out)
    print("\n".join(_table(rows, left=2)), file=out)
    for r in study["results"]:
        if "error" in r:
            print(
                f"note: {r['cell']} T={r['T']} checkpoint={r['checkpoint']}: "
                f"{r['error']}",
                file=out,
            )
        elif r.get("finite") is False:
            print(
                f"note: {r['cell']} T={r['T']} checkpoint={r['checkpoint']}: loss "
                f"{r['loss']}, gradient norms {r['grad_inputs_norm']} (inputs), "
                f"{r['grad_params_norm']} (parameters): not finite.",
                file=out,
            )
    return study


def _long_progress(r: dict[str, Any]) -> str:
    where = f"{r['cell']} {r['mode']} T={r['T']} checkpoint={r['checkpoint']}"
    if "error" in r:
        return f"  {where}: {r['error']}"
    plan = f"plan {_fmt_mib(r['memory'])} MiB"
    if "skipped" in r:
        return f"  {where}: {r['skipped']}"
    peak = r["rss"].get("peak_bytes")
    rss = "" if peak is None else f", RSS {peak / 2**20:.0f} MiB"
    finite = "finite" if r["finite"] else "NOT FINITE"
    return (
        f"  {where}: {_fmt_ms(r['median_ms'])} [{_fmt_ms(r['min_ms'])}] ms, {plan}"
        f"{rss}, compile {_fmt_compile(r['compile'])} s, {finite}"
    )


def _long_row(pair: Sequence[dict[str, Any]], mode: str) -> list[str]:
    first = pair[0]
    row = [first["cell"], mode, str(first["T"])]
    finite = []
    for r in pair:
        if "error" in r:
            row += ["failed", "n/a", "n/a"]
            finite.append("?")
            continue
        plan = _fmt_mib(r["memory"])
        peak = r["rss"].get("peak_bytes")
        rss = "n/a" if peak is None else f"{peak / 2**20:.0f}"
        if "skipped" in r:
            row += ["not run", plan, "n/a"]
            finite.append("-")
            continue
        row += [f"{_fmt_ms(r['median_ms'])} [{_fmt_ms(r['min_ms'])}]", plan, rss]
        finite.append("yes" if r["finite"] else "NO")
    compiles = [
        "n/a" if "compile" not in r else _fmt_compile(r["compile"]) for r in pair
    ]
    return [*row, "|".join(finite), "|".join(compiles)]
