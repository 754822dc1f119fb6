"""Type checks of plain YAML values against Python type hints.

The config layer uses these to check ``kwargs`` against the constructor of the class a name
refers to (datasets, models, losses, strategies), so that a typo or a wrong type is reported
with its key path before any training starts, instead of as a traceback from deep inside.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from typing import Any, Callable, Iterable, Literal, Union


class ConfigError(ValueError):
    """A problem in an experiment config, located by its key path."""

    def __init__(self, key_path: str, message: str, source: str | None = None) -> None:
        self.key_path = key_path
        self.problem = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key_path}: {message}")

    def in_file(self, source: str) -> "ConfigError":
        """The same error, naming the config file it came from."""
        return ConfigError(self.key_path, self.problem, source)


def nearest(name: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` hint for ``name``, or an empty string."""
    by_lower = {str(c).lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return f"; did you mean {by_lower[match[0]]!r}?" if match else ""


def check_keys(mapping: dict, allowed: Iterable[str], key_path: str) -> None:
    """Raise for the first key of ``mapping`` that is not in ``allowed``."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            raise ConfigError(
                join(key_path, key),
                f"unknown key{nearest(str(key), allowed)} (allowed: {', '.join(allowed)})",
            )


def join(key_path: str, key: object) -> str:
    """``join("a.b", "c") == "a.b.c"``; integer keys become ``[i]``."""
    if isinstance(key, int):
        return f"{key_path}[{key}]"
    return f"{key_path}.{key}" if key_path else str(key)


def describe(hint: Any) -> str:
    """A short human name for a type hint."""
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return " or ".join(repr(v) for v in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def check_type(value: Any, hint: Any, key_path: str) -> None:
    """Raise :class:`ConfigError` unless the YAML ``value`` fits the type ``hint``."""
    if hint is Any or hint is inspect.Parameter.empty:
        return
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                check_type(value, option, key_path)
                return
            except ConfigError:
                continue
        raise _mismatch(value, hint, key_path)
    if origin is Literal:
        if value not in args:
            hint_text = nearest(str(value), [str(a) for a in args]) if isinstance(value, str) else ""
            raise ConfigError(key_path, f"expected {describe(hint)}, got {value!r}{hint_text}")
        return
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _mismatch(value, hint, key_path)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(key_path, f"expected a list of {len(args)} values, got {len(value)}")
            for i, (item, item_hint) in enumerate(zip(value, args)):
                check_type(item, item_hint, join(key_path, i))
        elif args:
            for i, item in enumerate(value):
                check_type(item, args[0], join(key_path, i))
        return
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _mismatch(value, hint, key_path)
        if args:
            for key, item in value.items():
                check_type(item, args[1], join(key_path, key))
        return
    if hint is type(None):
        if value is not None:
            raise _mismatch(value, hint, key_path)
        return
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        ok = True  # a hint this checker does not understand: let the constructor decide
    if not ok:
        raise _mismatch(value, hint, key_path)


def _mismatch(value: Any, hint: Any, key_path: str) -> ConfigError:
    return ConfigError(key_path, f"expected {describe(hint)}, got {value!r}")


def check_kwargs(
    target: Callable,
    kwargs: dict,
    key_path: str,
    *,
    supplied: Iterable[str] = (),
) -> None:
    """Check ``kwargs`` against the signature and type hints of ``target``.

    Args:
        target: a class (its ``__init__`` is inspected) or a function.
        kwargs: the keyword arguments a config gives it.
        key_path: where ``kwargs`` sits in the config, for messages.
        supplied: parameters that siteflow passes itself (for example ``split`` for a
            dataset); they may be absent from ``kwargs``.
    """
    if not isinstance(kwargs, dict):
        raise ConfigError(key_path, f"expected a mapping, got {kwargs!r}")
    function = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: check names only
        hints = {}
    params = {
        name: p
        for name, p in signature.parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    supplied = set(supplied)
    for key, value in kwargs.items():
        if key not in params:
            if takes_any:
                continue
            allowed = [n for n in params if n not in supplied]
            raise ConfigError(
                join(key_path, key),
                f"unknown option{nearest(str(key), allowed)} (allowed: {', '.join(allowed)})",
            )
        check_type(value, hints.get(key, params[key].annotation), join(key_path, key))
    for name, p in params.items():
        if p.default is p.empty and name not in kwargs and name not in supplied:
            raise ConfigError(join(key_path, name), "required option is missing")
