"""Training utilities: truncated backpropagation through time, data-parallel
sharding, and checkpoints that refuse to load into the wrong model.

Nothing here imports an optimiser library: an optimiser is anything with optax's
`update(grads, state, params) -> (updates, state)` method.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, PyTree, Scalar, Shaped

from ._misc import SPEED_SETTING


def _check_chunk_length(chunk_length: Any, num_steps: int) -> int:
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, int):
        raise TypeError(
            f"truncated_bptt: `chunk_length` must be an int, got {chunk_length!r}."
        )
    if chunk_length <= 0:
        raise ValueError(
            f"truncated_bptt: `chunk_length` must be positive, got {chunk_length}."
        )
    if chunk_length > num_steps:
        raise ValueError(
            f"truncated_bptt: `chunk_length` ({chunk_length}) is longer than the "
            f"sequence ({num_steps} steps)."
        )
    return chunk_length


def truncated_bptt(
    loss_fn: Callable[[Any, Any, Any], tuple[Scalar, Any]],
    optimizer: Any,
    model: PyTree,
    opt_state: PyTree,
    sequence: PyTree[Shaped[ArrayLike, "..."]],
    hidden: PyTree[Float[ArrayLike, "..."]],
    *,
    chunk_length: int,
    time_axis: int = 0,
) -> tuple[PyTree, PyTree, PyTree[Float[Array, "..."]], Float[Array, " num_chunks"]]:
    """Train over a long sequence in chunks of `chunk_length` steps: one optimiser
    update per chunk, the hidden state carried from chunk to chunk, the gradient
    stopped at chunk boundaries. Memory grows with `chunk_length`, not with the length
    of the sequence, and the forward pass is that of one scan over the whole sequence.

    !!! example

        ```python
        import optax

        cell = eqrnn.GRUCell(2, 16, key=jax.random.key(0))
        xs, ys = jnp.ones((1000, 2)), jnp.zeros(1000)  # one long sequence


        def loss_fn(cell, chunk, hidden):
            x, y = chunk  # (chunk_length, ...) each
            hs = eqrnn.scan_all_hidden(cell, x, hidden)
            return jnp.mean((hs.sum(-1) - y) ** 2), hs[-1]  # (loss, next state)


        optimizer = optax.adam(1e-3)
        opt_state = optimizer.init(eqx.filter(cell, eqx.is_inexact_array))
        cell, opt_state, hidden, losses = eqx.filter_jit(eqrnn.truncated_bptt)(
            loss_fn, optimizer, cell, opt_state, (xs, ys), cell.init_hidden(),
            chunk_length=50,
        )  # losses: (20,), one per chunk
        ```

    **Arguments:**

    - `loss_fn`: `loss_fn(model, chunk, hidden) -> (loss, new_hidden)`, where `chunk`
        is `sequence` cut to `chunk_length` steps and `new_hidden` is the state after
        the chunk (what the next chunk starts from). Differentiated with respect to
        the floating-point arrays of `model`.
    - `optimizer`: an optax-style optimiser (`update(grads, state, params)`).
    - `model`: the model; any pytree (an `eqx.Module`).
    - `opt_state`: the optimiser's state for `model`'s floating-point arrays.
    - `sequence`: a pytree of arrays sharing a time axis (`time_axis`), e.g.
        `(inputs, targets)`.
    - `hidden`: the state the first chunk starts from.
    - `chunk_length`: steps per chunk, `0 < chunk_length <= time`. A last chunk
        shorter than the others is run as one more step (one more compilation).
    - `time_axis`: the axis of `sequence`'s arrays that is time (`1` for arrays laid
        out `(batch, time, ...)`).

    **Returns:**

    `(model, opt_state, hidden, losses)`: the trained model and optimiser state, the
    hidden state after the whole sequence, and each chunk's loss, shape
    `(num_chunks,)`.
    """
    leaves = jax.tree.leaves(sequence)
    if not leaves:
        raise ValueError("truncated_bptt: `sequence` holds no arrays.")
    lengths = {jnp.shape(x)[time_axis] for x in leaves}
    if len(lengths) != 1:
        raise ValueError(
            f"truncated_bptt: every array of `sequence` must have the same length on "
            f"`time_axis={time_axis}`, got {sorted(lengths)}."
        )
    (num_steps,) = lengths
    chunk_length = _check_chunk_length(chunk_length, num_steps)
    num_full, rest = divmod(num_steps, chunk_length)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def train_chunk(params, opt_state, chunk, hidden):
        def loss(params):
            out = loss_fn(
                eqx.combine(params, static), chunk, jax.lax.stop_gradient(hidden)
            )
            _check_loss_output(out, hidden)
            return out

        (value, new_hidden), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, new_hidden, value

    def to_chunks(x: Array) -> Array:
        x = jnp.moveaxis(jnp.asarray(x), time_axis, 0)[: num_full * chunk_length]
        x = x.reshape(num_full, chunk_length, *x.shape[1:])
        return jnp.moveaxis(x, 1, time_axis + 1)

    def body(carry, chunk):
        params, opt_state, hidden = carry
        params, opt_state, hidden, value = train_chunk(params, opt_state, chunk, hidden)
        return (params, opt_state, hidden), value

    (params, opt_state, hidden), losses = jax.lax.scan(
        body, (params, opt_state, hidden), jax.tree.map(to_chunks, sequence)
    )
    if rest:
        last = jax.tree.map(
            lambda x: jax.lax.slice_in_dim(
                jnp.asarray(x), num_full * chunk_length, num_steps, axis=time_axis
            ),
            sequence,
        )
        params, opt_state, hidden, value = train_chunk(params, opt_state, last, hidden)
        losses = jnp.concatenate([losses, value[None]])
    return eqx.combine(params, static), opt_state, hidden, losses


def _check_loss_output(out: Any, hidden: Any) -> None:
    """`loss_fn` returned `(scalar loss, new_hidden)` with `new_hidden` shaped like
    `hidden` (checked at trace time)."""
    fix = (
        "`loss_fn(model, chunk, hidden)` must return `(loss, new_hidden)`: the loss "
        "and the state after the chunk, which the next chunk starts from, e.g. "
        "`hs = jax.vmap(...)(...); return jnp.mean(...), final_hidden`"
    )
    if not (isinstance(out, tuple) and len(out) == 2):
        shape = getattr(out, "shape", None)
        got = type(out).__name__ + ("" if shape is None else f" of shape {shape}")
        raise TypeError(f"truncated_bptt: {fix}; got {got}.")
    loss, new_hidden = out
    if jnp.shape(loss) != ():
        raise TypeError(
            f"truncated_bptt: {fix}; the loss has shape {jnp.shape(loss)}, not a "
            "scalar (reduce it, e.g. with `jnp.mean`)."
        )
    shapes = jax.tree.map(jnp.shape, hidden)
    if jax.tree.structure(new_hidden) != jax.tree.structure(hidden) or (
        jax.tree.map(jnp.shape, new_hidden) != shapes
    ):
        raise TypeError(
            f"truncated_bptt: {fix}; `new_hidden` is "
            f"{jax.tree.map(jnp.shape, new_hidden)} but `hidden` is {shapes}."
        )


# --- data parallelism --------------------------------------------------------


def data_parallel_shardings(
    devices: list[Any] | None = None,
) -> tuple[NamedSharding, NamedSharding]:
    """Shardings for data-parallel training: the batch split over `devices`,
    everything else replicated.

    !!! example

        ```python
        batch_sharding, replicated = eqrnn.data_parallel_shardings()
        cell = eqx.filter_shard(eqrnn.GRUCell(3, 8, key=jax.random.key(0)), replicated)
        xs, lengths = eqrnn.shard_batch(
            (jnp.ones((8, 10, 3)), jnp.full(8, 10)), batch_sharding
        )  # the batch must divide over the devices
        ```

    **Arguments:**

    - `devices`: the devices to use; default `jax.devices()` (on several hosts, after
        `jax.distributed.initialize()`, that is every device of every host).

    **Returns:**

    `(batch_sharding, replicated_sharding)` over a one-axis mesh named `"batch"`.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_parallel_shardings: `devices` is empty.")
    mesh = Mesh(devices, ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(
        mesh, PartitionSpec()
    )


def shard_batch(
    batch: PyTree[Shaped[ArrayLike, "..."]], sharding: NamedSharding
) -> PyTree[Shaped[Array, "..."]]:
    """Split every array of `batch` along its leading (batch) axis over the devices
    of `sharding`.

    **Arguments:**

    - `batch`: a pytree of arrays with a leading batch axis.
    - `sharding`: the batch sharding from `data_parallel_shardings`.

    **Returns:**

    `batch`, placed on the devices. Raises `ValueError` when the batch does not
    divide evenly over the devices (nothing is dropped or padded silently).
    """
    num_devices = sharding.mesh.size

    def place(x: Any) -> Array:
        size = jnp.shape(x)[0] if jnp.ndim(x) else None
        if size is None or size % num_devices:
            raise ValueError(
                f"shard_batch: a batch of {size} does not divide over {num_devices} "
                f"devices; use a batch size that is a multiple of {num_devices}."
            )
        return jax.device_put(x, sharding)

    return jax.tree.map(place, batch)


# --- checkpoints -------------------------------------------------------------

_MAGIC = "eqrnn-checkpoint"
_Tree = TypeVar("_Tree")
_PAYLOAD = "the line after this header: equinox.tree_serialise_leaves of the tree"


def _describe(tree: PyTree) -> list[list[Any]]:
    """`[path, shape, dtype]` of every leaf that `tree_serialise_leaves` writes."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if eqx.is_array(leaf):
            out.append([jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)])
        elif isinstance(leaf, bool | int | float | complex):
            out.append([jax.tree_util.keystr(path), [], type(leaf).__name__])
    return out


def _stable(value: Any) -> str:
    """A description of a static value that is the same in every process (a
    function by its qualified name, not its address)."""
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_stable(v) for v in value) + ")"
    qualname = getattr(value, "__qualname__", None)
    if callable(value) and qualname is not None:
        return f"{getattr(value, '__module__', '?')}.{qualname}"
    return repr(value)


def _configuration(
    tree: Any, path: str = "", *, keep_speed: bool = False
) -> list[list[str]]:
    """`[path, description]` of every module's and named tuple's class and every
    static field: what a model's numbers depend on besides its arrays (an
    activation function, `reverse`, an optimiser's state types). A field marked
    `speed_setting` (`RNN.unroll`, `mode`, ...) changes how the numbers are
    computed, not what they are: it is left out, so a checkpoint loads into a
    model that differs only there, and the loaded model keeps `like`'s."""
    out: list[list[str]] = []
    if isinstance(tree, eqx.Module):
        out.append([path or "(root)", type(tree).__qualname__])
        for field in dataclasses.fields(tree):
            value = getattr(tree, field.name, None)
            where = f"{path}.{field.name}"
            if field.metadata.get(SPEED_SETTING, False) and not keep_speed:
                continue
            if field.metadata.get("static", False):
                out.append([where, _stable(value)])
            else:
                out += _configuration(value, where, keep_speed=keep_speed)
    elif isinstance(tree, tuple | list):
        if hasattr(tree, "_fields"):  # a named tuple: optax's states are
            out.append([path or "(root)", type(tree).__qualname__])
        for i, value in enumerate(tree):
            out += _configuration(value, f"{path}[{i}]", keep_speed=keep_speed)
    elif isinstance(tree, dict):
        for key in sorted(tree, key=repr):
            out += _configuration(tree[key], f"{path}[{key!r}]", keep_speed=keep_speed)
    return out


def save_checkpoint(path: str | Path | io.IOBase, tree: PyTree) -> None:
    """Save a pytree (a model, an optimiser state, a step count, or a tuple of them)
    with `equinox.tree_serialise_leaves`, behind a header that lets
    `load_checkpoint` check it first: the structure, the static configuration
    (classes, activation functions and other static fields) and a SHA-256 checksum
    of the arrays. No pickle.

    The file is one line of JSON, the header, followed by exactly what
    `equinox.tree_serialise_leaves` writes (typed PRNG keys as their
    `jax.random.key_data`), so Equinox reads it once past that line: `f.readline();
    eqx.tree_deserialise_leaves(f, like)`, though without the checks. Handed the
    whole file, `eqx.tree_deserialise_leaves` reads the header as array data and
    fails. Settings that change how a model computes, not what (an `RNN`'s
    `unroll`, `checkpoint`, `mode`, `check_finite`), are not part of the
    configuration: the checkpoint loads into a model that differs only there.

    Saved to a file name, the checkpoint is written to a temporary file next to it,
    flushed to disk and then renamed over `path`, so a crash or a killed process at
    any moment leaves either the previous checkpoint or the new one, never a mix.

    **Arguments:**

    - `path`: a file name or a file object opened in binary mode (`"wb"`).
    - `tree`: what to save.
    """
    _check_binary(path, "save_checkpoint", "wb")
    payload = io.BytesIO()
    eqx.tree_serialise_leaves(payload, _keys_as_data(tree))
    data = payload.getvalue()
    header = json.dumps(
        {
            "format": _MAGIC,
            "version": 3,
            "payload": _PAYLOAD,
            "leaves": _describe(tree),
            "configuration": _configuration(tree),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    )
    if not isinstance(path, str | Path):
        path.write(header.encode() + b"\n" + data)
        return
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.encode() + b"\n" + data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def load_checkpoint(path: str | Path | io.IOBase, like: _Tree) -> _Tree:
    """Load what `save_checkpoint` wrote into a pytree shaped like `like`.

    Everything is checked before anything is loaded: a checkpoint of a different
    model raises `ValueError` naming the first difference, in its configuration
    (a class, an activation function, another static field) or in its arrays (the
    path, shape and dtype of a leaf); a corrupt or truncated file, one whose bytes
    do not match the saved checksum, raises `ValueError` too. Nothing is loaded
    partially: `like` is never modified and no half-filled tree is returned.

    **Arguments:**

    - `path`: a file name or a file object opened in binary mode (`"rb"`).
    - `like`: a pytree with the structure, configuration, shapes and dtypes of what
        was saved (for instance a freshly initialised model and optimiser state).

    **Returns:**

    A new pytree like `like`, holding the saved values.
    """
    if isinstance(path, str | Path):
        with open(path, "rb") as f:
            return load_checkpoint(f, like)
    _check_binary(path, "load_checkpoint", "rb")
    name = getattr(path, "name", "the checkpoint")
    try:
        header = json.loads(path.readline().decode())
        if header.get("format") != _MAGIC:
            raise ValueError
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise ValueError(
            f"load_checkpoint: {name} is not an eqrnn checkpoint (no valid header)."
        ) from None
    _check_matches(name, header, like)
    data = path.read()
    checksum = header.get("sha256")
    if checksum is not None and hashlib.sha256(data).hexdigest() != checksum:
        raise ValueError(
            f"load_checkpoint: {name} is corrupt or truncated: its arrays do not "
            "match the checksum saved with them."
        )
    try:
        loaded = eqx.tree_deserialise_leaves(io.BytesIO(data), _keys_as_data(like))
    except Exception as e:  # numpy/equinox raise several kinds on truncated data
        raise ValueError(f"load_checkpoint: {name} is corrupt or truncated: {e}") from e
    return _data_as_keys(loaded, like)


def _check_binary(path: Any, where: str, mode: str) -> None:
    if isinstance(path, io.TextIOBase):
        raise TypeError(
            f"{where}: `path` is a file opened in text mode; a checkpoint is binary: "
            f"open it with `open(name, {mode!r})`, or pass the file name."
        )


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(
        leaf.dtype, jax.dtypes.prng_key
    )


def _keys_as_data(tree: Any) -> Any:
    """Typed PRNG keys (`jax.random.key`) as their uint32 data, which
    `tree_serialise_leaves` writes."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _data_as_keys(loaded: Any, like: Any) -> Any:
    """The keys of `like` (by their implementation) back from their loaded data."""
    return jax.tree.map(
        lambda x, ref: (
            jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
            if _is_key(ref)
            else x
        ),
        loaded,
        like,
    )


def _first_difference(saved: list[Any], expected: list[Any]) -> int | None:
    for i in range(max(len(saved), len(expected))):
        got = saved[i] if i < len(saved) else None
        if got != (expected[i] if i < len(expected) else None):
            return i
    return None


def _check_matches(name: str, header: dict[str, Any], like: Any) -> None:
    """Raise naming the first leaf and the first configuration entry in which the
    checkpoint and `like` differ."""
    saved_leaves, leaves = header["leaves"], _describe(like)
    saved_config, config = header.get("configuration"), _configuration(like)
    if saved_config is not None and header.get("version", 0) < 3:
        # Written before speed settings were left out: leave them out here.
        kept = {path for path, _ in config}
        speed = {p for p, _ in _configuration(like, keep_speed=True)} - kept
        saved_config = [e for e in saved_config if e[0] not in speed]
    leaf = _first_difference(saved_leaves, leaves)
    entry = None if saved_config is None else _first_difference(saved_config, config)
    if leaf is None and entry is None:
        return
    messages = []
    if leaf is not None:
        got = saved_leaves[leaf] if leaf < len(saved_leaves) else None
        want = leaves[leaf] if leaf < len(leaves) else None
        messages.append(
            f"the structure of `like`: leaf {leaf} is {_leaf_str(got)} in the "
            f"checkpoint but {_leaf_str(want)} in `like`"
        )
    if entry is not None:
        assert saved_config is not None
        got = saved_config[entry] if entry < len(saved_config) else None
        want = config[entry] if entry < len(config) else None
        messages.append(
            f"the configuration of `like`: {_item_str(got)} in the checkpoint but "
            f"{_item_str(want)} in `like`"
        )
    raise ValueError(
        f"load_checkpoint: {name} does not match " + ", nor ".join(messages) + "."
    )


def _item_str(item: list[str] | None) -> str:
    if item is None:
        return "nothing"
    path, value = item
    return f"`{path}` is {value}"


def _leaf_str(leaf: list[Any] | None) -> str:
    if leaf is None:
        return "absent"
    path, shape, dtype = leaf
    return f"`{path}` ({dtype}{list(shape) if shape else ''})"
