"""The config reference of the documentation, generated from the code that validates configs.

Every table comes from what :func:`~siteflow.config.loading.load_config` checks: the
structural keys from :data:`siteflow.config.keys.SECTIONS`, the ``train`` sections from the
fields of the dataclasses in :mod:`siteflow.config.schema` (and their attribute docstrings),
and each registered dataset, model, loss and strategy from :func:`siteflow.config.validation.schema`
of its class (type hints and defaults) and its docstring's ``Args:`` section. A key the
validator accepts is therefore a key the reference lists, with the same type and default.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Callable

from siteflow.config.keys import COMPONENT, SECTIONS
from siteflow.config.schema import CheckpointConfig, Component, DPSGDConfig, InferenceConfig, TrainConfig
from siteflow.config.validation import schema
from siteflow.core.registry import DATASETS, LOSSES, MODELS, STRATEGIES, Registry, load_components

DATACLASS_SECTIONS: tuple[tuple[str, type], ...] = (
    ("common.train", TrainConfig),
    ("common.train.inference", InferenceConfig),
    ("common.train.dp_sgd", DPSGDConfig),
    ("current_tasks.task_confs.<task id>.checkpoint", CheckpointConfig),
)
"""Sections whose keys are a dataclass's fields, with the path shown in the reference."""

COMPONENT_KINDS: tuple[tuple[str, str, Registry, tuple[str, ...]], ...] = (
    ("Datasets", "common.dataset (and each all_tasks_datasets entry)", DATASETS, ("split",)),
    ("Models", "common.model", MODELS, ("in_channels", "num_classes")),
    ("Losses", "common.train.loss", LOSSES, ()),
    ("Strategies", "common.strategy", STRATEGIES, ()),
)
"""The registries whose classes a config names, the key that names them, and the options that
siteflow supplies itself (a dataset's split, a model's channels and classes from the data)."""


def config_reference() -> str:
    """The whole config reference as Markdown."""
    load_components()
    parts = [_structure()]
    parts += [_dataclass_section(path, cls) for path, cls in DATACLASS_SECTIONS]
    parts += [_components(title, key, registry, supplied) for title, key, registry, supplied in COMPONENT_KINDS]
    return "\n\n".join(parts) + "\n"


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    """A Markdown table of (key, type, default, meaning) rows."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """``text`` made safe for one table cell (no pipes, no line breaks)."""
    return " ".join(plain(str(text)).split()).replace("|", "\\|")


ROLE = re.compile(r":\w+:`(~?)([^`]+)`")
"""A Sphinx cross-reference role in a docstring (``:class:`~a.b.C``` or ``:func:`f```)."""


def plain(text: str) -> str:
    """``text`` with Sphinx roles as code: ``:class:`~a.b.C``` -> ```C``` (its last name after
    ``~``, as Sphinx shows it)."""
    return ROLE.sub(lambda m: f"``{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}``", text)


def _code(value: str) -> str:
    return f"`{value}`" if value else ""


def _structure() -> str:
    """The structural sections: top level, common, sites, current tasks, components."""
    out = ["## Structure"]
    for section, keys in SECTIONS.items():
        title = f"`{section}`" if section else "top level"  # code: a key path's <task id> is no HTML tag
        rows = [(_code(k.name), k.type, "required" if k.default is None else _code(k.default), k.meaning) for k in keys]
        out += [f"### {title}", _table(rows)]
    return "\n\n".join(out)


def _dataclass_section(path: str, cls: type) -> str:
    """One section whose keys are ``cls``'s fields."""
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    rows = []
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        rows.append((_code(field.name), _type_text(hints[field.name]), _code(_default_text(default)), docs.get(field.name, "")))
    summary = _summary(cls)
    return "\n\n".join([f"## `{path}`", summary, _table(rows)])


def _components(title: str, key: str, registry: Registry, supplied: tuple[str, ...]) -> str:
    """Every class registered in ``registry``, with its options (less the ``supplied`` ones)."""
    out = [f"## {title}", f"Named by `{key}.name`; their options go under `{key}.kwargs`."]
    for name in registry.names():
        out.append(_component(name, registry.get(name), supplied))
    return "\n\n".join(out)


