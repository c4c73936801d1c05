"""Each strategy as a Ray Tune searcher and scheduler: what SageMaker calls its tuning strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.errors import InputError

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import SearchAlgorithm, Searcher

STRATEGIES = {
    "hyperband": "random configurations, HyperBandScheduler: brackets of successive halving (keep a third, "
                 "pause the rest); with fewer trials than a full band the later brackets are only partly filled",
    "asha": "random configurations, ASHAScheduler: asynchronous successive halving, stops poor trials early",
    "random": "random configurations, each trained to the end",
    "bayesian": "Optuna's TPE sampler learns from finished trials, each trained to the end",
}


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise InputError(f"unknown tuning strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    return name


def searcher_and_scheduler(strategy: str, max_iterations: int, seed: int, max_concurrent: int,
                           points: list[dict[str, Any]], evaluated: list[float] | None) -> tuple[Any, Any]:
    """``points`` are run first; with ``evaluated`` (Bayesian only) they count as done with those scores.

    The metric and its mode are given to Ray once, in TuneConfig, which passes them on to both.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from kiln.tuning.hyperband import SettlingHyperBand

    search: Searcher | SearchAlgorithm
    scheduler: TrialScheduler
    if strategy == "bayesian":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed),
                              points_to_evaluate=points or None, evaluated_rewards=evaluated or None)
        return ConcurrencyLimiter(search, max_concurrent=max_concurrent), FIFOScheduler()  # type: ignore[no-untyped-call]  # Ray leaves FIFOScheduler.__init__ unannotated
    search = BasicVariantGenerator(points_to_evaluate=points or None, random_state=seed)
    if strategy == "hyperband":
        scheduler = SettlingHyperBand(max_t=max_iterations, reduction_factor=3)
    elif strategy == "asha":
        scheduler = ASHAScheduler(max_t=max_iterations, grace_period=1, reduction_factor=3)
    else:
        scheduler = FIFOScheduler()  # type: ignore[no-untyped-call]  # Ray leaves FIFOScheduler.__init__ unannotated
    return search, scheduler
