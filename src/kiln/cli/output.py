"""Output helpers: human text on stdout, progress and errors on stderr, one JSON document with --json."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from typing import Any

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = typer.Option(False, "--json", help="Print one JSON document on stdout and nothing else there.")


def to_plain(value: Any) -> Any:
    """Results (their ``to_dict()`` when they have one), dataclasses, paths and other objects as JSON-ready values."""
    if callable(getattr(value, "to_dict", None)) and not isinstance(value, type):
        return to_plain(value.to_dict())
    if is_dataclass(value) and not isinstance(value, type):
        return to_plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(to_plain(data), indent=2))


def progress(message: str) -> None:
    err.print(f"[dim]…[/dim] {message}")


@contextlib.contextmanager
def engine_output() -> Iterator[None]:
    """While engines run: their prints go to stderr (stdout stays for results), their chatter is quieted."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    levels = {name: logging.getLogger(name).level for name in ("mlflow", "ray", "ray.tune", "alembic")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
