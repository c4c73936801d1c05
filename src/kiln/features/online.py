"""Online reads: the newest feature values of a few entities, from the online store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln.errors import InputError
from kiln.features.definitions import FeaturePlan
from kiln.features.repo import open_store, plan_by_service
from kiln.workspace import Workspace


@dataclass(frozen=True)
class OnlineFeatures:
    """The newest values of a feature service's features, one row per entity: {join_key: id, feature: value, ...}."""

    service: str
    features: list[str]
    rows: list[dict[str, Any]]


def parse_ids(plan: FeaturePlan, raw: list[str]) -> list[Any]:
    """Entity ids as the join key's type; an InputError names an id that does not fit."""
    if not raw:
        raise InputError("give at least one --customer ID")
    if plan.join_type != "Int64":
        return list(raw)
    ids = []
    for value in raw:
        try:
            ids.append(int(value))
        except ValueError:
            raise InputError(f"--customer '{value}': {plan.join_key} is an integer id") from None
    return ids


class OnlineReader:
    """Reads one feature service's newest values; holds the Feast store so repeated reads stay cheap."""

    def __init__(self, ws: Workspace, service: str) -> None:
        self.plan, _ = plan_by_service(ws, service)
        self.service_name = service
        self.store = open_store(ws)
        self.service = self.store.get_feature_service(service)

    def get(self, ids: list[str]) -> OnlineFeatures:
        """The entities' newest values, in the order of ``ids``; unknown ids are an error."""
        plan = self.plan
        keys = parse_ids(plan, ids)
        online = self.store.get_online_features(
            features=self.service, entity_rows=[{plan.join_key: k} for k in keys]
        )
        response = online.to_dict()
        features = [n for n in response if n != plan.join_key]
        # An id the store has never seen has no event timestamp in any stored view (on-demand outputs and
        # the join key carry none); the proto is read directly so known ids stop at their first stamp.
        results = online.proto.results
        rows, unknown = [], []
        for i, key in enumerate(keys):
            if not any(len(r.event_timestamps) > i and r.event_timestamps[i].seconds for r in results):
                unknown.append(key)
                continue
            rows.append({plan.join_key: key, **{f: response[f][i] for f in features}})
        if unknown:
            raise InputError(f"unknown {plan.join_key} in the online store: {', '.join(map(str, unknown))}",
                             hint=f"ingest data for them (`kiln features ingest`) or check the ids; "
                             f"service {self.service_name}")
        return OnlineFeatures(service=self.service_name, features=features, rows=rows)


def get_online(ws: Workspace, ids: list[str], service: str) -> OnlineFeatures:
    """One-off read (the CLI's): see OnlineReader.get."""
    return OnlineReader(ws, service).get(ids)
