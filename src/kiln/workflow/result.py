"""What a pipeline step returns, and how it lands in KFP's artifacts (duck-typed: kiln does not import kfp here)."""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from kiln.errors import KilnError

MARK = "[kiln] "
FAILED_MARK = "[kiln-failed] "  # then JSON: the step's error, its type and the exit code it stands for

P = ParamSpec("P")
R = TypeVar("R")


def say(message: str) -> None:
    """One progress line from inside a component; local runs pick out lines that start with the mark."""
    print(MARK + message, file=sys.stdout, flush=True)


def step(fn: Callable[P, R]) -> Callable[P, R]:
    """A pipeline step: a Kiln error it raises is announced on one line, with its exit code, before it propagates,
    so the run that watches the step's output knows why it failed without reading its traceback."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except KilnError as exc:
            failure = {"error": type(exc).__name__, "exit_code": exc.exit_code, "message": str(exc)}
            print(FAILED_MARK + json.dumps(failure), file=sys.stdout, flush=True)
            raise

    return run


@dataclass
class StepResult:
    """A step's outcome: parameters it returns, metrics and metadata for the UI, and report files."""

    value: Any = None
    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    html: str | None = None
    markdown: str | None = None
    roc: dict[str, list[float]] | None = None  # {"fpr", "tpr", "threshold"}
    confusion: dict[str, Any] | None = None  # {"categories": [...], "matrix": [[...]]}


def fill(result: StepResult, artifact: Any = None, metrics: Any = None, html: Any = None, markdown: Any = None,
         classification: Any = None) -> Any:
    """Write ``result`` into the component's output artifacts; returns the step's value."""
    if artifact is not None:
        artifact.metadata.update(result.metadata)
    if metrics is not None:
        for name, value in result.metrics.items():
            metrics.log_metric(name, float(value))
    if html is not None:
        _copy_report(result.html, html.path, "html")
    if markdown is not None:
        _copy_report(result.markdown, markdown.path, "markdown")
    if classification is not None:
        if result.roc:
            classification.log_roc_curve(result.roc["fpr"], result.roc["tpr"], result.roc["threshold"])
        if result.confusion:
            classification.log_confusion_matrix(result.confusion["categories"], result.confusion["matrix"])
    return result.value


def _copy_report(source: str | None, target: str, kind: str) -> None:
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        out.write_text("<p>no report</p>" if kind == "html" else "_no report_\n")
    elif kind == "html":
        out.write_text(self_contained(Path(source)))
    else:
        shutil.copyfile(source, target)


def self_contained(source: Path) -> str:
    """An HTML page whose images travel inside it (the KFP UI shows one file); a PNG becomes a page of its own."""
    if source.suffix == ".png":
        return f'<html><body><img src="{_data_uri(source)}" alt="{source.stem}"></body></html>'
    text = source.read_text()

    def inline(match: re.Match[str]) -> str:
        image = source.parent / match.group(1)
        return f'src="{_data_uri(image)}"' if image.is_file() else match.group(0)

    return re.sub(r'src="([^":/]+\.png)"', inline, text)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
