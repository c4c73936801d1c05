"""What Feast objects a dataset gets: entity, feature views, on-demand view, feature services.

The plan is derived from the dataset's schema and rendered as a Python file in the Feast
repo, so the repo stays a plain Feast repo (`feast apply` works on it too) that users may
read and edit, for example to add a feature (see README: schema evolution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kiln.data.schema import DatasetSchema

FEAST_TYPES = {"int64": "Int64", "float64": "Float64", "string": "String", "timestamp": "UnixTimestamp"}

PROFILE_TTL_DAYS = 3650  # profile attributes hold until replaced
ACTIVITY_TTL_DAYS = 7  # a week without activity makes the windowed aggregates stale
SERVICE_VERSION = 1
PARTITION_GLOB = "/*/*.parquet"  # every partition's files, read by DuckDB as one table

# The windowed aggregates ingestion computes from events: (name, Feast type, description).
ACTIVITY_FEATURES: list[tuple[str, str, str]] = [
    ("usage_minutes_7d_mean", "Float64", "mean daily call minutes over the last 7 days"),
    ("usage_minutes_30d_mean", "Float64", "mean daily call minutes over the last 30 days"),
    ("usage_trend_7d_vs_30d", "Float64", "7-day over 30-day mean usage, minus 1 (negative: falling usage)"),
    ("data_gb_7d_mean", "Float64", "mean daily data over the last 7 days"),
    ("data_gb_30d_mean", "Float64", "mean daily data over the last 30 days"),
    ("support_calls_7d", "Int64", "support calls in the last 7 days"),
    ("support_calls_30d", "Int64", "support calls in the last 30 days"),
    ("payment_delay_days_7d_max", "Int64", "longest payment delay in the last 7 days"),
    ("payment_delay_days_30d_max", "Int64", "longest payment delay in the last 30 days"),
    ("dropped_calls_30d", "Int64", "dropped calls in the last 30 days"),
    ("active_days_30d", "Int64", "days with activity in the last 30 days"),
    ("tenure_days", "Int64", "days since signup at the end of the day"),
]
DERIVED_FEATURES: list[tuple[str, str, str]] = [
    ("support_calls_per_active_day_30d", "Float64", "support calls per active day over 30 days"),
    ("usage_minutes_per_dollar", "Float64", "30-day mean daily minutes per dollar of monthly charges"),
]


@dataclass(frozen=True)
class FeaturePlan:
    """The Feast objects of one dataset."""

    dataset: str
    entity: str  # Feast entity name
    join_key: str
    join_type: str
    profile_view: str
    profile_features: list[tuple[str, str]]  # (name, Feast type)
    protected: list[str]
    activity_view: str | None = None
    derived_view: str | None = None
    service: str = ""
    facets_service: str | None = None
    offline_root: str = ""
    model_features: list[str] = field(default_factory=list)

    @property
    def views(self) -> list[str]:
        return [v for v in (self.profile_view, self.activity_view) if v]

    def offline_path(self, table: str) -> str:
        return f"{self.offline_root}/{self.dataset}/{table}"


def plan_for(schema: DatasetSchema, kind: str, offline_root: str) -> FeaturePlan:
    """The Feast objects for a dataset of ``kind`` ('churn' or 'imported')."""
    entities = schema.table("entities")
    key = entities.column(schema.entity)
    stem = schema.entity[:-3] if schema.entity.endswith("_id") else schema.entity
    entity = stem if kind == "churn" else f"{schema.name}_{stem}"
    skip = {schema.entity, entities.timestamp}
    profile = [(c.name, FEAST_TYPES[c.dtype]) for c in entities.columns if c.name not in skip]
    protected = [c.name for c in entities.columns if c.role == "protected"]
    has_events = schema.has_table("events")
    activity = f"{schema.name}_activity" if has_events else None
    derived = f"{schema.name}_derived" if has_events else None
    model = [n for n, _ in profile if n not in protected]
    if has_events:
        model += [n for n, _, _ in ACTIVITY_FEATURES] + [n for n, _, _ in DERIVED_FEATURES]
    return FeaturePlan(
        dataset=schema.name,
        entity=entity,
        join_key=schema.entity,
        join_type=FEAST_TYPES[key.dtype],
        profile_view=f"{schema.name}_profile",
        profile_features=profile,
        protected=protected,
        activity_view=activity,
        derived_view=derived,
        service=f"{schema.name}_v{SERVICE_VERSION}",
        facets_service=f"{schema.name}_facets" if protected else None,
        offline_root=offline_root,
        model_features=model,
    )


def render(plan: FeaturePlan) -> str:
    """The Python source of the plan's Feast objects."""
    lines = [
        f'"""Feast definitions for the {plan.dataset!r} dataset, written by `kiln features apply`.',
        "",
        "Kiln writes this file once; edit it to evolve the features (then `kiln features apply`).",
        '"""',
        "",
        "from datetime import timedelta",
        "from typing import Any",
        "",
        "from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType",
        "from feast.data_format import ParquetFormat",
        "from feast.on_demand_feature_view import on_demand_feature_view",
        "from feast.types import Float64, Int64, String, UnixTimestamp",
        "",
        f"{plan.entity} = Entity(",
        f"    name={plan.entity!r},",
        f"    join_keys=[{plan.join_key!r}],",
        f"    value_type=ValueType.{'INT64' if plan.join_type == 'Int64' else 'STRING'},",
        f'    description="One row per {plan.join_key} of the {plan.dataset} dataset.",',
        ")",
        "",
        "# Profile attributes: what the entity is (rows stamped when they became true).",
        f"{plan.profile_view}_source = FileSource(",
        f"    name={plan.profile_view + '_source'!r},",
        f"    path={plan.offline_path('profile') + PARTITION_GLOB!r},",
        "    file_format=ParquetFormat(),",
        '    timestamp_field="event_timestamp",',
        ")",
        f"{plan.profile_view} = FeatureView(",
        f"    name={plan.profile_view!r},",
        f"    entities=[{plan.entity}],",
        f"    ttl=timedelta(days={PROFILE_TTL_DAYS}),",
        "    schema=[",
        *[f"        Field(name={n!r}, dtype={t})," for n, t in plan.profile_features],
        "    ],",
        f"    source={plan.profile_view}_source,",
        "    online=True,",
        f'    tags={{"kiln.dataset": {plan.dataset!r}}},',
        ")",
        "",
    ]
    if plan.activity_view:
        lines += [
            "# Windowed aggregates of the events, one row per entity and active day (stamped at the day's end).",
            f"{plan.activity_view}_source = FileSource(",
            f"    name={plan.activity_view + '_source'!r},",
            f"    path={plan.offline_path('activity') + PARTITION_GLOB!r},",
            "    file_format=ParquetFormat(),",
            '    timestamp_field="event_timestamp",',
            ")",
            f"{plan.activity_view} = FeatureView(",
            f"    name={plan.activity_view!r},",
            f"    entities=[{plan.entity}],",
            f"    ttl=timedelta(days={ACTIVITY_TTL_DAYS}),",
            "    schema=[",
            *[f"        Field(name={n!r}, dtype={t}, description={d!r})," for n, t, d in ACTIVITY_FEATURES],
            "    ],",
            f"    source={plan.activity_view}_source,",
            "    online=True,",
            f'    tags={{"kiln.dataset": {plan.dataset!r}}},',
            ")",
            "",
            "",
            "# Computed at request time from the two views above. Python mode: a tenth of pandas mode's cost",
            "# for one entity online.",
            "@on_demand_feature_view(",
            f"    sources=[{plan.profile_view}, {plan.activity_view}],",
            '    mode="python",',
            # Feast matches an on-demand view's declared fields to inferred ones including descriptions,
            # so the descriptions go in comments here.
            "    schema=[",
            *[f"        Field(name={n!r}, dtype={t}),  # {d}" for n, t, d in DERIVED_FEATURES],
            "    ],",
            ")",
            f"def {plan.derived_view}(inputs: dict[str, Any]) -> dict[str, Any]:",
            "    # Self-contained: Feast runs this function's source on its own, without this module.",
            "    import math",
            "",
            "    def ratio(num: Any, den: Any) -> float | None:",
            "        try:",
            "            num, den = float(num), float(den)",
            "        except (TypeError, ValueError):",
            "            return None",
            "        if not (math.isfinite(num) and math.isfinite(den)) or den <= 0:",
            "            return None",
            "        return num / den",
            "",
            "    return {",
            "        'support_calls_per_active_day_30d': [",
            "            ratio(c, d) for c, d in zip(inputs['support_calls_30d'], inputs['active_days_30d'])],",
            "        'usage_minutes_per_dollar': [",
            "            ratio(u, m) for u, m in zip(inputs['usage_minutes_30d_mean'], inputs['monthly_charges'])],",
            "    }",
            "",
        ]
    model_profile = [n for n, _ in plan.profile_features if n not in plan.protected]
    parts = [f"{plan.profile_view}[{model_profile!r}]"]
    if plan.activity_view:
        parts += [plan.activity_view, str(plan.derived_view)]
    lines += [
        "",
        f"# The features the model uses, versioned: a new model that needs other features gets {plan.dataset}_v2.",
        f"{plan.service} = FeatureService(",
        f"    name={plan.service!r},",
        f"    features=[{', '.join(parts)}],",
        f'    tags={{"kiln.dataset": {plan.dataset!r}, "kiln.version": "{SERVICE_VERSION}"}},',
        ")",
    ]
    if plan.facets_service:
        lines += [
            "",
            "# Protected attributes, kept out of the model's service, for bias analysis only.",
            f"{plan.facets_service} = FeatureService(",
            f"    name={plan.facets_service!r},",
            f"    features=[{plan.profile_view}[{plan.protected!r}]],",
            f'    tags={{"kiln.dataset": {plan.dataset!r}}},',
            ")",
        ]
    return "\n".join(lines) + "\n"


def definitions_file(repo: Path, dataset: str) -> Path:
    # A suffix keeps a dataset named like a module ("json", "feast") from shadowing it on import.
    return repo / f"{dataset}_features.py"
