"""Explanations of a registered model: SHAP attributions per prediction and globally, and partial dependence.

The global ranking is logged with the model version: it is the baseline attribution drift is measured against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln import tracking
from kiln.errors import InputError
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.training.data import load_training_set
from kiln.training.split import split
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from kiln.training.predictor import Predictor

BASELINE_ARTIFACT = "explanations/global_importance.json"
BACKGROUND_ROWS = 100
PDP_FEATURES = 6
PDP_POINTS = 12


@dataclass
class Explanation:
    model: str
    explainer: str
    rows: int
    base_value: float
    global_importance: list[dict[str, Any]]  # [{"feature", "mean_abs_shap", "rank"}], most important first
    attributions: str  # parquet: one row per explained row, one column per feature
    report: str  # HTML
    plots: list[str]


def load_predictor(model_uri: str) -> "Predictor":
    """The Kiln model behind an MLflow pyfunc URI (encoder + LightGBM booster or ONNX session)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    inner = model.unwrap_python_model()
    if not hasattr(inner, "predictor"):
        raise InputError(f"{model_uri} is not a Kiln model; explanations need one made by `kiln train` or `kiln tune`")
    predictor: Predictor = inner.predictor
    return predictor


def shap_values(predictor: "Predictor", frame: "pd.DataFrame", seed: int) -> tuple["np.ndarray", float, str]:
    """(SHAP values per input feature [rows, features], base value, explainer) on the scale of the model's answer
    (the positive class's probability, or the predicted value).

    Attributions of a feature's one-hot columns are summed back onto the feature (SHAP values are additive).
    """
    import numpy as np
    import shap

    x = predictor.encoder.transform(frame)
    rng = np.random.default_rng(seed)
    background = x[rng.choice(len(x), size=min(BACKGROUND_ROWS, len(x)), replace=False)]
    if predictor.task.kind == "multiclass":
        # every class's probability is explained; each row keeps the attributions toward its predicted class
        explainer = shap.PermutationExplainer(predictor.output_matrix, shap.maskers.Independent(background), seed=seed)
        result = explainer(x, silent=True)
        predicted = predictor.output_matrix(x).argmax(axis=1)
        rows = np.arange(len(x))
        values = np.asarray(result.values)[rows, :, predicted]
        base, name = float(np.asarray(result.base_values)[rows, predicted].mean()), "PermutationExplainer"
    elif predictor.booster is None:  # a network, or your own code's predict(): explained by its answers alone
        explainer = shap.PermutationExplainer(predictor.output_matrix, shap.maskers.Independent(background),
                                              seed=seed)
        result = explainer(x, silent=True)
        values, base, name = result.values, float(np.mean(result.base_values)), "PermutationExplainer"
    else:
        output = "probability" if predictor.task.kind == "binary" else "raw"  # raw: a regression tree's value
        explainer = shap.TreeExplainer(predictor.booster, data=background, model_output=output,
                                       feature_perturbation="interventional")
        values, base, name = explainer.shap_values(x), float(explainer.expected_value), "TreeExplainer"
    values = np.asarray(values).reshape(len(x), -1)
    columns = predictor.encoder.output_names
    grouped = np.zeros((len(x), len(predictor.encoder.order)))
    for j, feature in enumerate(predictor.encoder.order):
        idx = [i for i, c in enumerate(columns) if c == feature or c.startswith(f"{feature}=")]
        grouped[:, j] = values[:, idx].sum(axis=1)
    return grouped, base, name


def partial_dependence(predictor: "Predictor", frame: "pd.DataFrame", feature: str,
                       meaning: str) -> tuple[list[str] | list[float], dict[str, list[float]]]:
    """The mean answer as ``feature`` is set to each grid value for every row: one curve (``meaning``), or, for a
    multiclass model, one per class (its mean probability).

    Computed here because scikit-learn's version needs a scikit-learn estimator, and a Kiln model is not one.
    """
    import numpy as np

    column = frame[feature]
    if feature in predictor.encoder.categories:
        grid = list(predictor.encoder.categories[feature])
    else:
        grid = sorted(set(np.nanquantile(column.astype(float), np.linspace(0.02, 0.98, PDP_POINTS)).tolist()))
    task = predictor.task
    names = [f"P({c})" for c in task.classes] if task.kind == "multiclass" else [meaning]
    curves: dict[str, list[float]] = {n: [] for n in names}
    for value in grid:
        changed = frame.copy()
        changed[feature] = value
        means = np.atleast_1d(np.asarray(predictor.output(changed)).mean(axis=0))
        for n, m in zip(names, means):
            curves[n].append(float(m))
    return grid, curves


