"""Online/offline consistency: the online store holds each entity's newest offline values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.data.dataset import open_dataset
from kiln.errors import EnvironmentProblem
from kiln.features.offline import offline_store, read_partitions
from kiln.features.repo import open_store, plan_dataset, registered_datasets
from kiln.workspace import Workspace


class StoresDisagree(EnvironmentProblem):
    """The online store does not hold the offline store's newest values."""

    def __init__(self, message: str, differences: list[dict[str, Any]], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.differences = differences


@dataclass
class ConsistencyReport:
    """What the check compared. A check that finds differences raises StoresDisagree, so a report says consistent."""

    consistent: bool = True
    checked_entities: int = 0
    checked_values: int = 0
    views: list[str] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)


def check_consistency(ws: Workspace, sample: int = 100, seed: int = 0) -> ConsistencyReport:
    """Compare, for ``sample`` entities of every ingested view, newest offline values with online ones."""
    import pandas as pd

    store = open_store(ws)
    root = offline_store(ws)
    report = ConsistencyReport()
    for entry in registered_datasets(ws).values():
        plan = plan_dataset(ws, open_dataset(Path(entry["path"])))
        for table, view in (("profile", plan.profile_view), ("activity", plan.activity_view)):
            if view is None:
                continue
            offline = read_partitions(root, f"{plan.dataset}/{table}")
            if offline is None or offline.empty:
                continue
            newest = offline.sort_values("event_timestamp").drop_duplicates(plan.join_key, keep="last")
            picked = newest.sample(min(sample, len(newest)), random_state=seed)
            features = [f.name for f in store.get_feature_view(view).features]
            online = pd.DataFrame(store.get_online_features(
                features=[f"{view}:{f}" for f in features],
                entity_rows=[{plan.join_key: _plain(k)} for k in picked[plan.join_key]],
            ).to_dict())
            report.views.append(view)
            report.checked_entities += len(picked)
            for (_, off), (_, on) in zip(picked.iterrows(), online.iterrows()):
                for f in features:
                    report.checked_values += 1
                    if not _same(off.get(f), on.get(f)):
                        report.differences.append({"view": view, "key": plan.join_key,
                                                   "id": _plain(off[plan.join_key]), "feature": f,
                                                   "offline": _plain(off.get(f)), "online": _plain(on.get(f))})
    if report.differences:
        lines = "\n".join(f"  - {d['view']} {d['key']}={d['id']} {d['feature']}: offline {d['offline']!r}, "
                          f"online {d['online']!r}" for d in report.differences[:20])
        more = f"\n  ... and {len(report.differences) - 20} more" if len(report.differences) > 20 else ""
        raise StoresDisagree(f"online and offline stores disagree on {len(report.differences)} values:\n{lines}{more}",
                             report.differences,
                             hint="rebuild the online store with `kiln features materialize --start ...`")
    return report


def _plain(value: Any) -> Any:
    import pandas as pd

    if value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _same(a: Any, b: Any) -> bool:
    import pandas as pd

    a, b = _plain(a), _plain(b)
    a_missing = a is None or (not isinstance(a, str) and bool(pd.isna(a)))
    b_missing = b is None or (not isinstance(b, str) and bool(pd.isna(b)))
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)
