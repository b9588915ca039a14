"""Weights to and from PyTorch's `nn.RNN`/`nn.GRU`/`nn.LSTM` and their cells.

torch is imported only when a torch object is handed in (it is then already imported)
or when `to_torch` is called, so that `eqrnn.interop` works without torch.
"""

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

import equinox as eqx
import jax
import jax.numpy as jnp

from .._gru import GRUCell
from .._layers import RNN, Bidirectional, StackedRNN, _concatenate
from .._lstm import LSTMCell
from .._simple import SimpleCell
from ._common import (
    RELU,
    SIGMOID,
    TANH,
    Cell,
    as_jax,
    as_numpy,
    build_gru,
    build_lstm,
    build_simple,
    check_cell,
    check_fn,
    check_shape,
    common_dtype,
    is_torch_tensor,
    layer_cells,
)


if TYPE_CHECKING:
    import torch


_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_TORCH_MODES = {
    "RNN_TANH": ("RNN", "tanh"),
    "RNN_RELU": ("RNN", "relu"),
    "GRU": ("GRU", "tanh"),
    "LSTM": ("LSTM", "tanh"),
}
_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


# --- PyTorch -> eqrnn --------------------------------------------------------------


def _build_cell(
    mode: str, nonlinearity: str, params: Mapping[str, Any], suffix: str
) -> Cell:
    """An eqrnn cell from PyTorch's parameters named `weight_ih{suffix}` etc."""
    w_ih = params["weight_ih" + suffix]
    w_hh = params["weight_hh" + suffix]
    b_ih = params.get("bias_ih" + suffix)
    b_hh = params.get("bias_hh" + suffix)
    if b_ih is not None:
        common_dtype("from_torch", {"bias_ih" + suffix: b_ih, "bias_hh" + suffix: b_hh})
    if mode == "GRU":
        # b_hn sits inside the reset gate, so only b_r and b_z fold into `bias`.
        bias = bias_hn = None
        if b_ih is not None:
            assert b_hh is not None
            hs = w_hh.shape[0] // 3
            bias = jnp.concatenate([b_ih[: 2 * hs] + b_hh[: 2 * hs], b_ih[2 * hs :]])
            bias_hn = b_hh[2 * hs :]
        return build_gru(w_ih, w_hh, bias, bias_hn)
    bias = None if b_ih is None or b_hh is None else b_ih + b_hh
    if mode == "LSTM":
        return build_lstm(w_ih, w_hh, bias, params.get("weight_hr" + suffix))
    return build_simple(w_ih, w_hh, bias, activation_fn=_ACTIVATIONS[nonlinearity])


def _layer_names(
    num_layers: int, bidirectional: bool, bias: bool, proj: bool
) -> list[str]:
    """PyTorch's parameter names of a multi-layer RNN, bottom layer first."""
    names = []
    for layer in range(num_layers):
        for suffix in ("", "_reverse") if bidirectional else ("",):
            s = f"_l{layer}{suffix}"
            names += [f"weight_ih{s}", f"weight_hh{s}"]
            names += [f"bias_ih{s}", f"bias_hh{s}"] if bias else []
            names += [f"weight_hr{s}"] if proj else []
    return names


def _cell_names(bias: bool) -> list[str]:
    return ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])


def _check_shapes(
    mode: str, params: Mapping[str, Any], names: list[str], *, cell: bool
) -> None:
    """Check every parameter's shape against the sizes read off the first layer."""
    gates = _GATES[mode]
    first = "" if cell else "_l0"
    w_ih, w_hh = params["weight_ih" + first], params["weight_hh" + first]
    proj = ("weight_hr" + first) in params
    ok = len(w_ih.shape) == 2 and len(w_hh.shape) == 2 and w_hh.shape[0] % gates == 0
    if not (ok and (proj or w_hh.shape[0] == gates * w_hh.shape[1])):
        size = "proj_size" if proj else "hidden_size"
        raise ValueError(
            f"from_torch: `weight_hh{first}` of a mode={mode!r} RNN must have shape "
            f"({gates} * hidden_size, {size}), got {tuple(w_hh.shape)}; is `mode` "
            "right?"
        )
    hidden = w_hh.shape[0] // gates
    out = params["weight_hr" + first].shape[0] if proj else hidden
    num_dirs = 2 if ("weight_ih_l0_reverse" in params) else 1
    for name in names:
        kind, _, layer = name.partition("_l")
        inputs = w_ih.shape[1] if int(layer.split("_")[0] or 0) == 0 else num_dirs * out
        expected = {
            "weight_ih": (gates * hidden, inputs),
            "weight_hh": (gates * hidden, out),
            "bias_ih": (gates * hidden,),
            "bias_hh": (gates * hidden,),
            "weight_hr": (out, hidden),
        }[kind]
        check_shape(f"from_torch (mode={mode!r})", name, params[name], expected)


