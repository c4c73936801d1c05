"""Bias metrics: hand-worked values on small frames, agreement with Fairlearn and SciPy, and bad input named."""

from __future__ import annotations

from functools import partial
from math import log, sqrt

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    selection_rate,
)
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_score,
    recall_score,
)

from kiln.clarify.bias import (
    BiasMetric,
    Facet,
    parse_facet,
    post_training,
    pre_training,
)
from kiln.errors import InputError

FEMALE = Facet("gender", ("female",))


def by_name(metrics: list[BiasMetric]) -> dict[str, BiasMetric]:
    return {m.name: m for m in metrics}


def values(metrics: list[BiasMetric]) -> dict[str, float | None]:
    return {m.name: m.value for m in metrics}


def confusion(gender: str, tp: int, fp: int, fn: int, tn: int) -> list[dict[str, object]]:
    """Rows of one facet with the given confusion matrix (label y, prediction p)."""
    cells = [(1, 1, tp), (0, 1, fp), (1, 0, fn), (0, 0, tn)]
    return [{"gender": gender, "y": y, "p": p} for y, p, count in cells for _ in range(count)]


# facet d (female): 4 rows, labels 1,0,0,0 -> n_d = 4, q_d = 1/4, P_d = [3/4, 1/4]
# facet a (male):   6 rows, labels 1,1,1,0,0,1 -> n_a = 6, q_a = 4/6 = 2/3, P_a = [1/3, 2/3]
PRE = pd.DataFrame({
    "gender": ["female"] * 4 + ["male"] * 6,
    "y": [1, 0, 0, 0, 1, 1, 1, 0, 0, 1],
})


def test_pre_training_by_hand() -> None:
    got = by_name(pre_training(PRE, "y", FEMALE))
    assert list(got) == ["CI", "DPL", "KL", "JS", "LP", "TVD", "KS", "CDD"]
    # CI = (6 - 4) / (6 + 4) = 0.2
    assert got["CI"].value == pytest.approx(0.2)
    # DPL = 2/3 - 1/4 = 5/12 = 0.41667
    assert got["DPL"].value == pytest.approx(5 / 12)
    # KL = 1/3 ln((1/3)/(3/4)) + 2/3 ln((2/3)/(1/4)) = -0.27031 + 0.65389 = 0.38358
    assert got["KL"].value == pytest.approx(0.383576, abs=1e-6)
    # JS: P = [13/24, 11/24]; KL(P_a||P) = 1/3 ln(8/13) + 2/3 ln(16/11) = 0.087959,
    #     KL(P_d||P) = 3/4 ln(18/13) + 1/4 ln(6/11) = 0.092532; JS = half their sum = 0.090246
    assert got["JS"].value == pytest.approx(0.090246, abs=1e-6)
    # LP = sqrt((1/3 - 3/4)^2 + (2/3 - 1/4)^2) = sqrt(2) * 5/12 = 0.58926
    assert got["LP"].value == pytest.approx(sqrt(2) * 5 / 12)
    # TVD = (5/12 + 5/12) / 2 = 5/12; KS = max(5/12, 5/12) = 5/12
    assert got["TVD"].value == pytest.approx(5 / 12)
    assert got["KS"].value == pytest.approx(5 / 12)
    # no group: DD = n_d(0)/n(0) - n_d(1)/n(1) = 3/5 - 1/5 = 0.4, and the note says it is unconditioned
    assert got["CDD"].value == pytest.approx(0.4)
    assert "no group column" in got["CDD"].note
    assert all(m.note == "" for m in got.values() if m.name != "CDD")


def test_facet_d_with_more_positives_gives_negative_signs() -> None:
    # Swapping the facets: d is now male (q_d = 2/3), a is female (q_a = 1/4): CI = (4 - 6)/10, DPL = -5/12.
    got = values(pre_training(PRE, "y", Facet("gender", ("male",))))
    assert got["CI"] == pytest.approx(-0.2)
    assert got["DPL"] == pytest.approx(-5 / 12)
    # DD = n_d(0)/n(0) - n_d(1)/n(1) = 2/5 - 4/5 = -0.4
    assert got["CDD"] == pytest.approx(-0.4)


