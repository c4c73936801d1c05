"""Protected attributes for rows of a training set, read point in time through the dataset's facets service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.data.task import Task
from kiln.errors import InputError
from kiln.features.repo import open_store, plan_by_service
from kiln.training.data import TIME_COLUMN, TrainingData
from kiln.training.scoring import PREDICTED
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd


def facets_service(ws: Workspace, data: TrainingData) -> tuple[str, list[str]]:
    """(the facets feature service, its protected columns) of the dataset the training set came from."""

    service = data.lineage.get("feature_service")
    if not service:
        raise InputError(f"{data.path}: its lineage names no feature service, so its facets cannot be looked up")
    plan, _ = plan_by_service(ws, service)
    if not plan.facets_service or not plan.protected:
        raise InputError(f"dataset '{plan.dataset}' has no protected columns to measure bias by",
                         hint="mark them when importing: `kiln data import --protected COLUMN`")
    return plan.facets_service, list(plan.protected)


def with_facets(ws: Workspace, data: TrainingData, rows: "pd.DataFrame") -> "pd.DataFrame":
    """``rows`` with the protected columns added, as known at each row's label time (same index, same order)."""

    service, columns = facets_service(ws, data)
    if data.key is None:
        raise InputError(f"{data.path}: no entity key column to look facets up by")
    order = "__kiln_order"
    entity = rows[[data.key, TIME_COLUMN]].rename(columns={TIME_COLUMN: "event_timestamp"}).reset_index(drop=True)
    entity[order] = range(len(entity))
    store = open_store(ws)
    joined = store.get_historical_features(entity_df=entity, features=store.get_feature_service(service)).to_df()
    joined = entity[[order]].merge(joined[[order, *columns]], on=order, how="left").sort_values(order)
    out = rows.copy()
    for column in columns:
        out[column] = joined[column].to_numpy()
    return out


def favourable_outcomes(task: Task, rows: "pd.DataFrame", label: str, predictions: Any) -> "pd.DataFrame":
    """``rows`` with the label, and the predictions as column PREDICTED, turned into 1 where the outcome is favourable
    and 0 where not: what bias metrics compare, for any task."""
    outcome = task.outcome
    if outcome is None:
        raise InputError(f"bias metrics of a {task.kind} task need its favourable outcome",
                         hint="name it when importing: `kiln data import --favourable "
                              + ("CLASS[,CLASS]`" if task.is_classification else "'>X'` or `'<X'`"))
    out = rows.copy()
    out[label] = outcome.mask(rows[label])
    out[PREDICTED] = outcome.mask(predictions)
    return out
