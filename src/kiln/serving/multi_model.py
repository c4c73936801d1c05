"""A multi-model server: one KServe model server process holding many registered versions, each loaded when it is
first asked for and unloaded least recently used once the loaded ones pass a memory budget.

A version is served under the name NAME-vVERSION (`churn-v3` is models:/churn/3; V2 paths and KServe's model names
take no '/'). KServe's own repository extension loads it (`POST /v2/repository/models/NAME-vVERSION/load`, what the
endpoint's front calls before the first request to it) and unloads it; this module's repository is the part KServe
leaves to the server: which names it may load, how, and which to unload when memory runs short. A version's memory
is what the process's resident size grew by while it loaded (at least MIN_MODEL_BYTES).

    python -m kiln.serving.multi_model --endpoint NAME --models churn,fraud --budget-mb 2048 --http-port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

import mlflow
import psutil
from kserve.model_repository import ModelRepository

from kiln.memory import release_freed
from kiln.registry.versions import APPROVAL, APPROVED, GATE, PENDING
from kiln.serving.runtimes import DEFAULT_RUNTIME, RUNTIMES, get_runtime, local_runtimes
from kiln.serving.server import prepare, serve
from kiln.serving.spec import model_uri

log = logging.getLogger("kiln.multi_model")
MIN_MODEL_BYTES = 1 << 20


class LazyRepository(ModelRepository):
    """The versions of the registered models ``allowed``, loaded on demand, within ``budget_bytes``."""

    def __init__(self, runtime: str, allowed: set[str], budget_bytes: int) -> None:
        super().__init__()
        self.runtime, self.allowed, self.budget = get_runtime(runtime), allowed, budget_bytes
        self.sizes: dict[str, int] = {}
        self.used: dict[str, float] = {}
        self.loads = self.unloads = 0
        self._loading: dict[str, asyncio.Task[bool]] = {}

    def get_model(self, name: str) -> Any:
        model = super().get_model(name)
        if model is not None:
            self.used[name] = time.monotonic()
        return model

    async def load(self, name: str) -> bool:
        """Load ``name`` (once, however many ask at the same time), then unload others over the budget."""
        if name in self.models:
            self.used[name] = time.monotonic()
            return True
        uri = model_uri(name)
        if uri is None or uri.removeprefix("models:/").split("/")[0] not in self.allowed:
            raise ValueError(f"model '{name}': this endpoint serves NAME-vVERSION of {', '.join(sorted(self.allowed))}")
        if name not in self._loading:
            self._loading[name] = asyncio.create_task(self._load(name, uri))
        try:
            return await asyncio.shield(self._loading[name])
        finally:
            self._loading.pop(name, None)

    async def _load(self, name: str, uri: str) -> bool:
        await asyncio.to_thread(_check_cleared, uri)
        before = psutil.Process().memory_info().rss
        model = self.runtime.model_type()(name, uri)
        await asyncio.to_thread(model.load)
        self.sizes[name] = max(psutil.Process().memory_info().rss - before, MIN_MODEL_BYTES)
        self.update(model)
        self.used[name] = time.monotonic()
        self.loads += 1
        log.info("loaded %s (%.1f MB)", name, self.sizes[name] / 2**20)
        self._fit(name)
        return True

    def _fit(self, keep: str) -> None:
        """Unload the least recently used versions until the loaded ones fit the budget (never ``keep``)."""
        freed = False
        while sum(self.sizes.values()) > self.budget and len(self.sizes) > 1:
            victim = min((n for n in self.sizes if n != keep), key=lambda n: self.used.get(n, 0.0))
            self.unload(victim)
            freed = True
        if freed:
            release_freed()  # the unloaded models' memory back to the system, so the next measure is true

    def unload(self, name: str) -> None:
        super().unload(name)
        self.sizes.pop(name, None)
        self.used.pop(name, None)
        self.unloads += 1
        log.info("unloaded %s", name)


def _check_cleared(uri: str) -> None:
    """ValueError unless the version is Approved and passed its gate: a version loaded on demand serves production
    like any production variant's (kiln.serving.approval), and nothing here can take an override."""
    name, _, number = uri.removeprefix("models:/").partition("/")
    version = mlflow.MlflowClient().get_model_version(name, number)
    approval, gate = version.tags.get(APPROVAL, PENDING), version.tags.get(GATE, "unknown")
    if approval != APPROVED or gate != "passed":
        raise ValueError(f"{name} version {number} is {approval}, gate {gate}: only an Approved version that passed "
                         "its gate serves in production")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A multi-model server")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--models", required=True, help="Registered model names, comma-separated.")
    parser.add_argument("--runtime", choices=local_runtimes(), default=DEFAULT_RUNTIME,
                        help="; ".join(f"{n}: {RUNTIMES[n].description}" for n in local_runtimes()))
    parser.add_argument("--budget-mb", type=float, default=2048.0)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    prepare(args.host)
    repository = LazyRepository(args.runtime, {m.strip() for m in args.models.split(",") if m.strip()},
                                int(args.budget_mb * 2**20))
    serve([], args.http_port, repository=repository)


if __name__ == "__main__":
    main()
