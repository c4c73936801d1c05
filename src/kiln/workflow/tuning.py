"""`kiln tune` as one call: a tuning job (new or resumed), then its best model registered as the challenger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiln.errors import InputError
from kiln.evaluation.candidate import Registration, register_run_model
from kiln.tuning.job import TuneResult, TuneSpec, check_spec, resume_job, run_job
from kiln.workspace import Workspace


@dataclass
class TuneOutcome:
    """The tuning job's result and, when it was registered, the registered version with its evaluation."""

    result: TuneResult
    registered: Registration | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "registered": self.registered.to_dict() if self.registered else None}


def tune_and_register(ws: Workspace, spec: TuneSpec | None, resume: str | None, register: bool,
                      model_name: str | None, progress: Callable[[str], None]) -> TuneOutcome:
    """Run ``spec`` (or finish job ``resume``); with ``register``, register the best model under ``model_name`` (by
    default the dataset's name) with alias challenger."""
    if resume is not None:
        result = resume_job(ws, resume, progress)
    elif spec is not None:
        check_spec(spec)
        result = run_job(ws, spec, progress)
    else:
        raise InputError("give --training-set (or --resume JOB to finish an interrupted job)")
    registered = None
    if register:
        registered = register_run_model(ws, model_name, result.parent_run_id, progress, model_uri=result.model_uri)
    return TuneOutcome(result, registered)
