"""Type checks of plain YAML values against Python type hints.

The config layer uses these to check ``kwargs`` against the constructor of the class a name
refers to (datasets, models, losses, strategies), so that a typo or a wrong type is reported
with its key path before any training starts, instead of as a traceback from deep inside.
A constructor that passes its ``**kwargs`` on to its parent's has its own options and its
parents' (see :func:`schema`): each option is declared once, where it belongs.
"""

from __future__ import annotations

import ast
import functools
import inspect
import reprlib
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Union

from siteflow.core.errors import nearest


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


def _short_repr() -> reprlib.Repr:
    """A ``repr`` that keeps a value in a message short: long strings, lists and mappings
    (a value that YAML aliases repeat thousands of times) are cut with ``...``."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = 80
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 8
    short.maxlevel = 3
    return short


short_repr = _short_repr().repr
"""``repr(value)``, cut to a few dozen characters for an error message."""


def check_keys(mapping: dict, allowed: Iterable[str], key_path: str) -> None:
    """Raise for the first key of ``mapping`` that is not in ``allowed``."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            raise ConfigError(
                join(key_path, key),
                f"unknown key{nearest(str(key), allowed)} (allowed: {', '.join(allowed)})",
            )


def check_fields(value: Any, config_class: type, key_path: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a mapping whose keys are fields of the
    dataclass ``config_class`` and whose values fit their type hints."""
    check_type(value, dict, key_path)
    hints = typing.get_type_hints(config_class)
    check_keys(value, hints, key_path)
    for key, item in value.items():
        check_type(item, hints[key], join(key_path, key))


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
            raise ConfigError(key_path, f"expected {describe(hint)}, got {short_repr(value)}{hint_text}")
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
    return ConfigError(key_path, f"expected {describe(hint)}, got {short_repr(value)}")


@dataclass(frozen=True)
class Option:
    """One keyword option of a class or function, as the signature that declares it says.

    ``parameter`` holds its name, kind and default (``inspect.Parameter.empty`` when the
    option is required); ``hint`` is its resolved type hint (the raw annotation when the
    hints cannot be resolved, ``inspect.Parameter.empty`` when there is none); ``owner`` is
    the class (or the function) whose signature declares it.
    """

    parameter: inspect.Parameter
    hint: Any
    owner: Callable

    @property
    def required(self) -> bool:
        return self.parameter.default is inspect.Parameter.empty


@dataclass(frozen=True)
class Schema:
    """The options a config may give a class or a function, by name, in the order of the
    signatures that declare them (the class's own first, then each parent's new ones).
    ``open``: any other key is accepted too, unchecked (``**kwargs`` that are not passed on
    to a parent's ``__init__``)."""

    options: dict[str, Option]
    open: bool


def schema(target: Callable) -> Schema:
    """The options of ``target``: a function's keyword parameters, or those of a class's
    ``__init__`` followed through ``**kwargs`` into its parents.

    A class's ``__init__`` that passes its ``**kwargs`` on to ``super().__init__`` (as its
    source reads) takes the options of the next ``__init__`` along the class's MRO too, and so
    on until an ``__init__`` that does not pass them on; ``object``'s takes no option (nor does
    a class that defines no ``__init__``, like ``torch.utils.data.Dataset``). Where several
    signatures declare an option, the nearest to the class wins: its default and its type hint
    (a child may override a parent's default). An option without a default is required,
    whichever signature declares it. A class whose ``options_class`` attribute names an
    options class takes that class's options for its ``**kwargs``. ``**kwargs`` used
    otherwise (or whose source cannot be read) accept any other key, unchecked.
    """
    options: dict[str, Option] = {}
    open_ended = False
    for function, signature, owner, forwarded in _signatures(target):
        try:
            hints = typing.get_type_hints(function)
        except Exception:  # unresolvable annotations: the raw ones are checked leniently
            hints = {}
        parameters = list(signature.parameters.values())[1 if inspect.isclass(target) else 0 :]
        for p in parameters:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in options:
                options[p.name] = Option(p, hints.get(p.name, p.annotation), owner)
        open_ended = _var_keyword(signature) is not None and not forwarded
    return Schema(options, open_ended)


OPTIONS_CLASS = "options_class"
"""A class attribute naming the class (an options dataclass) that receives ``__init__``'s
``**kwargs``: its fields are then the class's options too (relay's ``RelayOptions``)."""


def _signatures(target: Callable) -> Iterator[tuple[Callable, inspect.Signature, Callable, bool]]:
    """(function, its signature, owner, whether it passes its ``**kwargs`` on to the next
    one) of each signature that makes up ``target``'s options (see :func:`schema`): a
    function's own; for a class, the ``__init__`` it uses, then, while the last one passes its
    ``**kwargs`` to ``super().__init__``, the next ``__init__`` along its MRO (``object``'s
    excluded)."""
    if not inspect.isclass(target):
        yield target, inspect.signature(target), target, False
        return
    for cls in target.__mro__:
        function = cls.__dict__.get("__init__")
        if cls is object or function is None:
            continue
        signature = inspect.signature(function)
        options_class = cls.__dict__.get(OPTIONS_CLASS)
        if options_class is not None and _var_keyword(signature) is not None:
            yield function, signature, cls, True
            yield options_class.__init__, inspect.signature(options_class.__init__), options_class, False
            return
        forwarded = _passes_to_super(function, _var_keyword(signature))
        yield function, signature, cls, forwarded
        if not forwarded:
            return


def _var_keyword(signature: inspect.Signature) -> str | None:
    """The name of the ``**kwargs`` parameter of ``signature``, if it has one."""
    return next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)


@functools.lru_cache(maxsize=1024)
def _passes_to_super(function: Callable, var_keyword: str | None) -> bool:
    """Whether the source of ``function`` calls ``super().__init__(..., **<var_keyword>)``
    (False without ``var_keyword`` or without readable source)."""
    if var_keyword is None:
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return False
    return any(
        _is_super_init(node) and any(k.arg is None and _is_name(k.value, var_keyword) for k in node.keywords)
        for node in ast.walk(tree)
    )


def _is_super_init(node: ast.AST) -> bool:
    """Whether ``node`` is a call ``super().__init__(...)`` (or ``super(...).__init__(...)``)."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
        and _is_name(node.func.value.func, "super")
    )


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def defaults(target: Callable) -> dict[str, Any]:
    """The default of every option of ``target`` that has one (see :func:`schema`)."""
    return {name: o.parameter.default for name, o in schema(target).options.items() if not o.required}


RENAMED_OPTIONS: dict[str, str] = {
    "do_bg": "include_background",
    "dice_weight": "lambda_dice",
    "ce_weight": "lambda_ce",
}
"""Options of earlier releases -> their names now: the losses and metrics share MONAI's
vocabulary (``include_background``, ``lambda_dice``, ``lambda_ce``)."""


def check_kwargs(
    target: Callable,
    kwargs: dict,
    key_path: str,
    *,
    supplied: Iterable[str] = (),
    reserved: Iterable[str] = (),
) -> None:
    """Check ``kwargs`` against the options of ``target`` (see :func:`schema`).

    Raises :class:`ConfigError` naming the key path for an unknown option (with the nearest
    known name and every allowed one), a reserved one, a value of the wrong type, or a missing
    required option.

    Args:
        target: a class (its ``__init__``, followed through ``**kwargs``) or a function.
        kwargs: the keyword arguments a config gives it.
        key_path: where ``kwargs`` sits in the config, for messages.
        supplied: parameters that siteflow passes itself unless ``kwargs`` sets them (a
            model's ``in_channels``); they may be absent from ``kwargs``.
        reserved: parameters that siteflow always passes itself (a dataset's ``split``, an
            optimizer's ``params``): ``kwargs`` must not set them.
    """
    if not isinstance(kwargs, dict):
        raise ConfigError(key_path, f"expected a mapping, got {short_repr(kwargs)}")
    found = schema(target)
    reserved = set(reserved)
    supplied = set(supplied) | reserved
    for key, value in kwargs.items():
        if key in reserved:
            raise ConfigError(join(key_path, key), "is set by siteflow itself; remove it")
        option = found.options.get(key)
        if option is None:
            renamed = RENAMED_OPTIONS.get(str(key))
            if renamed in found.options:
                raise ConfigError(join(key_path, key), f"was renamed: use {renamed!r} (the name MONAI's losses and the metrics use)")
            if found.open:
                continue
            allowed = [name for name in found.options if name not in supplied]
            known = f"(allowed: {', '.join(allowed)})" if allowed else f"({getattr(target, '__name__', target)} takes no options)"
            raise ConfigError(join(key_path, key), f"unknown option{nearest(str(key), allowed)} {known}")
        check_type(value, option.hint, join(key_path, key))
    for name, option in found.options.items():
        if option.required and name not in kwargs and name not in supplied:
            raise ConfigError(join(key_path, name), "required option is missing")