def test_cdd_over_strata_by_hand() -> None:
    frame = pd.DataFrame({
        "gender": ["female", "female", "male", "male"] + ["female"] * 3 + ["male"] * 3 + ["female", "male"],
        "dept": ["A"] * 4 + ["B"] * 6 + ["C"] * 2,
        "y": [1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1],
    })
    got = by_name(pre_training(frame, "y", FEMALE, group="dept"))["CDD"]
    # A (n=4): rejections 1, all female -> 1/1; acceptances 3, 1 female -> 1/3; DD_A = 2/3
    # B (n=6): rejections 3, 1 female -> 1/3; acceptances 3, 2 female -> 2/3; DD_B = -1/3
    # C (n=2): no rejections -> that share counts 0 (SageMaker); acceptances 2, 1 female -> 1/2; DD_C = -1/2
    # CDD = (4 * 2/3 + 6 * -1/3 + 2 * -1/2) / 12 = (8/3 - 2 - 1) / 12 = -1/36
    assert got.value == pytest.approx(-1 / 36)
    assert "3 strata of 'dept'" in got.note and "1 with a single label value" in got.note
    # a null stratum is a stratum of its own: the same value, and the note says so
    nulls = by_name(pre_training(frame.assign(dept=frame["dept"].replace({"C": None})), "y", FEMALE, group="dept"))
    assert nulls["CDD"].value == pytest.approx(-1 / 36)
    assert "null 'dept' form a stratum of their own" in nulls["CDD"].note


def test_cdd_is_zero_when_dpl_is_zero() -> None:
    # SageMaker: unconditioned, CDD is zero if and only if DPL is zero. Both facets have q = 1/2 here.
    frame = pd.DataFrame({"gender": ["female"] * 4 + ["male"] * 8, "y": [1, 0] * 6})
    got = values(pre_training(frame, "y", FEMALE))
    assert got["DPL"] == pytest.approx(0.0)
    assert got["CDD"] == pytest.approx(0.0)


# facet a (male):   TP=3, FP=2, FN=2, TN=3 (n=10); facet d (female): TP=1, FP=1, FN=2, TN=2 (n=6)
POST = pd.DataFrame(confusion("male", tp=3, fp=2, fn=2, tn=3) + confusion("female", tp=1, fp=1, fn=2, tn=2))


def test_post_training_by_hand() -> None:
    got = by_name(post_training(POST, "y", "p", FEMALE))
    assert list(got) == ["DPPL", "DI", "AD", "RD", "DAR", "DRR", "TE", "CDDPL"]
    # q'_a = (3 + 2)/10 = 1/2, q'_d = (1 + 1)/6 = 1/3: DPPL = 1/2 - 1/3 = 1/6, DI = (1/3)/(1/2) = 2/3
    assert got["DPPL"].value == pytest.approx(1 / 6)
    assert got["DI"].value == pytest.approx(2 / 3)
    # ACC_a = (3 + 3)/10 = 3/5, ACC_d = (1 + 2)/6 = 1/2: AD = 1/10
    assert got["AD"].value == pytest.approx(0.1)
    # recall_a = 3/(3 + 2) = 3/5, recall_d = 1/(1 + 2) = 1/3: RD = 4/15
    assert got["RD"].value == pytest.approx(4 / 15)
    # precision_a = 3/(3 + 2) = 3/5, precision_d = 1/(1 + 1) = 1/2: DAR = 1/10
    assert got["DAR"].value == pytest.approx(0.1)
    # DRR = TN_d/(TN_d + FN_d) - TN_a/(TN_a + FN_a) = 2/4 - 3/5 = -1/10
    assert got["DRR"].value == pytest.approx(-0.1)
    # TE = FN_d/FP_d - FN_a/FP_a = 2/1 - 2/2 = 1
    assert got["TE"].value == pytest.approx(1.0)
    # predicted: n'(0) = 5 + 4 = 9 with 4 female, n'(1) = 5 + 2 = 7 with 2 female: DD = 4/9 - 2/7 = 10/63
    assert got["CDDPL"].value == pytest.approx(10 / 63)
    assert "no group column" in got["CDDPL"].note