def _from_params(
    mode: str,
    nonlinearity: str,
    params: Mapping[str, Any],
    *,
    cell: bool,
    dropout: float,
    inference: bool,
) -> Any:
    if cell:
        return _build_cell(mode, nonlinearity, params, "")
    layers = []
    bidirectional = "weight_ih_l0_reverse" in params
    num_layers = sum(
        1 for n in params if n.startswith("weight_ih_l") and "_rev" not in n
    )
    for k in range(num_layers):
        forward = RNN(_build_cell(mode, nonlinearity, params, f"_l{k}"))
        if not bidirectional:
            layers.append(forward)
            continue
        backward_cell = _build_cell(mode, nonlinearity, params, f"_l{k}_reverse")
        backward = RNN(backward_cell, reverse=True, keep_order=True)
        layers.append(Bidirectional(forward, backward))
    return StackedRNN(layers, dropout=dropout, inference=inference)


def _from_module(torch: Any, module: Any) -> Any:
    nn = torch.nn
    if isinstance(module, nn.RNNBase):
        if module.mode not in _TORCH_MODES:
            raise TypeError(
                f"from_torch: unknown torch RNN mode {module.mode!r} (expected one of "
                f"{sorted(_TORCH_MODES)})."
            )
        mode, nonlinearity = _TORCH_MODES[module.mode]
        names = _layer_names(
            module.num_layers, module.bidirectional, module.bias, module.proj_size > 0
        )
        # `getattr`, not `state_dict()`: it also applies parametrizations.
        params = {n: as_jax(getattr(module, n), n) for n in names}
        return _from_params(
            mode,
            nonlinearity,
            params,
            cell=False,
            dropout=float(module.dropout),
            inference=not module.training,
        )
    cells = {nn.RNNCell: "RNN", nn.GRUCell: "GRU", nn.LSTMCell: "LSTM"}
    for cls, mode in cells.items():
        if not isinstance(module, cls):
            continue
        nonlinearity = getattr(module, "nonlinearity", "tanh")
        names = _cell_names(module.bias)
        params = {n: as_jax(getattr(module, n), n) for n in names}
        return _from_params(
            mode, nonlinearity, params, cell=True, dropout=0.0, inference=False
        )
    raise TypeError(
        "from_torch: expected torch.nn.RNN, GRU, LSTM, RNNCell, GRUCell or LSTMCell "
        f"(or a state dict), got {type(module).__name__}."
        + _submodule_hint(torch, module)
    )


def _submodule_hint(torch: Any, module: Any) -> str:
    """Where a whole model keeps its recurrent modules, and how to pass one."""
    nn = torch.nn
    kinds = (nn.RNNBase, nn.RNNCell, nn.GRUCell, nn.LSTMCell)
    found = [
        (name, type(sub).__name__)
        for name, sub in module.named_modules()
        if name and isinstance(sub, kinds)
    ]
    if not found:
        return ""
    name, kind = found[0]
    parts = name.split(".")
    if all(p.isidentifier() for p in parts):
        expr = "model." + name
    else:
        expr = f"model.get_submodule({name!r})"
    more = f" (it holds {len(found)}: {', '.join(n for n, _ in found)})"
    return (
        f" It holds a {kind} at `{name}`: convert that one, "
        f"`from_torch({expr})`{more if len(found) > 1 else ''}."
    )


