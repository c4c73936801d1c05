"""Bias metrics by facet, as SageMaker Clarify defines them: pre-training (labels) and post-training (predictions).

Facet d is the disadvantaged group, the rows whose facet column holds one of the given values; facet a is
every other row. Label 1 is the positive (accepted) outcome. Signs follow SageMaker's documentation: most
differences are a minus d, so a positive value means facet d fares worse; DRR and TE are d minus a. A
metric whose formula divides by zero has value None and a note naming the empty count. Rows whose facet
value is null are left out (CI's note says how many). Pure computation: nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from kiln.errors import InputError
from kiln.training.scoring import PREDICTED

Mask = npt.NDArray[np.bool_]
MAX_SHOWN = 5  # offending or present values quoted in an error message


@dataclass(frozen=True)
class Facet:
    """Which rows are the disadvantaged group d: those whose ``column`` holds one of ``values``."""

    column: str
    values: tuple[object, ...]

    def __str__(self) -> str:
        return f"{self.column}={','.join(map(str, self.values))}"


@dataclass(frozen=True)
class BiasMetric:
    """One metric: abbreviation, value (None where undefined, ``note`` says why) and what it measures."""

    name: str
    value: float | None
    description: str
    note: str = ""


def parse_facet(text: str) -> Facet:
    """``COLUMN=VALUE[,VALUE...]`` as a Facet, e.g. "gender=female" or "contract=month-to-month,one-year"."""
    column, sep, rest = text.partition("=")
    values = tuple(v.strip() for v in rest.split(",") if v.strip())
    if not sep or not column.strip() or not values:
        raise InputError(f"facet '{text}': expected COLUMN=VALUE[,VALUE...]",
                         hint="e.g. gender=female, senior_citizen=1 or contract=month-to-month,one-year")
    return Facet(column.strip(), values)


def pre_training(frame: pd.DataFrame, label: str, facet: Facet, group: str | None = None) -> list[BiasMetric]:
    """CI, DPL, KL, JS, LP, TVD, KS and CDD of the labels; CDD is conditioned on ``group`` when given."""
    rows = _prepare(frame, label, None, facet, group)
    return _measure(rows, PRE_TRAINING)


def post_training(frame: pd.DataFrame, label: str, predicted: str, facet: Facet,
                  group: str | None = None) -> list[BiasMetric]:
    """DPPL, DI, AD, RD, DAR, DRR, TE and CDDPL of the predicted labels against the labels."""
    rows = _prepare(frame, label, predicted, facet, group)
    return _measure(rows, POST_TRAINING)


@dataclass(frozen=True)
class _Rows:
    """The rows measured, as masks: facet d, label 1, predicted label 1; and the strata, if any."""

    d: Mask
    y: Mask
    yhat: Mask
    group: pd.Series | None  # named after its column
    excluded: str  # CI's note: rows left out for a null facet value


class _Undefined(Exception):
    """A metric's formula divides by zero; the message names the empty count."""


Metric = Callable[[_Rows], float | tuple[float, str]]


def _measure(rows: _Rows, table: list[tuple[str, str, Metric]]) -> list[BiasMetric]:
    out = []
    for name, description, metric in table:
        try:
            result = metric(rows)
        except _Undefined as exc:
            out.append(BiasMetric(name, None, description, str(exc)))
            continue
        value, note = result if isinstance(result, tuple) else (result, "")
        out.append(BiasMetric(name, float(value), description, note))
    return out


