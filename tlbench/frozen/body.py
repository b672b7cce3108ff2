"""A returned network as the core sees it before scoring: whether it computes its head over its
pre-logit features, and a digest of everything else (its frozen body).

The core scores a model from cached test features only when it can check, itself, that the
body computing them is the cached one; a strategy never claims it. ``refusal`` says why a model
cannot be scored as ``head(forward_head(forward_features(x), pre_logits=True))``: not the class
the backbone built, a forward, forward_features or forward_head of its own, hooks anywhere
(they run in ``model(x)`` but are not in any digest), a head that is not one submodule.
``digest`` hashes the body: every module outside the head, by its place, its class and the
code of its forward, its parameters' and buffers' values, dtypes and shapes, and every other
attribute (a stride, an epsilon, an activation); an attribute it cannot describe exactly (a
closure, an arbitrary object) makes the body unhashable, never a guess. The head is excluded by
its place only: a head module or tensor that the body also reaches is hashed with the body.
"""

from __future__ import annotations

import enum
import hashlib
import marshal
import types
from typing import Optional

import torch
from torch import nn
from torch.nn.modules import module as torch_module

# what every nn.Module keeps in its __dict__: hashed separately (parameters, buffers, children),
# checked empty (hooks) or irrelevant in eval mode (training)
_MODULE_INTERNALS = frozenset(vars(nn.Module())) | {"_compiled_call_impl"}
_HOOKS = ("_forward_hooks", "_forward_pre_hooks")
_SCORED_METHODS = ("forward", "forward_features", "forward_head")


class Undescribable(Exception):
    """A value the digest cannot pin down exactly."""


def refusal(model: nn.Module, built: type) -> Optional[str]:
    """Why ``model`` cannot be scored as its head over its pre-logit features; None when it can."""
    if type(model) is not built:
        return f"the returned model is a {type(model).__name__}, not the {built.__name__} the backbone built"
    replaced = [name for name in _SCORED_METHODS if name in vars(model)]
    if replaced:
        return f"the returned model's {replaced[0]} was replaced"
    if not all(callable(getattr(type(model), name, None)) for name in (*_SCORED_METHODS, "get_classifier")):
        return "the returned model has no forward_features, forward_head or get_classifier"
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return "global module hooks are registered"
    hooked = next((name for name, m in model.named_modules(remove_duplicate=False)
                   if any(getattr(m, hooks, None) for hooks in _HOOKS)), None)
    if hooked is not None:
        return f"module {hooked or 'the model'!r} has forward hooks"
    return None if head_name(model) is not None else "its classifier is not one submodule of the model"


def head_name(model: nn.Module) -> Optional[str]:
    """Where ``get_classifier()`` sits in ``model``; None when it is not one module found at one
    place (a pair of heads, a head shared with the body, a head outside the model)."""
    try:
        head = model.get_classifier()
    except Exception:
        return None
    if not isinstance(head, nn.Module):
        return None
    places = [name for name, m in model.named_modules(remove_duplicate=False) if m is head]
    return places[0] if len(places) == 1 and places[0] else None


def body_modules(model: nn.Module, head: str):
    """(name, module) for every place in ``model`` outside ``head``'s subtree, duplicates kept."""
    return [(name, m) for name, m in model.named_modules(remove_duplicate=False)
            if name != head and not name.startswith(head + ".")]


def trainable_body(model: nn.Module, head: str) -> bool:
    return any(p is not None and p.requires_grad
               for _, m in body_modules(model, head) for p in m._parameters.values())


def digest(model: nn.Module, head: str) -> Optional[str]:
    """A sha256 of ``model`` outside its ``head`` (see the module's docstring); None when some
    part of it cannot be described exactly."""
    h = hashlib.sha256()
    try:
        for name, module in body_modules(model, head):
            _module(h, name, module, root=not name)
    except Undescribable:
        return None
    return h.hexdigest()


def _module(h, name: str, module: nn.Module, root: bool) -> None:
    kind = type(module)
    h.update(f"\0module {name} {kind.__module__}.{kind.__qualname__}".encode())
    for method in (_SCORED_METHODS if root else ("forward",)):
        h.update(f"\0{method} {_describe(getattr(kind, method, None))}".encode())
    for group in ("_parameters", "_buffers"):
        for key, tensor in getattr(module, group).items():
            h.update(f"\0{group} {key}".encode())
            _tensor(h, tensor)
    h.update(f"\0non-persistent {sorted(module._non_persistent_buffers_set)}".encode())
    for key in sorted(set(vars(module)) - _MODULE_INTERNALS):
        value = vars(module)[key]
        h.update(f"\0attribute {key} ".encode())
        if isinstance(value, torch.Tensor):  # a plain tensor attribute counts like a buffer
            _tensor(h, value)
        else:
            h.update(_describe(value).encode())


def _tensor(h, tensor: Optional[torch.Tensor]) -> None:
    if tensor is None:
        h.update(b"None")
        return
    if tensor.is_sparse or tensor.is_quantized or tensor.device.type == "meta":
        raise Undescribable(f"a {tensor.layout} tensor")
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"{data.dtype} {tuple(tensor.shape)} ".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")


def _describe(value) -> str:
    """An exact text for ``value``, the same in every process; Undescribable otherwise."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, enum.Enum)):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, (torch.dtype, torch.device, torch.memory_format, torch.Size)):
        return f"torch:{value}"
    if isinstance(value, (tuple, list, frozenset, set)):
        items = [_describe(v) for v in value]
        return f"{type(value).__name__}({','.join(sorted(items) if isinstance(value, (set, frozenset)) else items)})"
    if isinstance(value, dict):
        return "dict(" + ",".join(sorted(f"{_describe(k)}={_describe(v)}" for k, v in value.items())) + ")"
    if isinstance(value, types.FunctionType):
        if value.__closure__:
            raise Undescribable(f"function {value.__qualname__} with captured values")
        code = hashlib.sha256(marshal.dumps(value.__code__)).hexdigest()
        return (f"function:{value.__module__}.{value.__qualname__}:{code}:"
                f"{_describe(value.__defaults__)}:{_describe(value.__kwdefaults__)}")
    if isinstance(value, (types.BuiltinFunctionType, types.MethodDescriptorType, types.WrapperDescriptorType, type)):
        return f"{type(value).__name__}:{getattr(value, '__module__', '')}.{value.__qualname__}"
    raise Undescribable(f"a {type(value).__name__}")