def _prefix_hint(keys: Any) -> str:
    """The prefix under which a whole model's state dict keeps an RNN's weights."""
    prefixes = sorted(
        {
            k[: -len(suffix)]
            for k in keys
            if isinstance(k, str)
            for suffix in ("weight_ih_l0", "weight_ih")
            if k.endswith(suffix) and len(k) > len(suffix)
        }
    )
    if not prefixes:
        return ""
    return (
        f" A whole model's state dict keeps them under a prefix: pass "
        f"`prefix={prefixes[0]!r}`"
        + (f" (found {prefixes})" if len(prefixes) > 1 else "")
        + ", or the submodule's own `state_dict()`."
    )


def _from_state_dict(
    state_dict: Mapping[str, Any],
    *,
    mode: str,
    nonlinearity: str | None,
    dropout: float | None,
    inference: bool | None,
    prefix: str,
) -> Any:
    if mode not in _GATES:
        hint = ""
        if mode in _TORCH_MODES:
            hint = f" (for torch's mode {mode!r}, pass mode='RNN' and `nonlinearity`)"
        raise ValueError(
            f"from_torch: `mode` must be 'RNN', 'GRU' or 'LSTM', got {mode!r}{hint}."
        )
    if nonlinearity is None:
        nonlinearity = "tanh"
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(
            "from_torch: `nonlinearity` must be 'tanh' or 'relu', got "
            f"{nonlinearity!r}."
        )
    if mode != "RNN" and nonlinearity != "tanh":
        raise ValueError(
            f"from_torch: `nonlinearity` applies to mode='RNN' only, not {mode!r}."
        )
    params = {
        k[len(prefix) :]: v
        for k, v in state_dict.items()
        if isinstance(k, str) and k.startswith(prefix)
    }
    if not prefix and len(params) != len(state_dict):
        raise ValueError("from_torch: the state dict's keys must be strings.")
    cell = "weight_ih" in params
    if cell:
        names = _cell_names("bias_ih" in params)
        if dropout is not None or inference is not None:
            raise ValueError(
                "from_torch: `dropout` and `inference` belong to a multi-layer module; "
                "this state dict holds a single cell (its keys have no `_l0`)."
            )
    elif "weight_ih_l0" in params:
        num_layers = 0
        while f"weight_ih_l{num_layers}" in params:
            num_layers += 1
        names = _layer_names(
            num_layers,
            "weight_ih_l0_reverse" in params,
            "bias_ih_l0" in params,
            "weight_hr_l0" in params,
        )
    else:
        raise ValueError(
            "from_torch: the state dict holds neither a cell's `weight_ih` nor a "
            f"module's `weight_ih_l0`{f' under prefix {prefix!r}' if prefix else ''}; "
            f"its keys are {sorted(params)}."
            + ("" if prefix else _prefix_hint(state_dict))
        )
    missing = [n for n in names if n not in params]
    unexpected = sorted(set(params) - set(names))
    if missing or unexpected:
        raise ValueError(
            f"from_torch: the state dict does not match a torch {mode} "
            f"{'cell' if cell else 'module'}: missing {missing}, unexpected "
            f"{unexpected}."
        )
    if "weight_hr_l0" in params and mode != "LSTM":
        raise ValueError("from_torch: `weight_hr` (proj_size) needs mode='LSTM'.")
    arrays = {n: as_jax(params[n], prefix + n) for n in names}
    _check_shapes(mode, arrays, names, cell=cell)
    return _from_params(
        mode,
        nonlinearity,
        arrays,
        cell=cell,
        dropout=0.0 if dropout is None else dropout,
        inference=False if inference is None else inference,
    )


@overload
def from_torch(module: "torch.nn.RNNCell") -> SimpleCell: ...


@overload
def from_torch(module: "torch.nn.GRUCell") -> GRUCell: ...


@overload
def from_torch(module: "torch.nn.LSTMCell") -> LSTMCell: ...


@overload
def from_torch(module: "torch.nn.RNNBase") -> StackedRNN: ...


