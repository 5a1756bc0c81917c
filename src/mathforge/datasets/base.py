"""The loader interface: one small class per dataset turns a raw row into a normalised Problem."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from mathforge.errors import ConfigError
from mathforge.records import Problem

AnswerStyle = Literal["number", "latex", "choice"]


class RowError(Exception):
    """A row cannot become a Problem; the loader names the field at fault and the file/line are added later."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class Loader:
    """A dataset: where it lives on the hub, how its files are named, how a row is parsed, which prompt suits it."""

    name: ClassVar[str]
    description: ClassVar[str]
    hub_id: ClassVar[str | None] = None
    # Hub configs read one after another (MATH on the hub is split by subject); (None,) means the default config.
    hub_configs: ClassVar[tuple[str | None, ...]] = (None,)
    default_split: ClassVar[str] = "train"
    # Files tried in a directory when no split is given and no "<split>.<ext>" file exists (e.g. SVAMP.json).
    file_names: ClassVar[tuple[str, ...]] = ()
    # The row field holding the dataset's own id, when it has one (else ids are "dataset/split/index").
    id_field: ClassVar[str | None] = None
    prompt: ClassVar[str] = "cot"
    answer_style: ClassVar[AnswerStyle] = "number"

    def __init__(self, **options: Any):
        if options:
            raise ConfigError(
                f"dataset '{self.name}' takes no options, got: {', '.join(sorted(options))} "
                "(field mappings such as question_field belong to the 'generic' dataset)"
            )

    @property
    def dataset(self) -> str:
        """The prefix of ids and the Problem.source of what this loader yields."""
        return self.name

    def parse(self, row: dict[str, Any], key: str) -> Problem:
        """Turn one raw row into a Problem; ``key`` is the fallback id ``dataset/split/index``; raise RowError."""
        raise NotImplementedError


def text_field(row: dict[str, Any], *names: str, required: bool = True) -> str | None:
    """The stripped text of the first of ``names`` present in ``row``; missing or empty -> RowError when required."""
    for name in names:
        value = row.get(name)
        if value is None:
            continue
        text = _text(value, name).strip()
        if text:
            return text
    if required:
        raise RowError("missing or empty", field=names[0])
    return None


def _text(value: Any, field: str) -> str:
    """A scalar cell as text; a list or mapping is refused, never turned into its Python repr (``['#### 5']``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):  # a Parquet binary column
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RowError(f"not valid UTF-8 (byte 0x{value[exc.start]:02x})", field=field) from None
    if isinstance(value, (list, tuple, dict, set)):
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise RowError(f"expected text, got a {type(value).__name__}: {shown}", field=field)
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` if it survives JSON (Problem.meta is stored as JSON), else its string form."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def rest(row: dict[str, Any], used: set[str]) -> dict[str, Any]:
    """The row's other fields, kept in meta so nothing the source says is lost."""
    return {k: jsonable(v) for k, v in row.items() if k not in used}
