"""Record and edit the activations of any `torch.nn.Module`, naming layers by their dotted path.

Hooks live only inside a `with` block and are removed when it ends, also when its body raises.
Behaviour is chosen by keyword flags:

    with TraceDict(model, ["features.3", "rnn"], retain_input=True) as td:
        model(x)
    conv = td["features.3"].output            # what the module returned, detached
    with Trace(model, "features.3", edit_output=ablate([4, 7]), stop=True) as tr:
        model(x)                               # ends right after features.3 ran
    edited = tr.output                         # the ablated feature map
"""
from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

EditOutput = Callable[[Any, str], Any]
EditInput = Callable[[tuple, dict, str], tuple[tuple, dict]]


class StopForward(Exception):
    """Raised by a hook to end a forward pass early; the tracing context manager that asked for it swallows it."""


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule of `model` at dotted path `name` ("" is `model` itself); a miss lists close names."""
    if not isinstance(name, str):
        raise TypeError(f"layer name must be a str, got {type(name).__name__}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules(remove_duplicate=False) if n]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        hint = (f"close names: {', '.join(close)}" if close
                else f"its layers include: {', '.join(names[:12]) or '(none)'}")
        raise ValueError(f"layer {name!r} not found in {type(model).__name__}; {hint}") from None


def _snapshot(value: Any, detach: bool, clone: bool) -> Any:
    """`value` with every tensor inside it (tuples, named tuples, lists, dicts) detached and/or cloned."""
    if isinstance(value, torch.Tensor):
        if detach:
            value = value.detach()
        return value.clone() if clone else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)._make(_snapshot(v, detach, clone) for v in value)
    if isinstance(value, (tuple, list)):
        return type(value)(_snapshot(v, detach, clone) for v in value)
    if isinstance(value, dict):
        return {k: _snapshot(v, detach, clone) for k, v in value.items()}
    return value


def _check_callable(value: Any, argument: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{argument} must be callable or None, got {type(value).__name__}")


class Trace:
    """Hooks on one layer: retain its output and/or input, rewrite them, or stop the forward right after it.

    `.output` is exactly what the module returned (a tensor, or a tuple such as nn.LSTM's
    `(out, (h, c))`) after `edit_output`; `.input` is its single positional argument, or the tuple of
    positional arguments when there are several, after `edit_input`; `.input_kwargs` its keyword
    arguments. Both are detached (`detach`) and copied (`clone`) recursively; cloning protects the
    record from later in-place operations such as `ReLU(inplace=True)`. If the module runs several
    times in one forward, the records hold the last call; `.calls` counts the calls while hooked.

    `edit_output(output, layer)` returns the output to use instead (None keeps it, edited in place);
    `edit_input(args, kwargs, layer)` returns the `(args, kwargs)` the module is called with;
    `stop=True` raises `StopForward` after the layer ran, and leaving the `with` block swallows it,
    so the forward call should be the last statement in the block.
    """

    def __init__(self, model: nn.Module, layer: str, *, retain_output: bool = True, retain_input: bool = False,
                 detach: bool = True, clone: bool = False, edit_output: EditOutput | None = None,
                 edit_input: EditInput | None = None, stop: bool = False):
        _check_callable(edit_output, "edit_output")
        _check_callable(edit_input, "edit_input")
        self.layer = layer
        self.module = get_module(model, layer)
        self.retain_output, self.retain_input = retain_output, retain_input
        self.detach, self.clone = detach, clone
        self.edit_output, self.edit_input, self.stop = edit_output, edit_input, stop
        self.output: Any = None
        self.input: Any = None
        self.input_kwargs: dict[str, Any] = {}
        self.calls = 0
        self._handles = []
        if retain_input or edit_input is not None:
            self._handles.append(self.module.register_forward_pre_hook(self._before, with_kwargs=True))
        self._handles.append(self.module.register_forward_hook(self._after))

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self.edit_input is not None:
            edited = self.edit_input(args, kwargs, self.layer)
            if not (isinstance(edited, tuple) and len(edited) == 2
                    and isinstance(edited[0], (tuple, list)) and isinstance(edited[1], dict)):
                raise TypeError(f"edit_input for layer {self.layer!r} must return (args: tuple, kwargs: dict), "
                                f"got {type(edited).__name__}")
            args, kwargs = tuple(edited[0]), edited[1]
        if self.retain_input:
            self.input = _snapshot(args[0] if len(args) == 1 else args, self.detach, self.clone)
            self.input_kwargs = _snapshot(kwargs, self.detach, self.clone)
        return (args, kwargs) if self.edit_input is not None else None

    def _after(self, module: nn.Module, args: tuple, output: Any) -> Any:
        self.calls += 1
        if self.edit_output is not None:
            edited = self.edit_output(output, self.layer)
            output = output if edited is None else edited
        if self.retain_output:
            self.output = _snapshot(output, self.detach, self.clone)
        if self.stop:
            raise StopForward(self.layer)
        return output if self.edit_output is not None else None

    def close(self) -> None:
        """Remove the hooks (idempotent); the retained records stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return self.stop and exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(dict[str, Trace]):
    """A `Trace` per layer name, with the flags of `Trace`; `td[name]` is that layer's Trace.

    `stop=True` raises `StopForward` once every listed layer has run at least once in the current
    forward of `model`, i.e. right after the last of them in execution order.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], *, retain_output: bool = True,
                 retain_input: bool = False, detach: bool = True, clone: bool = False,
                 edit_output: EditOutput | None = None, edit_input: EditInput | None = None, stop: bool = False):
        super().__init__()
        if isinstance(layers, str):
            raise TypeError(f"layers must be an iterable of layer names, not the string {layers!r}")
        names = list(dict.fromkeys(layers))
        if not names:
            raise ValueError("layers is empty: name at least one layer to trace")
        self.stop = stop
        self._pending: set[str] = set()
        self._handles = []
        try:
            for name in names:
                self[name] = Trace(model, name, retain_output=retain_output, retain_input=retain_input,
                                   detach=detach, clone=clone, edit_output=edit_output, edit_input=edit_input)
            if stop:
                self._handles.append(model.register_forward_pre_hook(lambda *_: self._restart()))
                for name, trace in self.items():
                    self._handles.append(trace.module.register_forward_hook(self._stopper(name)))
                self._restart()
        except BaseException:
            self.close()
            raise

    def _restart(self) -> None:
        self._pending = set(self)

    def _stopper(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._pending.discard(name)
            if not self._pending:
                self._restart()
                raise StopForward(name)
        return hook

    def close(self) -> None:
        """Remove every hook (idempotent); the retained records stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for trace in reversed(list(self.values())):
            trace.close()

    def __enter__(self) -> TraceDict:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return self.stop and exc_type is not None and issubclass(exc_type, StopForward)