@overload
def from_torch(
    module: "torch.nn.Module",
) -> StackedRNN | SimpleCell | GRUCell | LSTMCell: ...


@overload
def from_torch(
    module: Mapping[str, Any],
    *,
    mode: Literal["RNN", "GRU", "LSTM"],
    nonlinearity: Literal["tanh", "relu"] | None = None,
    dropout: float | None = None,
    inference: bool | None = None,
    prefix: str = "",
) -> StackedRNN | SimpleCell | GRUCell | LSTMCell: ...


def from_torch(
    module: Any,
    *,
    mode: Literal["RNN", "GRU", "LSTM"] | None = None,
    nonlinearity: Literal["tanh", "relu"] | None = None,
    dropout: float | None = None,
    inference: bool | None = None,
    prefix: str = "",
) -> StackedRNN | SimpleCell | GRUCell | LSTMCell:
    """Convert a PyTorch recurrent module, or its `state_dict`, to eqrnn.

    A whole module (`torch.nn.RNN`, `GRU`, `LSTM`, any `num_layers`) becomes a
    `StackedRNN` (also for one layer, so that one type comes back): one `RNN` per
    layer, or with `bidirectional=True` one `Bidirectional` per layer, whose backward
    `RNN` has `reverse=True, keep_order=True`. Its `dropout` becomes the stack's
    `dropout` and `module.training=False` becomes `inference=True`. A cell
    (`torch.nn.RNNCell`, `GRUCell`, `LSTMCell`) becomes the matching eqrnn cell.

    Every mapping is exact, with one rearrangement: eqrnn keeps one bias per gate, so
    PyTorch's `bias_ih + bias_hh` are summed (for a GRU, all but `b_hn`, which becomes
    `bias_hn`). `to_torch` puts that sum back in `bias_ih` and zeros in `bias_hh`.
    `batch_first` does not matter: eqrnn runs one sequence at a time, time on axis
    0; batch with `jax.vmap`. The parameters keep their dtype.

    !!! example

        ```python
        lstm = torch.nn.LSTM(3, 8, num_layers=2, bidirectional=True)
        stack = eqrnn.interop.from_torch(lstm)
        xs, lengths = jnp.ones((4, 10, 3)), jnp.array([10, 7, 3, 1])
        outputs, finals = jax.vmap(lambda x, n: stack(x, length=n))(xs, lengths)

        # A state dict needs the kind of RNN, which it does not record:
        stack = eqrnn.interop.from_torch(lstm.state_dict(), mode="LSTM")
        ```

    **Arguments:**

    - `module`: a torch module as above, or a state dict (a mapping from PyTorch's
        parameter names, such as `weight_ih_l0` or a cell's `weight_ih`, to torch
        tensors, NumPy or JAX arrays). The number of layers, `bidirectional`, `bias`
        and `proj_size` are read from the names and shapes.
    - `mode`: with a state dict only, and then required: `"RNN"`, `"GRU"` or
        `"LSTM"`. (Keyword only argument.)
    - `nonlinearity`: with a state dict and `mode="RNN"`: `"tanh"` (default, as
        PyTorch) or `"relu"`. (Keyword only argument.)
    - `dropout`: with a state dict of a multi-layer module: the stack's dropout
        (default 0). (Keyword only argument.)
    - `inference`: with a state dict of a multi-layer module: the stack's
        `inference` (default `False`). (Keyword only argument.)
    - `prefix`: with a state dict: read only the keys starting with this, e.g.
        `"encoder.rnn."` in a whole model's state dict. (Keyword only argument.)

    **Returns:**

    A `StackedRNN` for a module (or a module's state dict), else a `SimpleCell`,
    `GRUCell` or `LSTMCell`.

    **Raises:**

    `TypeError` for anything else; `ValueError` for a state dict that does not match
    `mode`, and for float64 parameters while JAX's x64 mode is off (JAX would
    truncate them).
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(module, torch.nn.Module):
        given = [
            name
            for name, value in (
                ("mode", mode),
                ("nonlinearity", nonlinearity),
                ("dropout", dropout),
                ("inference", inference),
            )
            if value is not None
        ] + (["prefix"] if prefix else [])
        if given:
            raise ValueError(
                f"from_torch: {', '.join(f'`{g}`' for g in given)} are read from the "
                "torch module; pass them only with a state dict."
            )
        return _from_module(torch, module)
    if isinstance(module, Mapping):
        if mode is None:
            raise ValueError(
                "from_torch: a state dict does not record which RNN it belongs to; "
                "pass `mode='RNN'`, `'GRU'` or `'LSTM'` (and for 'RNN', "
                "`nonlinearity='tanh'` or `'relu'`)."
            )
        return _from_state_dict(
            module,
            mode=mode,
            nonlinearity=nonlinearity,
            dropout=dropout,
            inference=inference,
            prefix=prefix,
        )
    what = "a torch tensor" if is_torch_tensor(module) else type(module).__name__
    raise TypeError(
        "from_torch: expected a torch.nn.RNN/GRU/LSTM/RNNCell/GRUCell/LSTMCell or a "
        f"state dict, got {what}."
    )


# --- eqrnn -> PyTorch --------------------------------------------------------------


_TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _torch_dtype(torch: Any, dtype: Any) -> Any:
    name = jnp.dtype(dtype).name
    if name not in _TORCH_DTYPES:
        raise ValueError(f"to_torch: PyTorch's RNNs do not take dtype {name}.")
    return getattr(torch, name)


def _nonlinearity(cell: SimpleCell) -> str:
    if cell.residual:
        raise ValueError(
            "SimpleCell has `residual=True`, but PyTorch's RNN has no residual "
            "connection, so it cannot be converted exactly."
        )
    if any(cell.activation_fn is f for f in TANH):
        return "tanh"
    if any(cell.activation_fn is f for f in RELU):
        return "relu"
    check_fn(cell, "activation_fn", (), "nonlinearity 'tanh' or 'relu'", "PyTorch")
    raise AssertionError  # unreachable: check_fn raised


def _torch_params(cell: Cell) -> dict[str, Any]:
    """PyTorch's parameters of one cell, without the layer suffix."""
    if isinstance(cell, GRUCell | LSTMCell):
        check_fn(cell, "gate_fn", SIGMOID, "sigmoid gates", "PyTorch")
        check_fn(cell, "activation_fn", TANH, "tanh activations", "PyTorch")
    params: dict[str, Any] = {"weight_ih": cell.weight_ih, "weight_hh": cell.weight_hh}
    if cell.bias is not None:
        params["bias_ih"] = cell.bias
        if isinstance(cell, GRUCell):
            assert cell.bias_hn is not None
            zeros = jnp.zeros(2 * cell.hidden_size, cell.dtype)
            params["bias_hh"] = jnp.concatenate([zeros, cell.bias_hn])
        else:
            params["bias_hh"] = jnp.zeros_like(cell.bias)
    if isinstance(cell, LSTMCell) and cell.weight_hr is not None:
        params["weight_hr"] = cell.weight_hr
    return params


