"""One KServe model server process for one Kiln model (a local endpoint variant; in a cluster, the kiln-tvm pods).

Usage: python -m kiln.serving.server --name NAME --model-uri models:/churn@champion [--runtime onnx] --http-port 8080
The MLflow tracking store comes from MLFLOW_TRACKING_URI, as MLflow reads it.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from kiln.serving.runtimes import DEFAULT_RUNTIME, RUNTIMES, local_runtimes

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); a later --name wins over an earlier one, as KServe's
    InferenceService args follow its ServingRuntime's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--runtime", choices=local_runtimes(), default=DEFAULT_RUNTIME,
                        help="; ".join(f"{n}: {RUNTIMES[n].description}" for n in local_runtimes()))
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0, help="0: no gRPC server")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on (loopback by default).")
    parser.add_argument("--nice", type=int, default=0, help="Lower the process's CPU priority by this much (a "
                                                            "shadow's server: it answers no one).")
    return parser.parse_args(argv)


def main() -> None:
    """Load the model and serve it (see the module docstring)."""
    args = arguments()
    if args.nice:
        os.nice(args.nice)
    prepare(args.host)
    model = RUNTIMES[args.runtime].model_type()(args.name, args.model_uri)
    model.load()
    serve([model], args.http_port, args.grpc_port)


def prepare(host: str) -> None:
    """The process's environment and KServe's REST server as Kiln runs them: on ``host``, validation errors named,
    each answer counted by kiln.serving.server_metrics."""
    prepare_environment()
    import kserve.model_server

    kserve.model_server.RESTServer = rest_server_class(host)


def prepare_environment() -> None:
    """The environment a process serving models needs, set before any model library is imported."""
    # Importing Feast in a parent process (as `kiln up` does) sets this to a temporary folder that is gone by
    # now; inherited, it would make every Prometheus histogram write fail. A model server keeps its own metrics.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # One thread for the model (LightGBM's and XGBoost's OpenMP): a request of a few rows gains nothing from more,
    # and their idle threads spin, costing a variant about twice the CPU of its requests (set it to override).
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def rest_server_class(host: str) -> Any:
    """KServe's RESTServer as Kiln runs it: on ``host``, validation errors named, each answer counted by
    kiln.serving.server_metrics."""
    import kserve.model_server
    from fastapi.exceptions import RequestValidationError

    from kiln.serving.server_metrics import RequestMetrics

    class HostRESTServer(kserve.model_server.RESTServer):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            self.config.host = host  # KServe hard-codes 0.0.0.0; a local variant listens on loopback

        def _add_exception_handlers(self, app: FastAPI) -> None:
            super()._add_exception_handlers(app)
            app.add_exception_handler(RequestValidationError, _validation_error)

        def _add_middlewares(self, app: FastAPI) -> None:
            super()._add_middlewares(app)
            app.add_middleware(RequestMetrics)  # outermost: it sees the status every answer goes out with

    return HostRESTServer


def serve(models: list[Any], http_port: int, grpc_port: int = 0, repository: Any = None) -> None:
    """KServe's model server for ``models`` (and those ``repository`` loads), once the RESTServer is Kiln's."""
    import kserve

    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port or 8081, enable_grpc=bool(grpc_port),
                                workers=1, enable_latency_logging=False, registered_models=repository)
    server.start(models)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field. FastAPI's own handler echoes the input back, and an Infinity in it made
    that answer unserializable: a 500 for a malformed request."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    found = exc.errors() if isinstance(exc, RequestValidationError) else []
    problems = [f"{'.'.join(map(str, e.get('loc', ())[1:])) or 'body'}: {e.get('msg')}" for e in found]
    return JSONResponse({"error": "; ".join(problems)[:2000] or "invalid request"}, status_code=422)


if __name__ == "__main__":
    main()