def _unit_index(units: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """`units` as a 1-D long tensor of non-negative indices, or a TypeError/ValueError naming `units`."""
    if isinstance(units, torch.Tensor):
        if units.dtype.is_floating_point or units.dtype == torch.bool or units.ndim > 1:
            raise TypeError(f"units must be a 1-D tensor of int indices, got {units.dtype} "
                            f"of shape {tuple(units.shape)}")
        index = units.reshape(-1).long().cpu()
    else:
        try:
            index = torch.tensor([operator.index(u) for u in units], dtype=torch.long)
        except TypeError:
            raise TypeError(f"units must be a sequence of int unit indices, got {units!r}") from None
    if (index < 0).any():
        raise ValueError(f"units must be non-negative, got {index.tolist()}")
    return index


def ablate(units: Sequence[int] | torch.Tensor, value: float | Sequence[float] | torch.Tensor = 0.0, *,
           dim: int = 1) -> EditOutput:
    """An `edit_output` that sets `units` along `dim` to `value` (a scalar or one value per unit).

    Use `dim=1` for conv maps `[B, C, H, W]` and dense `[B, C]`, `dim=-1` for sequences `[B, T, U]`
    or `[T, B, U]`. For tuple outputs (nn.LSTM, nn.GRU) only the first element is edited; the
    final states pass through unchanged. The output is copied, never edited in place.
    """
    index = _unit_index(units)
    fill = torch.as_tensor(value, dtype=torch.float64)
    if fill.ndim > 1 or (fill.ndim == 1 and len(fill) != len(index)):
        raise ValueError(f"value must be a scalar or have one entry per unit ({len(index)}), "
                         f"got shape {tuple(fill.shape)}")

    def set_units(tensor: torch.Tensor, layer: str) -> torch.Tensor:
        if not -tensor.ndim <= dim < tensor.ndim:
            raise ValueError(f"dim={dim} is out of range for the {tuple(tensor.shape)} output of {layer!r}")
        size = tensor.shape[dim]
        if len(index) and int(index.max()) >= size:
            raise ValueError(f"units {index.tolist()} out of range for {size} units of {layer!r} (dim={dim})")
        edited = tensor.clone()
        edited.movedim(dim, -1)[..., index.to(tensor.device)] = fill.to(tensor.device, tensor.dtype)
        return edited

    def edit(output: Any, layer: str) -> Any:
        if isinstance(output, torch.Tensor):
            return set_units(output, layer)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            edited = (set_units(output[0], layer), *output[1:])
            return type(output)._make(edited) if hasattr(output, "_fields") else edited
        raise TypeError(f"ablate needs a tensor output or a tuple starting with one; {layer!r} returned "
                        f"{type(output).__name__}")

    return edit