def _prepare(frame: pd.DataFrame, label: str, predicted: str | None, facet: Facet, group: str | None) -> _Rows:
    if len(frame) == 0:
        raise InputError("the frame has no rows: there is nothing to measure bias on")
    needed = [label, facet.column] + [c for c in (predicted, group) if c is not None]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"no column {', '.join(repr(c) for c in missing)} in the frame; "
                         f"its columns: {', '.join(map(str, frame.columns))}", hint="check the column names")
    if not facet.values:
        raise InputError(f"facet on '{facet.column}' has no values", hint="e.g. gender=female")
    y = _binary(frame[label], "label")
    yhat = _binary(frame[predicted], "predicted") if predicted is not None else y
    keep = frame[facet.column].notna().to_numpy(dtype=bool)
    values = frame[facet.column][keep]
    unmatched = [str(v) for v in facet.values if not _facet_mask(values, (v,)).any()]
    if unmatched:
        present = sorted({str(v) for v in values.unique()})
        shown = ", ".join(present[:MAX_SHOWN]) + (", ..." if len(present) > MAX_SHOWN else "")
        raise InputError(f"facet {facet}: {', '.join(map(repr, unmatched))} "
                         f"match{'es' if len(unmatched) == 1 else ''} no rows",
                         hint=f"values of '{facet.column}': {shown or 'none, only nulls'}")
    d = _facet_mask(values, facet.values)
    if d.all():
        raise InputError(f"facet {facet} matches every row with a '{facet.column}' value: there is no facet a",
                         hint="choose values that leave some rows out, to compare with")
    dropped = int((~keep).sum())
    excluded = f"{dropped} row{'s' if dropped != 1 else ''} with a null '{facet.column}' left out" if dropped else ""
    strata = frame[group][keep].reset_index(drop=True) if group is not None else None
    return _Rows(d, y[keep], yhat[keep], strata, excluded)


def _binary(series: pd.Series, role: str) -> Mask:
    """The column as a mask of 1s; an InputError names nulls or values other than 0/1."""
    nulls = int(series.isna().sum())
    if nulls:
        raise InputError(f"{role} column '{series.name}' has {nulls} null value{'s' if nulls != 1 else ''}",
                         hint="drop or fill those rows first")
    bad = [v for v in pd.unique(series) if not (isinstance(v, (bool, int, float, np.bool_, np.number)) and v in (0, 1))]
    if bad:
        shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in bad[:MAX_SHOWN])
        raise InputError(f"{role} column '{series.name}' is not binary 0/1: it holds {shown}"
                         + (f" and {len(bad) - MAX_SHOWN} more" if len(bad) > MAX_SHOWN else ""),
                         hint="map the positive outcome to 1 and the rest to 0 (or use a bool column)")
    return cast(Mask, (series == 1).to_numpy(dtype=bool))


def _facet_mask(values: pd.Series, wanted: tuple[object, ...]) -> Mask:
    """Rows holding one of ``wanted``; text matches numbers and bools by value ("1" matches 1, "true" True)."""
    if pd.api.types.is_bool_dtype(values):
        texts = {str(v).strip().lower() for v in wanted}
        found = values.astype(str).str.lower().isin(texts) | values.astype(int).astype(str).isin(texts)
        return cast(Mask, found.to_numpy(dtype=bool))
    if pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(pd.Series(list(wanted), dtype=object), errors="coerce").dropna()
        return cast(Mask, values.isin(numbers).to_numpy(dtype=bool))
    return cast(Mask, values.astype(str).isin({str(v) for v in wanted}).to_numpy(dtype=bool))


def _n(mask: Mask) -> int:
    return int(mask.sum())


def _by_facet(r: _Rows, num: Mask, den: Mask, what: str) -> tuple[float, float]:
    """num/den counted within facet a and within facet d; _Undefined names each facet with no ``what``."""
    counts = [(_n(num & side), _n(den & side)) for side in (~r.d, r.d)]
    empty = [name for name, (_, n) in zip("ad", counts) if n == 0]
    if empty:
        raise _Undefined(f"undefined: {' and '.join('facet ' + e for e in empty)} "
                         f"{'has' if len(empty) == 1 else 'have'} no {what}")
    return counts[0][0] / counts[0][1], counts[1][0] / counts[1][1]


def _label_dists(r: _Rows) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """P_a and P_d: shares of label 0 and label 1 within each facet."""
    qa, qd = _by_facet(r, r.y, np.ones_like(r.d), "rows")
    return np.array([1 - qa, qa]), np.array([1 - qd, qd])


def _kl_div(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64]) -> float:
    nz = p > 0  # 0 * ln 0 counts as 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def _ci(r: _Rows) -> tuple[float, str]:
    """CI = (n_a - n_d) / (n_a + n_d)."""
    na, nd = _n(~r.d), _n(r.d)
    return (na - nd) / (na + nd), r.excluded