def explain(ws: Workspace, model_ref: str, rows: int = 300, seed: int = 7,
            progress: Progress = no_progress) -> Explanation:
    """Explain a registered version on rows of its own training set; log the global ranking with the version."""
    import numpy as np
    import pandas as pd

    info = get_version(ws, model_ref)
    training_set = info.tags.get("kiln.training_set")
    if not training_set:
        raise InputError(f"{info.name} version {info.version} names no training set (tag kiln.training_set)")
    data = load_training_set(Path(training_set))
    holdout = split(data, int(info.tags.get("kiln.seed", seed))).test
    sample = holdout.sample(n=min(rows, len(holdout)), random_state=seed).reset_index(drop=True)
    predictor = load_predictor(f"models:/{info.name}/{info.version}")
    progress(f"SHAP values for {len(sample)} held-out rows of {info.name} version {info.version}")
    values, base, explainer = shap_values(predictor, sample[data.features], seed)
    features = predictor.encoder.order
    mean_abs = np.abs(values).mean(axis=0)
    order = np.argsort(-mean_abs)
    ranking = [{"feature": features[i], "mean_abs_shap": float(mean_abs[i]), "rank": r + 1}
               for r, i in enumerate(order)]
    out = ws.folder("reports") / "explain" / f"{info.name}-v{info.version}"
    out.mkdir(parents=True, exist_ok=True)
    attributions = pd.DataFrame(values, columns=features)
    if data.key:
        attributions.insert(0, data.key, sample[data.key].to_numpy())
    answers = predictor.predict(sample[data.features].reset_index(drop=True))
    for i, column in enumerate(c for c in ("prediction", "probability") if c in answers.columns):
        attributions.insert((1 if data.key else 0) + i, column, answers[column].to_numpy())
    attributions.to_parquet(out / "attributions.parquet", index=False)
    progress("partial dependence of the most important features")
    top = [features[i] for i in order[:PDP_FEATURES]]
    meaning = {"binary": f"probability of {data.label} = {predictor.task.positive}",
               "multiclass": "probability of the predicted class",
               "regression": f"predicted {data.label}"}[predictor.task.kind]
    pdp = {f: partial_dependence(predictor, sample[data.features], f, meaning) for f in top}
    plots = _plots(ranking, pdp, out, meaning)
    report = _html(info, explainer, len(sample), base, ranking, plots, out, meaning)
    baseline = {"model": f"{info.name}/{info.version}", "explainer": explainer, "rows": len(sample),
                "base_value": base, "ranking": ranking}
    c = tracking.client(ws)
    if info.run_id:
        c.log_dict(info.run_id, baseline, BASELINE_ARTIFACT)
        for path in (*plots, report):
            c.log_artifact(info.run_id, str(path), "explanations")
    c.set_model_version_tag(info.name, info.version, "kiln.shap_baseline", BASELINE_ARTIFACT)
    (out / "global_importance.json").write_text(json.dumps(baseline, indent=2) + "\n")
    return Explanation(model=f"{info.name}/{info.version}", explainer=explainer, rows=len(sample), base_value=base,
                       global_importance=ranking, attributions=str(out / "attributions.parquet"),
                       report=str(report), plots=[str(p) for p in plots])


def _plots(ranking: list[dict[str, Any]], pdp: dict[str, tuple[list[str] | list[float], dict[str, list[float]]]],
           out: Path, meaning: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ranking) + 1))
    names = [r["feature"] for r in ranking][::-1]
    ax.barh(names, [r["mean_abs_shap"] for r in ranking][::-1], color="tab:blue")
    ax.set_xlabel(f"mean |SHAP value| ({meaning})")
    fig.tight_layout()
    paths = [out / "global_importance.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    for feature, (grid, curves) in pdp.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        categorical = all(isinstance(g, str) for g in grid)
        if categorical and len(curves) == 1:
            ax.bar([str(g) for g in grid], next(iter(curves.values())), color="tab:blue")
        else:
            for name, means in curves.items():
                ax.plot([str(g) for g in grid] if categorical else grid, means, marker="o", label=name)
            if len(curves) > 1:
                ax.legend(fontsize=7)
        if categorical:
            ax.tick_params(axis="x", rotation=30)
        ax.set_xlabel(feature)
        ax.set_ylabel("mean probability" if len(curves) > 1 else f"mean {meaning}")
        ax.set_title(f"partial dependence: {feature}")
        fig.tight_layout()
        path = out / f"pdp_{feature}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _html(info: Any, explainer: str, rows: int, base: float, ranking: list[dict[str, Any]], plots: list[Path],
          out: Path, meaning: str) -> Path:

    table = "".join(f"<tr><td>{r['rank']}</td><td>{escape(r['feature'])}</td><td>{r['mean_abs_shap']:.4f}</td></tr>"
                    for r in ranking)
    images = "".join(f'<img src="{p.name}" alt="{escape(p.stem)}">' for p in plots)
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>Explanations: {escape(info.name)} "
            f"v{info.version}</title><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px}}"
            f"img{{max-width:48%;margin:4px}}</style></head><body><h1>{escape(info.name)} version {info.version}"
            f"</h1><p>{explainer} on {rows} held-out rows; base value (mean {meaning}) {base:.4f}.</p>"
            f"<h2>Global importance</h2><table><tr><th>rank</th><th>feature</th><th>mean |SHAP|</th></tr>{table}"
            f"</table><h2>Plots</h2>{images}</body></html>")
    path = out / "index.html"
    path.write_text(html)
    return path