def test_undefined_metrics_are_none_with_a_note() -> None:
    # facet d (female): every prediction 0 and every label 0 -> no positive predictions, no false positives.
    frame = pd.DataFrame(confusion("male", tp=2, fp=1, fn=1, tn=2) + confusion("female", tp=0, fp=0, fn=0, tn=3))
    post = by_name(post_training(frame, "y", "p", FEMALE))
    assert post["DAR"].value is None and "facet d has no positive predictions" in post["DAR"].note
    assert post["TE"].value is None and "facet d has no false positives" in post["TE"].note
    assert post["RD"].value is None and "facet d has no positive labels" in post["RD"].note
    # DI = q'_d / q'_a = 0 / (3/6) = 0 is defined; DPPL = 1/2 - 0
    assert post["DI"].value == pytest.approx(0.0)
    assert post["DPPL"].value == pytest.approx(0.5)
    # KL(P_a || P_d): P_d(1) = 0 while P_a(1) = 1/2 -> infinite; JS stays finite
    pre = by_name(pre_training(frame, "y", FEMALE))
    assert pre["KL"].value is None and "infinite" in pre["KL"].note
    # P_a = [1/2, 1/2], P_d = [1, 0], P = [3/4, 1/4]:
    # JS = (1/2 ln(2/3) + 1/2 ln 2 + 1 ln(4/3)) / 2 = 0.21576
    assert pre["JS"].value == pytest.approx((0.5 * log(2 / 3) + 0.5 * log(2) + log(4 / 3)) / 2)


def test_di_undefined_when_facet_a_has_no_positive_predictions() -> None:
    frame = pd.DataFrame(confusion("male", tp=0, fp=0, fn=2, tn=2) + confusion("female", tp=1, fp=1, fn=0, tn=1))
    got = by_name(post_training(frame, "y", "p", FEMALE))
    assert got["DI"].value is None and "facet a has no positive predictions" in got["DI"].note
    # FP_a = 0 while FP_d = 1: TE is undefined and the note names facet a only
    assert got["TE"].value is None and got["TE"].note.endswith("facet a has no false positives (FP = 0)")


def test_cdd_undefined_when_every_label_is_the_same() -> None:
    frame = pd.DataFrame({"gender": ["female", "male", "male"], "y": [1, 1, 1]})
    got = by_name(pre_training(frame, "y", FEMALE))["CDD"]
    assert got.value is None and "every label is 1" in got.note


@pytest.fixture(scope="module")
def random_frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 4000
    race = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    is_d = race == "b"
    y = (rng.random(n) < np.where(is_d, 0.35, 0.55)).astype(int)
    # predictions right 80% of the time, with a little extra rejection of facet d
    p = np.where(rng.random(n) < 0.8, y, 1 - y)
    p = np.where(is_d & (rng.random(n) < 0.1), 0, p)
    return pd.DataFrame({"race": race, "y": y, "p": p, "region": rng.choice(["n", "s", "e", "w"], size=n)})


def test_post_training_agrees_with_fairlearn(random_frame: pd.DataFrame) -> None:
    f = random_frame
    is_d = f["race"] == "b"
    got = values(post_training(f, "y", "p", Facet("race", ("b",))))
    by_group = MetricFrame(
        metrics={"sel": selection_rate, "acc": accuracy_score, "rec": recall_score, "prec": precision_score,
                 "npv": partial(precision_score, pos_label=0)},
        y_true=f["y"], y_pred=f["p"], sensitive_features=is_d,
    ).by_group
    a, d = by_group.loc[False], by_group.loc[True]
    assert got["DPPL"] == pytest.approx(a["sel"] - d["sel"])
    assert abs(got["DPPL"]) == pytest.approx(demographic_parity_difference(f["y"], f["p"], sensitive_features=is_d))
    assert got["DI"] == pytest.approx(d["sel"] / a["sel"])
    assert min(got["DI"], 1 / got["DI"]) == pytest.approx(
        demographic_parity_ratio(f["y"], f["p"], sensitive_features=is_d))
    assert got["AD"] == pytest.approx(a["acc"] - d["acc"])
    assert got["RD"] == pytest.approx(a["rec"] - d["rec"])
    assert got["DAR"] == pytest.approx(a["prec"] - d["prec"])
    assert got["DRR"] == pytest.approx(d["npv"] - a["npv"])
    # the facets really differ, so a sign error could not pass unnoticed
    assert abs(got["DPPL"]) > 0.05 and abs(got["AD"]) > 0.001