def _dpl(r: _Rows) -> float:
    """DPL = q_a - q_d, q = n(1)/n, the share of positive labels in a facet."""
    qa, qd = _by_facet(r, r.y, np.ones_like(r.d), "rows")
    return qa - qd


def _kl(r: _Rows) -> float:
    """KL = sum_y P_a(y) ln(P_a(y) / P_d(y)), natural log, over the labels y in {0, 1}."""
    pa, pd_ = _label_dists(r)
    for label in (0, 1):
        if pa[label] > 0 and pd_[label] == 0:
            raise _Undefined(f"infinite: facet d has no rows labelled {label} and facet a has some")
    return _kl_div(pa, pd_)


def _js(r: _Rows) -> float:
    """JS = (KL(P_a || P) + KL(P_d || P)) / 2, P = (P_a + P_d) / 2."""
    pa, pd_ = _label_dists(r)
    mid = (pa + pd_) / 2
    return (_kl_div(pa, mid) + _kl_div(pd_, mid)) / 2


def _lp(r: _Rows) -> float:
    """LP = sqrt(sum_y (P_a(y) - P_d(y))^2), the L2 norm."""
    pa, pd_ = _label_dists(r)
    return float(np.sqrt(np.sum((pa - pd_) ** 2)))


def _tvd(r: _Rows) -> float:
    """TVD = sum_y |P_a(y) - P_d(y)| / 2, half the L1 norm."""
    pa, pd_ = _label_dists(r)
    return float(np.sum(np.abs(pa - pd_)) / 2)


def _ks(r: _Rows) -> float:
    """KS = max_y |P_a(y) - P_d(y)|."""
    pa, pd_ = _label_dists(r)
    return float(np.max(np.abs(pa - pd_)))


def _cdd(r: _Rows, outcome: Mask, noun: str) -> tuple[float, str]:
    """CDD = sum_i n_i * DD_i / n, DD_i = n_d,i(0)/n_i(0) - n_d,i(1)/n_i(1) in stratum i."""
    if outcome.all() or not outcome.any():
        raise _Undefined(f"undefined: every {noun} is {int(outcome[0])}, so facet d's share of "
                         f"{'rejections' if outcome[0] else 'acceptances'} is 0/0")
    if r.group is None:
        dd = _n(r.d & ~outcome) / _n(~outcome) - _n(r.d & outcome) / _n(outcome)
        return dd, "no group column given: this is DD over the whole set, not conditioned on strata"
    parts = pd.DataFrame({"g": r.group, "d0": r.d & ~outcome, "n0": ~outcome, "d1": r.d & outcome, "n1": outcome})
    by = parts.groupby("g", dropna=False, sort=False)
    sums, sizes = by.sum(), by.size().to_numpy()
    # A stratum with no rejections (or no acceptances) counts that share as 0, as SageMaker's implementation does.
    rejected = np.divide(sums["d0"], sums["n0"], out=np.zeros(len(sums)), where=sums["n0"].to_numpy() > 0)
    accepted = np.divide(sums["d1"], sums["n1"], out=np.zeros(len(sums)), where=sums["n1"].to_numpy() > 0)
    cdd = float(np.sum(sizes * (rejected - accepted)) / sizes.sum())
    note = f"over {len(sums)} strata of '{r.group.name}'"
    one_sided = int(((sums["n0"] == 0) | (sums["n1"] == 0)).sum())
    if one_sided:
        note += f"; {one_sided} with a single {noun} value count the missing share as 0"
    if r.group.isna().any():
        note += f"; rows with a null '{r.group.name}' form a stratum of their own"
    return cdd, note


def _cdd_labels(r: _Rows) -> tuple[float, str]:
    """CDD on the labels: see _cdd."""
    return _cdd(r, r.y, "label")


def _dppl(r: _Rows) -> float:
    """DPPL = q'_a - q'_d, q' = n'(1)/n, the share of positive predictions in a facet."""
    qa, qd = _by_facet(r, r.yhat, np.ones_like(r.d), "rows")
    return qa - qd