def _copy_into(torch: Any, module: Any, params: dict[str, Any], suffix: str) -> None:
    with torch.no_grad():
        for name, value in params.items():
            target = getattr(module, name + suffix)
            assert tuple(target.shape) == tuple(value.shape), (name, value.shape)
            target.copy_(torch.from_numpy(as_numpy(value)))


def _cell_to_torch(torch: Any, cell: Any) -> Any:
    cell = check_cell(cell, "PyTorch")
    kwargs = {"bias": cell.use_bias, "dtype": _torch_dtype(torch, cell.dtype)}
    sizes = (cell.input_size, cell.hidden_size)
    if isinstance(cell, SimpleCell):
        module = torch.nn.RNNCell(*sizes, nonlinearity=_nonlinearity(cell), **kwargs)
    elif isinstance(cell, GRUCell):
        module = torch.nn.GRUCell(*sizes, **kwargs)
    else:
        if cell.proj_size is not None:
            raise ValueError(
                "LSTMCell has `proj_size`, but torch.nn.LSTMCell has no projection: "
                "wrap the cell as `StackedRNN([RNN(cell)])` to get a torch.nn.LSTM "
                "with `proj_size`."
            )
        module = torch.nn.LSTMCell(*sizes, **kwargs)
    _copy_into(torch, module, _torch_params(cell), "")
    return module


