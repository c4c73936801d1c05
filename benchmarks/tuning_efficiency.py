"""Tuning efficiency on the churn data: Hyperband and ASHA against random search, same trials and iterations.

Run: .venv/bin/python benchmarks/tuning_efficiency.py [--customers N] [--days D] [--family F] [--trials N]
     [--max-iterations M] [--seed S] [--json]
Reference: random search with the same number of trials, the same maximum iterations per trial and the same seed,
in the same run. Compute is counted in trial-iterations (one iteration of one trial). The headline figure is the
compute Hyperband used until a trial reached 99% of random search's best validation AUC, against random search's
total compute (random search runs every trial to the end to know its best); goal: at most one third.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from _report import Figure, parser, run_measured

END = date(2026, 10, 1)  # a fixed window end keeps the data the same from day to day
DATA_SEED = 7
TARGET_SHARE = 0.99
GOAL = "ratio <= 0.333"
STRATEGIES = ("hyperband", "asha", "random")

_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[tuning_efficiency {time.perf_counter() - _T0:5.1f}s] {message}", file=sys.stderr, flush=True)


def make_training_set(tmp: Path, customers: int, days: int) -> tuple[Any, Path, int]:
    """(workspace, training set path, its rows) from freshly generated and ingested churn data."""
    from kiln.data.dataset import staged_dataset, write_dataset
    from kiln.data.generate import GenerateOptions, generate_churn
    from kiln.data.schema import CHURN_SCHEMA
    from kiln.features.ingest import ingest
    from kiln.features.training import build_training_set
    from kiln.workspace import init_workspace

    dataset = tmp / "churn"
    log(f"generating churn data: {customers} customers, {days} days, seed {DATA_SEED}, end {END}")
    with staged_dataset(dataset, overwrite=False) as stage:
        frames, stats = generate_churn(GenerateOptions(customers=customers, days=days, seed=DATA_SEED, end=END))
        write_dataset(stage, "churn", CHURN_SCHEMA, frames, {"seed": DATA_SEED}, stats)
    root = tmp / "ws"
    root.mkdir()
    (root / "kiln.yaml").write_text("profile: local\n")
    ws, _ = init_workspace(root)
    ingest(ws, dataset, progress=lambda m: log(f"ingest: {m}"))
    out = ws.folder("data") / "churn_train.parquet"
    summary = build_training_set(ws, dataset, "churn_v1", out)
    log(f"training set: {summary.rows} rows, label rate {summary.label_rate}")
    return ws, out, summary.rows


def compute_to_target(trials: list[dict[str, Any]], target: float) -> tuple[int | None, str]:
    """Trial-iterations of the trials finished (in order of finish time) when the first to reach ``target`` did.

    Iterations of trials still running or paused at that moment are not counted. Ray's timestamps are whole
    seconds, so trials finishing in the same second as the first one to reach the target are all counted (the
    conservative reading of a tie). Returns (that count, how it was reached).
    """
    done = [t for t in trials if t["source"] == "run" and t["finished_s"] is not None]
    reached = sorted((t for t in done if t["valid_auc"] is not None and t["valid_auc"] >= target),
                     key=lambda t: t["finished_s"])
    if not reached:
        return None, "not reached"
    first = reached[0]
    before = [t for t in done if t["finished_s"] <= first["finished_s"]]
    return sum(t["iterations"] for t in before), (
        f"trial {first['trial_id']} (AUC {first['valid_auc']:.4f}) finished at {first['finished_s']} s, "
        f"{len(before)} trials finished by then")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=8000)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--family", default="lgbm")
    p.add_argument("--trials", type=int, default=18)
    p.add_argument("--max-iterations", type=int, default=27)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    run_measured("Tuning efficiency (trial-iterations, validation AUC)", measure, args)


def measure(args: Any) -> tuple[list[Figure], dict[str, object]]:
    import ray

    from kiln.tuning.job import TuneSpec, run_job

    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    errored: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
            ws, path, rows = make_training_set(Path(tmp), args.customers, args.days)
            for strategy in STRATEGIES:
                spec = TuneSpec(family=args.family, strategy=strategy, trials=args.trials, max_concurrent=2,
                                seed=args.seed, training_set=str(path), max_iterations=args.max_iterations)
                log(f"{strategy}: {args.trials} trials, at most {args.max_iterations} iterations each")
                t0 = time.perf_counter()
                results[strategy] = run_job(ws, spec, progress=lambda m, s=strategy: log(f"{s}: {m}"))
                seconds[strategy] = time.perf_counter() - t0
                # A trial that failed after some iterations keeps a record like any other (kiln marks only those
                # that never reported); Ray's error file in the trial's folder is the only trace of it.
                errored[strategy] = len(list(Path(results[strategy].folder).glob("ray/*/error.txt")))
                log(f"{strategy}: {results[strategy].trial_iterations} trial-iterations, best AUC "
                    f"{results[strategy].best['valid_auc']:.4f}, {seconds[strategy]:.1f} s")
    finally:
        ray.shutdown()

    used = {s: sum(t["iterations"] for t in r.trials if t["source"] == "run") for s, r in results.items()}
    best = {s: r.best["valid_auc"] for s, r in results.items()}
    target = TARGET_SHARE * best["random"]
    to_target: dict[str, int | None] = {}
    for s, r in results.items():
        to_target[s], how = compute_to_target(r.trials, target)
        log(f"{s}: target {target:.4f}: {how}")
    random_ref = "random search, same trials and max iterations"
    notes: dict[str, object] = {
        "training set": f"{rows} rows (split 70/15/15 by label time), family {args.family}",
        "budget": f"{args.trials} trials, at most {args.max_iterations} iterations each, 2 at a time, "
                  f"seed {args.seed}",
        "target AUC": f"{target:.4f} = {TARGET_SHARE:.0%} of random search's best {best['random']:.4f}",
    }
    figures: list[Figure] = []
    for s in ("hyperband", "asha"):
        figures.append(Figure(f"{s} trial-iterations used", used[s], "it", used["random"], random_ref))
        figures.append(Figure(f"{s} best validation AUC", best[s], "", best["random"], random_ref))
        reached = to_target[s] is not None
        label = "it. to target" if reached else "it. (target NOT reached)"
        figures.append(Figure(f"{s} {label}", to_target[s] if reached else used[s], "it",
                              used["random"], "random search's total trial-iterations",
                              GOAL if s == "hyperband" else ""))
        if reached and to_target["random"]:
            notes[f"{s} to target vs random's own compute to target"] = (
                f"{to_target[s]} / {to_target['random']} = {to_target[s] / to_target['random']:.3f}")
        elif not reached:
            notes[f"{s} to target"] = (f"no {s} trial reached {target:.4f} (best {best[s]:.4f}); "
                                       f"its figure is all {used[s]} trial-iterations it used")
        stopped = sum(t["source"] == "run" and t["stopped_early"] for t in results[s].trials)
        notes[f"{s} trials stopped early"] = f"{stopped} of {args.trials}"
    for s in STRATEGIES:
        if errored[s]:
            notes[f"WARNING {s}"] = f"{errored[s]} trial(s) failed part way; their figures count what they ran"
    notes["random compute to target"] = f"{to_target['random']} of {used['random']} trial-iterations"
    # How hard the target is: when most of random's trials reach it, any strategy reaches it with its first ones.
    aucs = sorted(t["valid_auc"] for t in results["random"].trials if t["valid_auc"] is not None)
    notes["random's trials"] = (f"{sum(a >= target for a in aucs)} of {len(aucs)} reach the target; best AUC "
                                f"min {aucs[0]:.4f}, median {aucs[len(aucs) // 2]:.4f}, max {aucs[-1]:.4f} "
                                "(all three strategies draw the same configurations: same seed)")
    for s in ("hyperband", "asha"):
        figures.append(Figure(f"{s} job seconds", seconds[s], "s", seconds["random"],
                              "random search's job seconds"))
    notes["job seconds"] = "tuning plus refit and MLflow logging of the best model: " + ", ".join(
        f"{s} {seconds[s]:.1f}" for s in STRATEGIES)
    return figures, notes


if __name__ == "__main__":
    main()
