"""Typed configuration: strict pydantic models, YAML loading with clear errors, ``${ENV}`` secrets that never reach disk.

Every config model derives from :class:`StrictModel`, so an unknown or misspelt key is an error that names the key,
where it was found, and the valid keys (with a "did you mean" when one is close).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from mathforge.errors import ConfigError
from mathforge.masking import ENV_NAME, MASK, mask_config, mask_text, secret_field

M = TypeVar("M", bound=BaseModel)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are rejected, fields are validated on assignment.

    A field named ``*_env`` holds the name of an environment variable (``api_key_env: OPENAI_API_KEY``); anything
    else there is refused without being echoed, since it is usually the key itself. pydantic's own messages never
    show the input (``hide_input_in_errors``); ``validate`` shows it masked.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), hide_input_in_errors=True
    )

    @field_validator("*")
    @classmethod
    def _env_names(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name and info.field_name.endswith("_env") and isinstance(value, str) and value:
            if not ENV_NAME.fullmatch(value):
                raise ValueError(
                    "must be the NAME of an environment variable that holds the secret (letters, digits, _), "
                    "not the secret itself: export it (e.g. `export OPENAI_API_KEY=...`) and write the name here"
                )
        return value


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at ``loc`` inside ``model`` (walks nested models where it can)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        ann = fields[part].annotation
        current = _model_in(ann)
    return sorted(getattr(current, "model_fields", {}).keys()) if current else []


def _model_in(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _model_in(arg)
        if found:
            return found
    return None


def format_validation_error(exc: ValidationError, model: type[BaseModel], where: str) -> str:
    """Turn pydantic's error into lines like ``where: stages[1].generate: unknown key 'temprature' ...``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = _loc_str(loc)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            valid = _valid_keys(model, loc)
            hint = difflib.get_close_matches(key, valid, n=1)
            msg = f"unknown key '{key}'"
            if hint:
                msg += f" (did you mean '{hint[0]}'?)"
            if valid:
                msg += f"; valid keys: {', '.join(valid)}"
            parent = _loc_str(loc[:-1])
            lines.append(f"{where}: {parent + ': ' if parent else ''}{msg}")
        elif err["type"] == "missing":
            lines.append(f"{where}: {path}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {path}: {msg} (got {_shown_input(loc, err.get('input'))})")
    return mask_text("\n".join(lines))


def _shown_input(loc: tuple, value: Any) -> str:
    """The rejected value as an error may show it: never a credential, nor what was typed into a ``*_env`` field."""
    name = str(loc[-1]) if loc else ""
    if isinstance(value, str) and (secret_field(name) or name.lower().endswith("_env")):
        return MASK
    return repr(mask_config(value))


def _loc_str(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate(model: type[M], data: Any, where: str) -> M:
    """Validate ``data`` against ``model``; on failure raise ConfigError with every problem spelt out."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, where)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{loader.name}: line {key_node.start_mark.line + 1}: duplicate key '{key}' "
                f"(first on line {seen[key] + 1})"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, name: str = "<recipe>") -> Any:
    """Parse YAML with duplicate-key detection and errors that name the file and line."""
    loader = _UniqueKeyLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


class Secrets:
    """Values substituted from the environment, remembered so they can be masked before anything is written."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def substitute(self, obj: Any, where: str) -> Any:
        """Replace ``${VAR}`` in every string of ``obj`` with the environment's value (missing → ConfigError)."""
        if isinstance(obj, dict):
            return {k: self.substitute(v, f"{where}.{k}") for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.substitute(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, str):

            def repl(m: re.Match) -> str:
                var = m.group(1)
                if var not in os.environ:
                    raise ConfigError(f"{where}: environment variable {var} is not set")
                self.values[var] = os.environ[var]
                return os.environ[var]

            return _ENV.sub(repl, obj)
        return obj

    def mask(self, obj: Any) -> Any:
        """Put ``${VAR}`` back wherever a substituted secret value appears, then mask anything key-shaped."""
        return mask_config(self._restore(obj))

    def _restore(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: self._restore(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._restore(v) for v in obj]
        if isinstance(obj, str):
            for var, value in self.values.items():
                if value:
                    obj = obj.replace(value, "${" + var + "}")
        return obj


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
