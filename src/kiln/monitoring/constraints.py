"""Data quality: captured rows checked against the baseline's constraints, one violation per broken constraint.

Checked per feature: missing or unknown columns, values of the wrong type, a missing share above the
baseline's (plus a tolerance), values outside the baseline's range, and categories the baseline never saw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.monitoring.traffic import Traffic
from kiln.monitoring.violations import Violation

if TYPE_CHECKING:
    from kiln.settings import MonitoringSettings

MAX_SHOWN = 5


def _share(n: int, total: int) -> float:
    return round(n / total, 6) if total else 0.0


def check_constraints(features: dict[str, dict[str, Any]], traffic: Traffic,
                      limits: "MonitoringSettings") -> tuple[list[Violation], dict[str, dict[str, Any]]]:
    """(violations, per-feature observations) of the captured rows against the baseline's statistics."""
    import numpy as np

    out: list[Violation] = []
    observed: dict[str, dict[str, Any]] = {}
    rows = traffic.rows
    if traffic.unparseable:
        out.append(Violation("data_quality", "*", "unparseable_requests", 0, traffic.unparseable, 0,
                             f"{traffic.unparseable} of {traffic.records} requests are not a V1 or V2 "
                             "prediction body"))
    for name, n in sorted(traffic.unknown_column.items()):
        out.append(Violation("data_quality", name, "new_column", 0.0, _share(n, rows), 0.0,
                             f"{n} of {rows} rows carry '{name}', which the model was not trained on"))
    for name, stats in features.items():
        column = traffic.frame[name] if rows else None
        seen: dict[str, Any] = {"type": stats["type"]}
        absent = traffic.missing_column.get(name, 0)
        if absent:
            out.append(Violation("data_quality", name, "missing_column", 0.0, _share(absent, rows), 0.0,
                                 f"{absent} of {rows} rows lack '{name}'"))
        wrong = traffic.wrong_type.get(name, 0)
        if wrong:
            expected = "numbers" if stats["type"] == "numeric" else "text"
            out.append(Violation("data_quality", name, "wrong_type", 0.0, _share(wrong, rows), 0.0,
                                 f"{wrong} value(s) of '{name}' are not {expected}, "
                                 f"e.g. {traffic.examples.get(name, '?')}"))
        if column is None:
            observed[name] = seen
            continue
        # A missing column or a wrong-typed value was read as null; count only the nulls sent as such.
        nulls = max(0, int(column.isna().sum()) - absent - wrong)
        missing = _share(nulls, rows)
        seen["missing_share"] = missing
        limit = stats["missing_share"] + limits.missing_tolerance
        if missing > limit:
            out.append(Violation("data_quality", name, "missing_share", round(stats["missing_share"], 6), missing,
                                 round(limit, 6), f"{nulls} of {rows} values of '{name}' are null"))
        if stats["type"] == "numeric" and "min" in stats:
            values = column.to_numpy(dtype="float64")
            present = values[~np.isnan(values)]
            outside = int(((present < stats["min"]) | (present > stats["max"])).sum())
            if len(present):
                seen.update(min=float(present.min()), max=float(present.max()), mean=float(present.mean()))
            seen["out_of_range_share"] = _share(outside, len(present))
            if seen["out_of_range_share"] > limits.out_of_range_tolerance:
                out.append(Violation("data_quality", name, "out_of_range_share", 0.0, seen["out_of_range_share"],
                                     limits.out_of_range_tolerance,
                                     f"{outside} of {len(present)} values of '{name}' lie outside the baseline's "
                                     f"range {stats['min']:g}..{stats['max']:g}"))
        elif stats["type"] == "categorical":
            known = set(stats.get("categories", []))
            counts = column.dropna().astype(str).value_counts()
            new = {str(k): int(v) for k, v in counts.items() if k not in known}
            seen["new_categories"] = new
            if new:
                shown = ", ".join(f"'{k}' ({v})" for k, v in list(new.items())[:MAX_SHOWN])
                out.append(Violation("data_quality", name, "new_category", 0.0,
                                     _share(sum(new.values()), rows), 0.0,
                                     f"'{name}' holds values the baseline never saw: {shown}"))
        observed[name] = seen
    return out, observed