def _di(r: _Rows) -> float:
    """DI = q'_d / q'_a."""
    qa, qd = _by_facet(r, r.yhat, np.ones_like(r.d), "rows")
    if qa == 0:
        raise _Undefined("undefined: facet a has no positive predictions (q'_a = 0)")
    return qd / qa


def _ad(r: _Rows) -> float:
    """AD = ACC_a - ACC_d, ACC = (TP + TN) / n."""
    acc_a, acc_d = _by_facet(r, r.y == r.yhat, np.ones_like(r.d), "rows")
    return acc_a - acc_d


def _rd(r: _Rows) -> float:
    """RD = TP_a/(TP_a + FN_a) - TP_d/(TP_d + FN_d), recall of a minus recall of d."""
    rec_a, rec_d = _by_facet(r, r.y & r.yhat, r.y, "positive labels (TP + FN = 0)")
    return rec_a - rec_d


def _dar(r: _Rows) -> float:
    """DAR = TP_a/(TP_a + FP_a) - TP_d/(TP_d + FP_d), precision of a minus precision of d."""
    prec_a, prec_d = _by_facet(r, r.y & r.yhat, r.yhat, "positive predictions (TP + FP = 0)")
    return prec_a - prec_d


def _drr(r: _Rows) -> float:
    """DRR = TN_d/(TN_d + FN_d) - TN_a/(TN_a + FN_a), d minus a: TN over predicted negatives."""
    rr_a, rr_d = _by_facet(r, ~r.y & ~r.yhat, ~r.yhat, "negative predictions (TN + FN = 0)")
    return rr_d - rr_a


def _te(r: _Rows) -> float:
    """TE = FN_d/FP_d - FN_a/FP_a, d minus a."""
    tau_a, tau_d = _by_facet(r, r.y & ~r.yhat, ~r.y & r.yhat, "false positives (FP = 0)")
    return tau_d - tau_a


def _cddpl(r: _Rows) -> tuple[float, str]:
    """CDDPL: CDD on the predicted labels, see _cdd."""
    return _cdd(r, r.yhat, "predicted label")


# (name, description, metric), in the order the results list them
PRE_TRAINING: list[tuple[str, str, Metric]] = [
    ("CI", "class imbalance", _ci),
    ("DPL", "difference in proportions of labels", _dpl),
    ("KL", "Kullback-Leibler divergence of the label distributions", _kl),
    ("JS", "Jensen-Shannon divergence of the label distributions", _js),
    ("LP", "L2 norm of the difference of the label distributions", _lp),
    ("TVD", "total variation distance of the label distributions", _tvd),
    ("KS", "Kolmogorov-Smirnov distance of the label distributions", _ks),
    ("CDD", "conditional demographic disparity in labels", _cdd_labels),
]

POST_TRAINING: list[tuple[str, str, Metric]] = [
    ("DPPL", "difference in positive proportions in predicted labels", _dppl),
    ("DI", "disparate impact", _di),
    ("AD", "accuracy difference", _ad),
    ("RD", "recall difference", _rd),
    ("DAR", "difference in acceptance rates (precision)", _dar),
    ("DRR", "difference in rejection rates", _drr),
    ("TE", "treatment equality", _te),
    ("CDDPL", "conditional demographic disparity in predicted labels", _cddpl),
]


def bias_by_facet(frame: pd.DataFrame, label: str, protected: list[str], min_rows: int) -> list[dict[str, Any]]:
    """Post-training bias metrics for every value of every protected column (that value as facet d)."""
    groups = []
    for column in protected:
        counts = frame[column].dropna().value_counts()
        for value, n in counts.items():
            if len(counts) < 2:
                break
            entry: dict[str, Any] = {"facet": f"{column}={value}", "rows": int(n)}
            if n < min_rows:
                entry["note"] = f"fewer than {min_rows} rows: reported, not gated"
            metrics = post_training(frame, label, PREDICTED, Facet(column, (value,)))
            entry["metrics"] = {m.name: m.value for m in metrics}
            groups.append(entry)
    return groups