def _stack_to_torch(torch: Any, stack: StackedRNN, batch_first: bool | None) -> Any:
    if stack.residual:
        raise ValueError(
            "StackedRNN has `residual=True`, but PyTorch's multi-layer RNNs have no "
            "residual connections, so it cannot be converted exactly."
        )
    bidirectional = isinstance(stack.layers[0], Bidirectional)
    for i, layer in enumerate(stack.layers):
        if isinstance(layer, Bidirectional) != bidirectional:
            raise ValueError(
                "StackedRNN mixes RNN and Bidirectional layers, but a PyTorch RNN is "
                "bidirectional in every layer or in none, so it cannot be converted."
            )
        if isinstance(layer, RNN) and layer.reverse:
            raise ValueError(
                f"StackedRNN layer {i} runs in reverse, but PyTorch's unidirectional "
                "RNNs only run forwards, so it cannot be converted exactly."
            )
        if isinstance(layer, Bidirectional) and layer.merge is not _concatenate:
            raise ValueError(
                f"StackedRNN layer {i} merges its directions with {layer.merge!r}, but "
                "PyTorch's bidirectional RNNs concatenate them (merge='concat'), so "
                "it cannot be converted exactly."
            )
    cells = [
        check_cell(c, "PyTorch") for layer in stack.layers for c in layer_cells(layer)
    ]
    first = cells[0]
    settings = (
        "hidden_size",
        "use_bias",
        "dtype",
        "proj_size",
        "activation_fn",
        "gate_fn",
        "residual",
    )
    for c in cells[1:]:
        if type(c) is not type(first):
            raise ValueError(
                "A PyTorch RNN has one kind of cell in every layer, but this "
                f"StackedRNN has {type(first).__name__} and {type(c).__name__}, so it "
                "cannot be converted."
            )
        for name in settings:
            a, b = getattr(first, name, None), getattr(c, name, None)
            if not (a is b or a == b):
                raise ValueError(
                    "A PyTorch RNN has the same `hidden_size`, bias, dtype, "
                    "`proj_size`, nonlinearity and no residual in every layer and "
                    "direction, but "
                    f"this StackedRNN has {name}={a!r} and {name}={b!r}, so it cannot "
                    "be converted."
                )
    num_dirs = 2 if bidirectional else 1
    proj = first.proj_size if isinstance(first, LSTMCell) else None
    out = first.hidden_size if proj is None else proj
    for i, c in enumerate(cells[num_dirs:]):
        if c.input_size != num_dirs * out:
            raise ValueError(
                f"StackedRNN layer {i // num_dirs + 1} takes inputs of size "
                f"{c.input_size}, but the layer below outputs {num_dirs * out}."
            )
    if not isinstance(batch_first, bool):
        raise ValueError(
            "to_torch: pass `batch_first=True` (the module reads (batch, time, "
            "features)) or `batch_first=False` ((time, batch, features), PyTorch's "
            f"default), got {batch_first!r}. eqrnn's layers have no batch axis, so "
            "only you know which layout the code around the module feeds it, e.g. "
            "`to_torch(stack, batch_first=False)`."
        )
    num_layers = len(stack.layers)
    kwargs: dict[str, Any] = {
        "num_layers": num_layers,
        "bias": first.use_bias,
        "batch_first": batch_first,
        # PyTorch warns about dropout with one layer; it has no effect there (as in
        # StackedRNN), so nothing is lost.
        "dropout": stack.dropout if num_layers > 1 else 0.0,
        "bidirectional": bidirectional,
        "dtype": _torch_dtype(torch, first.dtype),
    }
    sizes = (first.input_size, first.hidden_size)
    if isinstance(first, SimpleCell):
        module = torch.nn.RNN(*sizes, nonlinearity=_nonlinearity(first), **kwargs)
    elif isinstance(first, GRUCell):
        module = torch.nn.GRU(*sizes, **kwargs)
    else:
        module = torch.nn.LSTM(*sizes, proj_size=proj or 0, **kwargs)
    for k, layer in enumerate(stack.layers):
        for cell, suffix in zip(layer_cells(layer), ("", "_reverse"), strict=False):
            _copy_into(torch, module, _torch_params(cell), f"_l{k}{suffix}")
    module.train(not stack.inference)
    return module


