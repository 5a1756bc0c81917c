"""``mathforge train``: fine-tune a student on exported chats. Every TrainConfig field is a flag (its description is
the help), a ``--config`` YAML can hold any of them, and flags override the file."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from mathforge.cli.flags import field_help, flag_type
from mathforge.train.config import TrainConfig

app = typer.Typer(add_completion=False)
console = Console()

SHORT = {"model": ["-m"], "output_dir": ["--out", "-o"]}
POSITIONAL = "data"
FILE_ONLY = {"trainer_args"}  # a mapping: set it in --config


def _parameters() -> list[inspect.Parameter]:
    params = [inspect.Parameter(POSITIONAL, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[str],
                                default=typer.Argument(None, help=TrainConfig.model_fields[POSITIONAL].description))]
    for name, field in TrainConfig.model_fields.items():
        if name == POSITIONAL or name in FILE_ONLY:
            continue
        flag = "--" + name.replace("_", "-")
        ftype = flag_type(field.annotation)
        decls = [f"{flag}/--no-{flag[2:]}"] if ftype == Optional[bool] else [*SHORT.get(name, [flag])]
        if name in SHORT and flag not in decls:
            decls.insert(0, flag)
        if name == "output_dir":  # `-o` means a directory on every command: a file is refused before anything runs
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                            default=typer.Option(None, *decls, help=field_help(field),
                                                                 file_okay=False)))
            continue
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ftype,
                                        default=typer.Option(None, *decls, help=field_help(field))))
    params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                    default=typer.Option(None, "--config", "-c",
                                                         help="YAML file with any TrainConfig fields; flags override it")))
    return params


def build_config(values: dict[str, Any], config: Path | None = None) -> TrainConfig:
    """The TrainConfig from a --config file and the flags that were given (None = not given)."""
    from mathforge.config import load_yaml, read_text, validate
    from mathforge.errors import ConfigError

    data: dict[str, Any] = dict(load_yaml(read_text(config), str(config)) or {}) if config else {}
    data.update({k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None and v != []})
    if not data.get("output_dir") and data.get("data") and Path(data["data"]).is_dir():
        data["output_dir"] = str(Path(data["data"]) / "train")  # training on a run: the outputs join that run
    if not data.get("data") or not data.get("output_dir"):
        raise ConfigError("mathforge train: give the training data (a run directory or a file) and, for a file, --out")
    return validate(TrainConfig, data, str(config or "mathforge train"))


def train_command(**values: Any) -> None:
    """Fine-tune a student (LoRA, QLoRA or full SFT through TRL) on a run's export or a chat JSONL/Parquet file."""
    from mathforge.train.sft import train

    cfg = build_config({k: v for k, v in values.items() if k != "config"}, values.get("config"))
    metrics = train(cfg)
    shown = {k: metrics.get(k) for k in ("global_step", "first_loss", "last_loss", "eval_loss", "tokens_per_second",
                                           "masking", "output_dir", "merged_dir", "cached") if k in metrics}
    console.print_json(json.dumps(shown, default=str))


train_command.__signature__ = inspect.Signature(_parameters())  # type: ignore[attr-defined]
train_command.__annotations__ = {p.name: p.annotation for p in train_command.__signature__.parameters.values()}
app.command("train")(train_command)
