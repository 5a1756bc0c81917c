"""CLI flags generated from a stage's config model: every field is a flag, its description the help.

A command built here takes ``--config FILE`` (YAML with any of the fields) and flags that override it; fields of
nested models become ``--outer-inner`` flags; the values given are validated by the config model itself, so a
recipe, Python and the command line accept exactly the same settings. ``-o/--out`` has one meaning on every
command: the directory the command writes into, created when missing (``OUT_MEANING``).
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer
from pydantic import BaseModel

OUT_MEANING = "the directory the command writes into (created when missing); never a file, never an input"
OUT_HELP = "run directory to write to (default: SOURCE itself when it is a run directory, else <SOURCE stem>-<command>)"


def _inner(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _is_model(annotation: Any) -> bool:
    inner = _inner(annotation)
    return isinstance(inner, type) and issubclass(inner, BaseModel)


def flag_type(annotation: Any) -> Any:
    """The Optional[...] type of a field's flag: Literal choices become str (validated by the config model)."""
    inner = _inner(annotation)
    if typing.get_origin(inner) is typing.Literal:
        inner = str
    elif typing.get_origin(inner) is list:
        item = typing.get_args(inner)[0] if typing.get_args(inner) else str
        if isinstance(item, type) and issubclass(item, BaseModel):
            return None  # a list of records: set it in --config (or a command's own shorthand flag)
        inner = list[item if item in (int, float) else str]
    elif typing.get_origin(inner) is dict or inner is Any or typing.get_origin(inner) in (typing.Union, types.UnionType):
        return None  # mappings and unions: set them in --config
    return Optional[inner]


def field_help(field: Any) -> str:
    choices = [typing.get_args(a) for a in [field.annotation, *typing.get_args(field.annotation)]
               if typing.get_origin(a) is typing.Literal]
    extra = f"; one of: {', '.join(map(str, choices[0]))}" if choices else ""
    value = None if field.is_required() else field.get_default(call_default_factory=True)
    default = "" if value is None or value == [] else f" (default: {json.dumps(value, default=str)})"
    return f"{field.description or ''}{extra}{default}"


def config_parameters(model: type[BaseModel], *, short: dict[str, list[str]] | None = None,
                      skip: set[str] = frozenset(), prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], inspect.Parameter]]:
    """One keyword parameter per (nested) field: (path of field names, parameter)."""
    out = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        dotted = ".".join(path)
        if dotted in skip:
            continue
        if _is_model(field.annotation):
            out += config_parameters(_inner(field.annotation), short=short, skip=skip, prefix=path)
            continue
        ftype = flag_type(field.annotation)
        if ftype is None:
            continue
        flag = "--" + "-".join(path).replace("_", "-")
        aliases = (short or {}).get(dotted, [])
        if ftype == Optional[bool]:  # an alias of a boolean is another "--x/--no-x" pair
            decls = [f"{flag}/--no-{flag[2:]}", *aliases]
        else:
            decls = [flag, *aliases]
        param = "__".join(path)
        out.append((path, inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, annotation=ftype,
                                            default=typer.Option(None, *decls, help=field_help(field)))))
    return out


def config_command(
    model: type[BaseModel],
    run: Callable[..., None],
    *,
    leading: list[inspect.Parameter] = (),
    trailing: list[inspect.Parameter] = (),
    short: dict[str, list[str]] | None = None,
    skip: set[str] = frozenset(),
    doc: str = "",
) -> Callable[..., None]:
    """A typer callback: ``leading`` parameters, a flag per config field, ``trailing`` ones and ``--config``.

    ``run(cfg_data, **other)`` gets the merged config data (file, then flags; not yet validated, so the caller can
    add what it derives) and the values of the leading/trailing parameters."""
    fields = config_parameters(model, short=short, skip=skip)
    paths = {p.name: path for path, p in fields}

    def command(**values: Any) -> None:
        from mathforge.config import load_yaml, read_text

        config = values.pop("config", None)
        data: dict[str, Any] = dict(load_yaml(read_text(config), str(config)) or {}) if config else {}
        for name, path in paths.items():
            value = values.pop(name, None)
            if value is None or value == []:
                continue
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        run(data, config=config, **values)

    params = [*leading, *(p for _, p in fields), *trailing,
              inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                default=typer.Option(None, "--config", "-c", help="YAML file with any of these "
                                                     "settings (the stage's recipe config); flags override it"))]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command


def out_option(help: str = OUT_HELP, extra: Sequence[str] = ()) -> inspect.Parameter:
    """``-o/--out DIR``: the directory the command writes into (``OUT_MEANING``); ``extra`` are older names."""
    return inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                             default=typer.Option(None, "--out", "-o", *extra, help=help, file_okay=False))


def source_argument(help: str) -> inspect.Parameter:
    return inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                             default=typer.Argument(..., help=help))