@overload
def to_torch(
    model: SimpleCell, *, batch_first: bool | None = None
) -> "torch.nn.RNNCell": ...


@overload
def to_torch(
    model: GRUCell, *, batch_first: bool | None = None
) -> "torch.nn.GRUCell": ...


@overload
def to_torch(
    model: LSTMCell, *, batch_first: bool | None = None
) -> "torch.nn.LSTMCell": ...


@overload
def to_torch(
    model: StackedRNN | RNN | Bidirectional, *, batch_first: bool | None = None
) -> "torch.nn.RNNBase": ...


def to_torch(model: eqx.Module, *, batch_first: bool | None = None) -> Any:
    """Convert an eqrnn cell or stack to the PyTorch module with the same numbers.

    `SimpleCell`, `GRUCell`, `LSTMCell` become `torch.nn.RNNCell`, `GRUCell`,
    `LSTMCell`. A `StackedRNN` (or a lone `RNN` or `Bidirectional`, taken as a
    one-layer stack) becomes `torch.nn.RNN`, `GRU` or `LSTM` with the `batch_first`
    you pass, the stack's `dropout`, and training mode unless `inference=True`.
    eqrnn's single bias becomes `bias_ih`, and `bias_hh` is zero (a GRU's `bias_hn`
    goes to the `n` part of `bias_hh`), so `from_torch(to_torch(model))` gives
    `model` back bit for bit. Settings that only affect speed (`unroll`,
    `checkpoint`) are dropped.

    !!! example

        ```python
        stack = eqrnn.interop.from_torch(torch.nn.GRU(3, 8, num_layers=2))
        ...  # train in JAX
        gru = eqrnn.interop.to_torch(stack, batch_first=False)  # as it came
        ```

    **Arguments:**

    - `model`: a `SimpleCell`, `GRUCell` or `LSTMCell`; or a `StackedRNN` whose
        layers are all `RNN`s running forwards or all `Bidirectional`s (with
        `merge="concat"`), holding one kind of cell with the same settings
        throughout; or a single such `RNN` or `Bidirectional`.
    - `batch_first`: for a stack, required: the layout the module reads, `True` for
        `(batch, time, features)`, `False` for `(time, batch, features)` (PyTorch's
        default). eqrnn's layers have no batch axis, so nothing in them says which;
        a module converted with `from_torch` goes back with its own setting only if
        you pass it. Not used for a cell. (Keyword only argument.)

    **Returns:**

    A new torch module (on the CPU) with the same dtype.

    **Raises:**

    `ValueError` where PyTorch cannot express the model exactly: `MGUCell`; a
    `SimpleCell` with `residual=True` or an activation other than tanh/relu; a GRU or
    LSTM with another `gate_fn`/`activation_fn`; a non-zero learned starting state; an
    `LSTMCell` with `proj_size` on its own (torch's `LSTMCell` cannot project; wrap it
    in a stack); a stack with `residual=True`, a reversed unidirectional layer,
    another merge, mixed layers or cells. `TypeError` for anything else.
    """
    import torch

    if isinstance(model, RNN | Bidirectional):
        model = StackedRNN([model])
    if isinstance(model, StackedRNN):
        return _stack_to_torch(torch, model, batch_first)
    if batch_first is not None:
        raise ValueError(
            "to_torch: `batch_first` is a setting of PyTorch's multi-step RNN "
            f"modules; a {type(model).__name__} becomes a cell, which has none. Leave "
            "it out, or convert an `eqrnn.RNN`/`StackedRNN`."
        )
    return _cell_to_torch(torch, model)
