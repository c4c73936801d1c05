"""A multi-model server: one KServe model server process holding many registered versions, each loaded when it is
first asked for and unloaded least recently used once the loaded ones pass a memory budget.

A version is served under the name NAME-vVERSION (`churn-v3` is models:/churn/3; V2 paths and KServe's model names
take no '/'). KServe's own repository extension loads it (`POST /v2/repository/models/NAME-vVERSION/load`, what the
endpoint's front calls before the first request to it) and unloads it; this module's repository is the part KServe
leaves to the server: which names it may load, how, and which to unload when memory runs short. A version's memory
is what the process's resident size grew by while it loaded (at least MIN_MODEL_BYTES).

Versions come from the registry (local endpoints: `--models`, each load checks the version is cleared for
production) or from a folder of model folders named NAME-vVERSION (`--model-dir`, a cluster: KServe's model agent
downloads each TrainedModel there and asks this server to load it). A version unloaded for the budget stays known
and loads again when a request asks for it.

    python -m kiln.serving.multi_model --endpoint NAME --models churn,fraud --budget-mb 2048 --http-port PORT
    python -m kiln.serving.multi_model --endpoint NAME --model-dir /mnt/models --budget-mb 2048 --http-port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
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


# Where a served name's model files are (a models:/ URI or a folder); ValueError for a name it may not serve.
Locator = Callable[[str], str]


class LazyRepository(ModelRepository):
    """The versions ``locate`` finds, loaded on demand, within ``budget_bytes``."""

    def __init__(self, runtime: str, locate: Locator, budget_bytes: int) -> None:
        super().__init__()
        self.runtime, self.locate, self.budget = get_runtime(runtime), locate, budget_bytes
        self.locations: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self.used: dict[str, float] = {}
        self.loads = self.unloads = 0
        self._loading: dict[str, asyncio.Task[bool]] = {}

    def get_model(self, name: str) -> Any:
        model = super().get_model(name)
        if model is not None:
            self.used[name] = time.monotonic()
        return model

    async def is_model_ready(self, name: str) -> bool:
        model = self.models.get(name)
        if model is not None and not model.ready and name in self.locations:
            # Unloaded for the budget: loaded again here, counted (KServe's dataplane would load it on its event loop).
            await self.load(name)
        return bool(await super().is_model_ready(name))

    async def load(self, name: str) -> bool:
        """Load ``name`` (once, however many ask at the same time), then unload others over the budget."""
        model = self.models.get(name)
        if model is not None and model.ready:
            self.used[name] = time.monotonic()
            return True
        if name not in self._loading:
            self._loading[name] = asyncio.create_task(self._load(name))
        try:
            return await asyncio.shield(self._loading[name])
        finally:
            self._loading.pop(name, None)

    async def _load(self, name: str) -> bool:
        location = await asyncio.to_thread(self.locate, name)  # checked again at every load
        before = psutil.Process().memory_info().rss
        model = self._model(name, location)
        await asyncio.to_thread(model.load)
        self.sizes[name] = max(psutil.Process().memory_info().rss - before, MIN_MODEL_BYTES)
        self.update(model)
        self.locations[name] = location
        self.used[name] = time.monotonic()
        self.loads += 1
        log.info("loaded %s (%.1f MB)", name, self.sizes[name] / 2**20)
        self._fit(name)
        return True

    def _model(self, name: str, location: str) -> Any:
        model = self.runtime.model_type()(name, location)
        model.names_v1_answers = True
        return model

    def _fit(self, keep: str) -> None:
        """Unload the least recently used versions until the loaded ones fit the budget (never ``keep``)."""
        freed = False
        while sum(self.sizes.values()) > self.budget and len(self.sizes) > 1:
            victim = min((n for n in self.sizes if n != keep), key=lambda n: self.used.get(n, 0.0))
            location = self.locations[victim]
            self.unload(victim)
            self.locations[victim] = location  # still served: a placeholder, not ready, until it is asked for again
            self.update(self._model(victim, location))
            freed = True
        if freed:
            release_freed()  # the unloaded models' memory back to the system, so the next measure is true

    def unload(self, name: str) -> None:
        """Unload ``name`` and forget it (KServe's unload request, or the budget, which keeps it known)."""
        loaded = name in self.sizes
        super().unload(name)
        self.locations.pop(name, None)
        self.sizes.pop(name, None)
        self.used.pop(name, None)
        if loaded:
            self.unloads += 1
            log.info("unloaded %s", name)


def registry_locator(allowed: set[str]) -> Locator:
    """Versions of the registered models ``allowed``, each cleared for production when it loads."""

    def locate(name: str) -> str:
        uri = model_uri(name)
        if uri is None or uri.removeprefix("models:/").split("/")[0] not in allowed:
            raise ValueError(f"model '{name}': this endpoint serves NAME-vVERSION of {', '.join(sorted(allowed))}")
        _check_cleared(uri)
        return uri

    return locate


def folder_locator(root: Path) -> Locator:
    """The model folders in ``root`` named NAME-vVERSION (where KServe's model agent puts TrainedModels)."""

    def locate(name: str) -> str:
        folder = root / name
        if model_uri(name) is None or not folder.is_dir():
            raise ValueError(f"model '{name}': no folder {folder} (this server serves the NAME-vVERSION folders of "
                             f"{root})")
        return str(folder)

    return locate


def _check_cleared(uri: str) -> None:
    """ValueError unless the version is Approved and passed its gate: a version loaded on demand serves production
    like any production variant's (kiln.serving.approval), and nothing here can take an override."""
    name, _, number = uri.removeprefix("models:/").partition("/")
    version = mlflow.MlflowClient().get_model_version(name, number)
    approval, gate = version.tags.get(APPROVAL, PENDING), version.tags.get(GATE, "unknown")
    if approval != APPROVED or gate != "passed":
        raise ValueError(f"{name} version {number} is {approval}, gate {gate}: only an Approved version that passed "
                         "its gate serves in production")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A multi-model server")
    parser.add_argument("--endpoint", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", help="Registered model names, comma-separated.")
    source.add_argument("--model-dir", type=Path, help="A folder of model folders named NAME-vVERSION.")
    parser.add_argument("--runtime", choices=local_runtimes(), default=DEFAULT_RUNTIME,
                        help="; ".join(f"{n}: {RUNTIMES[n].description}" for n in local_runtimes()))
    parser.add_argument("--budget-mb", type=float, default=2048.0)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    prepare(args.host)
    locate = folder_locator(args.model_dir) if args.model_dir else \
        registry_locator({m.strip() for m in args.models.split(",") if m.strip()})
    repository = LazyRepository(args.runtime, locate, int(args.budget_mb * 2**20))
    serve([], args.http_port, repository=repository)


if __name__ == "__main__":
    main()
