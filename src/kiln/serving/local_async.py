"""A local asynchronous endpoint's processes and their configuration files: its front (kiln.serving.async_app, which
also runs the scaler) and the workers the scaler starts (kiln.serving.async_worker), each reading its JSON file from
the endpoint's folder."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from kiln.errors import InputError
from kiln.files import write_json_atomic
from kiln.process import ServiceSpec
from kiln.serving.async_config import AsyncFrontConfig
from kiln.serving.async_queue import delete_queue, queue_name
from kiln.serving.async_scaler import ScalerConfig, running_workers, worker_service
from kiln.serving.async_store import AsyncStore
from kiln.serving.async_worker import WorkerConfig
from kiln.serving.spec import EndpointSpec
from kiln.workspace import Workspace

FRONT_FILE, WORKER_FILE = "async.json", "worker.json"


def configs(ws: Workspace, spec: EndpointSpec, folder: Path, host: str, served: str, runtime: str,
            env: dict[str, str], capture: tuple[str, str | None] | None) -> tuple[AsyncFrontConfig, WorkerConfig]:
    """The front's and the workers' configuration for ``spec`` (its one variant serving ``served`` on ``runtime``;
    ``capture``: the capture store and its S3 API, when the endpoint captures)."""
    a, s = spec.async_inference, ws.settings.async_inference
    store, store_url = (s.store.uri, s.store.endpoint_url) if s.store.type == "s3" else (s.store.path, None)
    variant, queue = spec.variants[0], queue_name(spec.name)
    worker = WorkerConfig(
        endpoint=spec.name, variant=variant.name, model_uri=served, runtime=runtime, broker_url=s.broker_url,
        queue=queue,
        store=store, store_endpoint_url=store_url, chunk_rows=a.chunk_rows, max_deliveries=a.max_deliveries,
        success_url=a.notify.success_url, error_url=a.notify.error_url,
        capture=capture[0] if capture else None, capture_endpoint_url=capture[1] if capture else None,
        capture_percent=spec.capture.sample_percent, capture_flush_seconds=spec.capture.flush_seconds)
    scaler = ScalerConfig(endpoint=spec.name, state_dir=str(ws.state_dir), worker_config=str(folder / WORKER_FILE),
                          host=host, min=a.workers.min, max=a.workers.max,
                          backlog_per_worker=a.workers.backlog_per_worker, idle_seconds=a.workers.idle_seconds,
                          env=env)
    front = AsyncFrontConfig(endpoint=spec.name, broker_url=s.broker_url, queue=queue, store=store, store_endpoint_url=store_url,
                             max_payload_bytes=int(a.max_payload_mb * 2**20),
                             token_env=spec.auth.bearer_token_env if spec.auth else None, scaler=scaler)
    return front, worker


def write_configs(folder: Path, front: AsyncFrontConfig, worker: WorkerConfig) -> None:
    write_json_atomic(folder / WORKER_FILE, worker.to_dict())
    write_json_atomic(folder / FRONT_FILE, front.to_dict())


def front_service(name: str, folder: Path, host: str, port: int) -> ServiceSpec:
    """The endpoint's front; ready once it holds a connection to the broker."""
    return ServiceSpec(name=f"endpoint-{name}", host=host, port=port, health_path="/v2/health/ready",
                       setting="serving.base_port",
                       command=[sys.executable, "-m", "kiln.serving.async_app", "--config", str(folder / FRONT_FILE),
                                "--port", str(port), "--host", host])


def worker_services(ws: Workspace, name: str, folder: Path) -> list[ServiceSpec]:
    """The endpoint's workers that run now (to stop or report them)."""
    config = AsyncFrontConfig.read(folder / FRONT_FILE).scaler
    assert config is not None  # a local endpoint's front always scales
    return [worker_service(config, i) for i in running_workers(ws.state_dir, name, config.max + 8)]


def forget_queue(folder: Path) -> int:
    """Delete the endpoint's queue; each request still waiting in it gets an error outcome saying so (none is left
    pending for ever). How many there were."""
    config = AsyncFrontConfig.read(folder / FRONT_FILE)
    waiting = asyncio.run(delete_queue(config.broker_url, config.queue))
    store = AsyncStore(config.store, config.store_endpoint_url)
    with tempfile.TemporaryDirectory() as scratch:
        for work in waiting:
            try:
                request = store.request(work.inference_id)
            except InputError:  # a message naming no stored request: nothing to answer
                continue
            store.write_error(request, f"endpoint {work.endpoint} was deleted before a worker answered it", 0,
                              Path(scratch) / "error.json")
    return len(waiting)