def component_options(target: Callable, supplied: tuple[str, ...] = ()) -> list[tuple[str, str, str, str]]:
    """(option, type, default, meaning) of every option a config may give ``target``."""
    rows = []
    for option_name, option in schema(target).options.items():
        if option_name in supplied:
            continue
        default = "required" if option.required else _code(_default_text(option.parameter.default))
        meaning = arg_docs(option.owner).get(option_name) or arg_docs(target).get(option_name, "")
        rows.append((_code(option_name), _type_text(option.hint), default, meaning))
    return rows


def _component(name: str, target: Callable, supplied: tuple[str, ...]) -> str:
    """One registered class: its name, summary and options."""
    rows = component_options(target, supplied)
    where = f"`{target.__module__}.{target.__qualname__}`"
    parts = [f"### `{name}`", f"{_summary(target)} ({where})"]
    parts.append(_table(rows) if rows else "No options.")
    if schema(target).open:
        parts.append("Other options are passed on unchecked.")
    return "\n\n".join(parts)


def _summary(target: Any) -> str:
    """The first paragraph of ``target``'s docstring, on one line."""
    doc = inspect.getdoc(target) or ""
    return plain(" ".join(doc.split("\n\n")[0].split()))


def _type_text(hint: Any) -> str:
    """A type hint as the YAML value it takes: ``int``, ``list of float``, ``{name, kwargs}``..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is inspect.Parameter.empty or hint is Any:
        return "any"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (list, tuple, set) or hint in (list, tuple):
        items = {a for a in args if a is not Ellipsis}
        return "list of " + " or ".join(sorted(_type_text(a) for a in items)) if items else "list"
    if origin is dict or hint is dict:
        return "mapping"
    if hint is Component:
        return COMPONENT
    if dataclasses.is_dataclass(hint):
        return "mapping"
    return SCALARS.get(hint, getattr(hint, "__name__", str(hint)))


SCALARS: dict[Any, str] = {int: "int", float: "float", bool: "bool", str: "str", type(None): "null", Path: "path"}
"""The names of YAML scalars by the Python type that holds them."""


def _default_text(value: Any) -> str:
    """A default as YAML shows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if set(fields) == {"name", "kwargs"}:
            return f"{{name: {fields['name']}" + (f", kwargs: {fields['kwargs']}}}" if fields["kwargs"] else "}")
        return "(see its section)"
    if isinstance(value, tuple):
        return str(list(value))
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


ARGS = re.compile(r"^(Args|Arguments|Parameters):\s*$", re.M)
ARG_LINE = re.compile(r"^(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


@functools.cache
def arg_docs(target: Any) -> dict[str, str]:
    """Option -> meaning, from the ``Args:`` sections of ``target``'s docstring and its
    ``__init__``'s (Google style), and from attribute docstrings of a dataclass."""
    docs: dict[str, str] = {}
    sources = [target]
    if inspect.isclass(target):
        sources.append(target.__dict__.get("__init__"))
        if dataclasses.is_dataclass(target):
            docs.update(attribute_docs(target))
    for source in sources:
        doc = inspect.getdoc(source) if source is not None else None
        if doc:
            docs.update(_parse_args(doc))
    return docs


def _parse_args(doc: str) -> dict[str, str]:
    """The entries of every ``Args:`` section of ``doc``."""
    docs: dict[str, str] = {}
    for match in ARGS.finditer(doc):
        current: str | None = None
        for line in doc[match.end():].split("\n")[1:]:
            indent = len(line) - len(line.lstrip())
            if not line.strip() or indent == 0:
                break
            entry = ARG_LINE.match(line.strip()) if indent <= 4 else None
            if entry is not None:
                current = entry.group(1).lstrip("*")
                docs[current] = entry.group(2)
            elif current is not None:
                docs[current] += " " + line.strip()
    return docs


def attribute_docs(cls: type) -> dict[str, str]:
    """Field -> the string literal written right under its annotated assignment in ``cls``'s
    source (an attribute docstring), for ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for statement, following in zip(body, body[1:]):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs
