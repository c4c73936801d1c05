"""The main job: Kiln's lifecycle end to end on the local embedded default.

Each capability adds its step here, so `kiln demo` always shows the platform as far as it is
built. Every step reports what it made; the summary says how long each took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kiln.errors import EnvironmentProblem

DEMO_CUSTOMERS = 2000
DEMO_DAYS = 120
DEMO_SEED = 7


@dataclass
class StepResult:
    name: str
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoContext:
    root: Path
    dataset: Path | None = None
    results: list[StepResult] = field(default_factory=list)


def _environment(ctx: DemoContext) -> dict[str, Any]:
    """Engines installed (versions read, not imported: `kiln doctor` imports them), disk and stores."""
    from importlib.metadata import PackageNotFoundError, version

    from kiln.doctor import ENGINES, check_disk, check_services
    from kiln.settings import load_settings

    versions, missing = {}, []
    for _, dist, _ in ENGINES:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            missing.append(dist)
    problems = [c for c in [*check_services(load_settings(ctx.root)), check_disk(ctx.root)] if not c.ok]
    if missing or problems:
        lines = [f"{d}: not installed" for d in missing] + [f"{c.name}: {c.detail}" for c in problems]
        raise EnvironmentProblem("environment check failed:\n  " + "\n  ".join(lines), hint="run `kiln doctor` for details")
    return {"engines": versions}


def _workspace(ctx: DemoContext) -> dict[str, Any]:
    from kiln.workspace import init_workspace

    ws, created = init_workspace(ctx.root)
    return {"workspace": str(ws.root), "created": len(created)}


def _generate(ctx: DemoContext) -> dict[str, Any]:
    from kiln.data.dataset import staged_dataset, write_dataset
    from kiln.data.generate import GenerateOptions, generate_churn
    from kiln.data.schema import CHURN_SCHEMA

    ctx.dataset = ctx.root / "data" / "churn"
    opts = GenerateOptions(customers=DEMO_CUSTOMERS, days=DEMO_DAYS, seed=DEMO_SEED,
                           end=datetime.now(timezone.utc).date())
    with staged_dataset(ctx.dataset, overwrite=True) as stage:
        frames, stats = generate_churn(opts)
        manifest = write_dataset(stage, "churn", CHURN_SCHEMA, frames,
                                 {"generator": "kiln.data.generate", "customers": opts.customers, "days": opts.days,
                                  "seed": opts.seed, "end": str(opts.end)}, stats)
    return {"dataset": str(ctx.dataset), "customers": stats["customers"], "events": stats["events"],
            "labels": stats["labels"], "churn_rate": stats["churn_rate"], "content_hash": manifest["content_hash"]}


def _validate(ctx: DemoContext) -> dict[str, Any]:
    from kiln.data.validate import validate_dataset

    if ctx.dataset is None:
        raise EnvironmentProblem("no dataset to validate: the generate step did not run")
    report = validate_dataset(ctx.dataset)
    return {"valid": True, "tables": report.tables}


def _ingest(ctx: DemoContext) -> dict[str, Any]:
    from kiln.features.ingest import ingest
    from kiln.workspace import open_workspace

    if ctx.dataset is None:
        raise EnvironmentProblem("no dataset to ingest: the generate step did not run")
    report = ingest(open_workspace(ctx.root), ctx.dataset)
    return {"feature_service": report.feature_service, "offline_rows": report.offline_rows,
            "online_entities": report.online_rows}


def _materialize(ctx: DemoContext) -> dict[str, Any]:
    """Rebuild the online store from the offline history, as a cluster's schedule would."""
    from kiln.features.materialize import materialize
    from kiln.workspace import open_workspace

    end = datetime.now(timezone.utc)
    return materialize(open_workspace(ctx.root), end - timedelta(days=DEMO_DAYS + 1), end)


def _training_set(ctx: DemoContext) -> dict[str, Any]:
    from kiln.features.training import build_training_set
    from kiln.workspace import open_workspace

    if ctx.dataset is None:
        raise EnvironmentProblem("no dataset for labels: the generate step did not run")
    out = ctx.root / "data" / "churn_training_set.parquet"
    result = build_training_set(open_workspace(ctx.root), ctx.dataset, "churn_v1", out)
    return {"training_set": result.path, "rows": result.rows, "features": len(result.features),
            "label_rate": result.label_rate}


STEPS: list[tuple[str, Callable[[DemoContext], dict[str, Any]]]] = [
    ("check the environment", _environment),
    ("create the workspace", _workspace),
    ("generate churn data", _generate),
    ("validate the dataset", _validate),
    ("ingest features (Feast)", _ingest),
    ("materialize the online store", _materialize),
    ("build a point-in-time training set", _training_set),
]


def run_demo(root: Path, on_step: Callable[[int, int, str], None] = lambda i, n, name: None) -> DemoContext:
    """Run every step in order; an error stops the run and propagates with its own message."""
    ctx = DemoContext(root=root.expanduser().resolve())
    for i, (name, step) in enumerate(STEPS, 1):
        on_step(i, len(STEPS), name)
        t0 = time.perf_counter()
        outputs = step(ctx)
        ctx.results.append(StepResult(name, time.perf_counter() - t0, outputs))
    return ctx
