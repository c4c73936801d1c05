"""Captured traffic as a frame of model inputs and answers, with every request that breaks the schema counted.

A capture record holds the raw request; requests the model rejected (a 400) are captured too. Reading never
fails on a bad record: what is wrong with it (a missing or unknown column, a value of the wrong type, a body
that is not a prediction request) is counted per feature and becomes a data-quality violation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.serving.capture import read_capture

if TYPE_CHECKING:
    import pandas as pd

ID, TIME, VARIANT, STATUS = "inference_id", "timestamp", "variant", "status"
PROBABILITY, PREDICTION = "probability", "prediction"
META = (ID, TIME, VARIANT, STATUS, PROBABILITY, PREDICTION)
NUMBER_TYPES = {int, float, type(None)}
TEXT_TYPES = {str, type(None)}


@dataclass
class Traffic:
    """One row per captured instance: the features (schema types; a bad value is null), META columns, and the
    class probabilities (``probability_<class>``) of a multiclass model's answers."""

    frame: "pd.DataFrame"
    records: int  # production requests read
    shadow_records: int  # shadow answers skipped (they repeat production's requests)
    unparseable: int  # requests that are not a V1 or V2 prediction body
    missing_column: Counter[str] = field(default_factory=Counter)  # feature -> instances without it
    unknown_column: Counter[str] = field(default_factory=Counter)  # name -> instances with it
    wrong_type: Counter[str] = field(default_factory=Counter)  # feature -> values of the wrong type
    examples: dict[str, str] = field(default_factory=dict)  # feature -> one offending value, for messages

    @property
    def rows(self) -> int:
        return len(self.frame)


def _instances(request: Any, names: list[str]) -> list[dict[str, Any]] | None:
    """The request's rows as objects keyed by feature, or None when it is not a prediction request."""
    if not isinstance(request, dict):
        return None
    if isinstance(request.get("instances"), list):
        rows: list[Any] = request["instances"]
        if all(isinstance(r, dict) for r in rows):
            return rows
        if all(isinstance(r, list) for r in rows):  # lists are in schema order; extra values are unknown columns
            return [{**dict(zip(names, r)), **{f"value[{i}]": v for i, v in enumerate(r) if i >= len(names)}}
                    for r in rows]
        return None
    if isinstance(request.get("inputs"), list):  # V2: one tensor per feature
        columns: dict[Any, Any] = {i.get("name"): i.get("data") for i in request["inputs"] if isinstance(i, dict)}
        if not columns or not all(isinstance(v, list) for v in columns.values()):
            return None
        n = max(len(v) for v in columns.values())
        return [{k: (v[j] if j < len(v) else None) for k, v in columns.items()} for j in range(n)]
    return None


def _answers(response: Any, n: int) -> list[dict[str, Any]]:
    """The answer columns (prediction, probability, probability_<class>) per row of a V1 or V2 Kiln answer; empty
    objects where there is none."""
    empty: list[dict[str, Any]] = [{}] * n
    if not isinstance(response, dict):
        return empty
    out: list[dict[str, Any]]
    if isinstance(response.get("predictions"), list):
        out = [p if isinstance(p, dict) and PREDICTION in p else {} for p in response["predictions"]]
    else:
        outputs: dict[Any, Any] = {o.get("name"): o.get("data") for o in response.get("outputs", [])
                                   if isinstance(o, dict) and isinstance(o.get("data"), list)}
        if PREDICTION not in outputs:
            return empty
        out = [{k: v[j] for k, v in outputs.items() if j < len(v)} for j in range(len(outputs[PREDICTION]))]
    return out if len(out) == n else empty


def read_traffic(capture_root: Path | str, endpoint: str, features: dict[str, str], since: datetime | None = None,
                 until: datetime | None = None, endpoint_url: str | None = None,
                 variant: str | None = None) -> Traffic:
    """Production traffic of ``endpoint`` in [since, until) (only ``variant``'s, when given: a multi-model
    endpoint's version); ``features`` maps name -> "numeric" | "categorical"."""
    import pandas as pd

    names = list(features)
    expected = set(names)
    columns: dict[str, list[Any]] = {n: [] for n in (*names, ID, TIME, VARIANT, STATUS)}
    answered: list[dict[str, Any]] = []
    traffic = Traffic(frame=pd.DataFrame(), records=0, shadow_records=0, unparseable=0)
    for rec in read_capture(capture_root, endpoint, since, until, endpoint_url):
        if rec.get("shadow"):
            traffic.shadow_records += 1
            continue
        if variant is not None and rec.get("variant") != variant:
            continue
        traffic.records += 1
        rows = _instances(rec.get("request"), names)
        if rows is None:
            traffic.unparseable += 1
            continue
        answers = _answers(rec.get("response"), len(rows)) if rec.get("status") == 200 else [{}] * len(rows)
        for row, answer in zip(rows, answers):
            if row.keys() != expected:
                keys = row.keys()
                traffic.missing_column.update(n for n in names if n not in keys)
                traffic.unknown_column.update(str(k) for k in keys if k not in expected)
            get = row.get
            for n in names:
                columns[n].append(get(n))
            columns[ID].append(rec.get("inference_id"))
            columns[TIME].append(rec.get("timestamp"))
            columns[VARIANT].append(rec.get("variant"))
            columns[STATUS].append(rec.get("status"))
            answered.append(answer)
    data = {n: _typed(traffic, n, columns.pop(n), kind) for n, kind in features.items()}
    data.update(columns)
    traffic.frame = pd.DataFrame(data)
    extra = sorted({k for a in answered for k in a if k.startswith(f"{PROBABILITY}_")})
    for name in (PROBABILITY, *extra):
        traffic.frame[name] = pd.to_numeric(pd.Series([a.get(name) for a in answered], dtype=object),
                                            errors="coerce").astype("float64")
    traffic.frame[PREDICTION] = _predictions([a.get(PREDICTION) for a in answered])
    return traffic


def _predictions(values: list[Any]) -> Any:
    """Predicted classes as whole numbers (Int64) or text, predicted values as floats, each with nulls."""
    import pandas as pd

    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, bool}:
        return pd.array(values, dtype="Int64")
    if kinds <= {int, float}:
        return pd.array(values, dtype="Float64")
    return pd.array([None if v is None else str(v) for v in values], dtype="string")


def _typed(traffic: Traffic, name: str, values: list[Any], kind: str) -> Any:
    """A column in its schema type; values of the wrong type are counted and become null."""
    import numpy as np

    allowed = NUMBER_TYPES if kind == "numeric" else TEXT_TYPES
    if set(map(type, values)) <= allowed:  # the usual case: one pass, no per-value work
        return np.array(values, dtype="float64") if kind == "numeric" else np.array(values, dtype=object)
    clean = []
    for v in values:
        if type(v) in allowed:
            clean.append(v)
        else:
            traffic.wrong_type[name] += 1
            traffic.examples.setdefault(name, repr(v)[:60])
            clean.append(None)
    return np.array(clean, dtype="float64") if kind == "numeric" else np.array(clean, dtype=object)
