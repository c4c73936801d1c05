"""Pipelines by name (a module of the ``pipelines`` package) or by file path, as `kfp dsl compile --py` finds them."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import InputError

PACKAGE = "pipelines"


@dataclass
class PipelineInfo:
    name: str
    source: str
    description: str
    parameters: dict[str, Any]  # name -> default (None when required)


def pipeline_names() -> list[str]:
    """The modules of the pipelines package, each holding one pipeline function of the same name."""
    try:
        package = importlib.import_module(PACKAGE)
    except ImportError:
        return []
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def load_pipeline(ref: str) -> Any:
    """The pipeline function (a KFP GraphComponent) named ``ref``, or the one defined in the file ``ref``."""
    from kfp.dsl.graph_component import GraphComponent

    if ref.endswith(".py") or "/" in ref:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise InputError(f"pipeline file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"kiln_pipeline_{path.stem}", path)
        assert spec is not None and spec.loader is not None  # a .py file always has a loader
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: any error is theirs to see
            raise InputError(f"pipeline file {path}: {type(exc).__name__}: {exc}") from exc
        found = [v for v in vars(module).values() if isinstance(v, GraphComponent)]
        if len(found) != 1:
            raise InputError(f"pipeline file {path} defines {len(found)} pipelines (@dsl.pipeline); it needs one")
        return found[0]
    names = pipeline_names()
    if ref not in names:
        raise InputError(f"no pipeline '{ref}'; known: {', '.join(names) or 'none'}",
                         hint="`kiln pipeline list` shows them; a path to a .py file works too")
    pipeline = getattr(importlib.import_module(f"{PACKAGE}.{ref}"), ref, None)
    if not isinstance(pipeline, GraphComponent):
        raise InputError(f"module {PACKAGE}.{ref} has no @dsl.pipeline function named {ref}")
    return pipeline


def describe(ref: str) -> PipelineInfo:
    pipeline = load_pipeline(ref)
    spec = pipeline.component_spec
    parameters = {name: spec.default for name, spec in (spec.inputs or {}).items()}
    module = importlib.import_module(pipeline.pipeline_func.__module__) if "/" not in ref else None
    source = getattr(module, "__file__", None) or ref
    return PipelineInfo(name=ref if "/" not in ref else pipeline.name, source=str(source),
                        description=spec.description or "", parameters=parameters)