def test_te_agrees_with_sklearn_confusion_matrices(random_frame: pd.DataFrame) -> None:
    f = random_frame
    ratios = {}
    for side, part in f.groupby(f["race"] == "b"):
        _, fp, fn, _ = confusion_matrix(part["y"], part["p"], labels=[0, 1]).ravel()
        ratios[side] = fn / fp
    got = values(post_training(f, "y", "p", Facet("race", ("b",))))
    assert got["TE"] == pytest.approx(ratios[True] - ratios[False])


def test_pre_training_agrees_with_fairlearn_and_scipy(random_frame: pd.DataFrame) -> None:
    f = random_frame
    is_d = f["race"] == "b"
    got = values(pre_training(f, "y", Facet("race", ("b",))))
    rates = MetricFrame(metrics=selection_rate, y_true=f["y"], y_pred=f["y"], sensitive_features=is_d).by_group
    assert got["DPL"] == pytest.approx(rates[False] - rates[True])
    assert got["CI"] == pytest.approx(((~is_d).sum() - is_d.sum()) / len(f))
    pa = np.array([1 - rates[False], rates[False]])
    pd_ = np.array([1 - rates[True], rates[True]])
    assert got["KL"] == pytest.approx(entropy(pa, pd_))
    assert got["JS"] == pytest.approx(jensenshannon(pa, pd_) ** 2)
    assert got["LP"] == pytest.approx(np.linalg.norm(pa - pd_))
    assert got["TVD"] == pytest.approx(abs(got["DPL"]))
    assert got["KS"] == pytest.approx(abs(got["DPL"]))


def test_cdd_with_one_stratum_equals_dd(random_frame: pd.DataFrame) -> None:
    f = random_frame.assign(one="x")
    facet = Facet("race", ("b",))
    whole = values(pre_training(f, "y", facet))["CDD"]
    assert values(pre_training(f, "y", facet, group="one"))["CDD"] == pytest.approx(whole)
    assert whole is not None and whole > 0.05  # facet d holds more of the rejections than of the acceptances
    strata = by_name(post_training(f, "y", "p", facet, group="region"))["CDDPL"]
    assert strata.value is not None and "4 strata of 'region'" in strata.note


def test_facet_values_match_integer_float_and_bool_columns() -> None:
    frame = pd.DataFrame({"senior": [1, 0, 0, 1, 0], "score": [1.0, 0.0, 0.0, 0.0, 0.0],
                          "flag": [True, False, False, False, False], "y": [1, 0, 1, 0, 1]})
    # "1" matches the integers 1: n_d = 2, n_a = 3 -> CI = 1/5
    assert values(pre_training(frame, "y", parse_facet("senior=1")))["CI"] == pytest.approx(0.2)
    # the integer itself matches too
    assert values(pre_training(frame, "y", Facet("senior", (1,))))["CI"] == pytest.approx(0.2)
    # text matches floats and bools: n_d = 1, n_a = 4 -> CI = 3/5
    assert values(pre_training(frame, "y", parse_facet("score=1")))["CI"] == pytest.approx(0.6)
    assert values(pre_training(frame, "y", parse_facet("flag=true")))["CI"] == pytest.approx(0.6)
    # "0" matches False: n_d = 4, n_a = 1 -> CI = -3/5
    assert values(pre_training(frame, "y", parse_facet("flag=0")))["CI"] == pytest.approx(-0.6)


def test_several_facet_values_and_null_facet_rows() -> None:
    frame = pd.DataFrame({"contract": ["month-to-month", "one-year", "two-year", "two-year", None, None],
                          "y": [0, 1, 1, 1, 0, 0]})
    got = by_name(pre_training(frame, "y", parse_facet("contract=month-to-month, one-year")))
    # the two null rows are left out: n_d = 2, n_a = 2 -> CI = 0; q_a = 1, q_d = 1/2 -> DPL = 1/2
    assert got["CI"].value == pytest.approx(0.0)
    assert got["CI"].note == "2 rows with a null 'contract' left out"
    assert got["DPL"].value == pytest.approx(0.5)


def test_parse_facet() -> None:
    assert parse_facet("gender=female") == Facet("gender", ("female",))
    assert parse_facet(" contract = month-to-month,one-year ") == Facet("contract", ("month-to-month", "one-year"))
    for bad in ("gender", "=female", "gender=", "gender=,"):
        with pytest.raises(InputError, match=f"facet '{bad}': expected COLUMN=VALUE"):
            parse_facet(bad)


def test_missing_column_is_named_with_the_columns_present() -> None:
    with pytest.raises(InputError, match=r"no column 'gendr' in the frame; its columns: gender, y"):
        pre_training(PRE, "y", Facet("gendr", ("female",)))
    with pytest.raises(InputError, match=r"no column 'pred'"):
        post_training(POST, "y", "pred", FEMALE)
    with pytest.raises(InputError, match=r"no column 'dept'"):
        pre_training(PRE, "y", FEMALE, group="dept")


def test_non_binary_label_or_prediction_is_named_with_its_values() -> None:
    with pytest.raises(InputError, match=r"label column 'y' is not binary 0/1: it holds 2"):
        pre_training(PRE.assign(y=[0, 1, 2, 0, 1, 0, 1, 0, 1, 1]), "y", FEMALE)
    with pytest.raises(InputError, match=r"predicted column 'p' is not binary 0/1: it holds 'yes', 'no'"):
        post_training(POST.assign(p=["yes", "no"] * 8), "y", "p", FEMALE)
    # the text "1" is not the number 1
    with pytest.raises(InputError, match=r"label column 'y' is not binary 0/1: it holds '1'"):
        pre_training(PRE.assign(y=PRE["y"].replace({1: "1"})), "y", FEMALE)
    # bools and 0.0/1.0 floats are binary
    assert values(pre_training(PRE.assign(y=PRE["y"].astype(bool)), "y", FEMALE))["DPL"] == pytest.approx(5 / 12)
    assert values(pre_training(PRE.assign(y=PRE["y"].astype(float)), "y", FEMALE))["DPL"] == pytest.approx(5 / 12)


def test_nulls_in_label_or_prediction_are_counted() -> None:
    with pytest.raises(InputError, match=r"label column 'y' has 2 null values"):
        pre_training(PRE.assign(y=[1, None, 0, 0, 1, 1, None, 0, 0, 1]), "y", FEMALE)
    with pytest.raises(InputError, match=r"predicted column 'p' has 1 null value\n"):
        post_training(POST.assign(p=[None] + [1] * 15), "y", "p", FEMALE)


def test_facet_matching_no_rows_or_every_row() -> None:
    with pytest.raises(InputError, match=r"facet gender=other: 'other' matches no rows") as info:
        pre_training(PRE, "y", parse_facet("gender=other"))
    assert "values of 'gender': female, male" in str(info.value)
    # one value that matches nothing is named even when another value matches
    with pytest.raises(InputError, match=r"facet gender=female,femle: 'femle' matches no rows"):
        pre_training(PRE, "y", parse_facet("gender=female,femle"))
    with pytest.raises(InputError, match=r"'gender': none, only nulls"):
        pre_training(PRE.assign(gender=None), "y", FEMALE)
    with pytest.raises(InputError, match=r"facet gender=female,male matches every row .*there is no facet a"):
        pre_training(PRE, "y", parse_facet("gender=female,male"))


def test_empty_frame() -> None:
    with pytest.raises(InputError, match="the frame has no rows"):
        pre_training(PRE.iloc[:0], "y", FEMALE)
