"""Kiln Studio's web app: the pages (server-rendered HTML, charts drawn in the browser by plotly.js, served from the
installed plotly package), the files they link (model cards, reports), and the actions, which need the bearer token.

    python -m kiln.studio.app --workspace WS [--host 127.0.0.1] [--port 8070]
"""

from __future__ import annotations

import argparse
import hmac
import importlib.util
import os
import threading
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kiln.errors import KilnError
from kiln.serving.endpoints import compare_shadow, names, on_cluster
from kiln.studio.actions import rollout_action, version_action
from kiln.studio.cluster_endpoints import cluster_endpoint_detail, cluster_endpoints_page
from kiln.studio.edge import edge_page
from kiln.studio.endpoints import endpoint_detail, endpoints_page
from kiln.studio.features import features_page
from kiln.studio.models import models_page, version_row
from kiln.studio.monitors import EndpointMonitors, monitor_detail, monitors_page
from kiln.studio.pipelines import pipelines_page
from kiln.workspace import Workspace, open_workspace

HERE = Path(__file__).parent
PAGES = (("models", "Models"), ("endpoints", "Endpoints"), ("monitors", "Monitors"), ("pipelines", "Pipelines"),
         ("features", "Features"), ("edge", "Edge"))  # the menu, in order
SHOWN_FILES = {".html": "text/html", ".md": "text/markdown", ".png": "image/png", ".svg": "image/svg+xml",
               ".txt": "text/plain", ".log": "text/plain"}  # what /files serves: reports, plots and logs


def build_app(ws: Workspace, token: str | None) -> Starlette:
    """Studio over ``ws``; actions are refused unless they carry ``token`` (all of them while it is None)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(), trim_blocks=True,
                      lstrip_blocks=True)
    links = _links(ws)

    def page(template: str, active: str, **values: Any) -> Response:
        html = env.get_template(template).render(pages=PAGES, active=active, links=links, workspace=str(ws.root),
                                                 actions_on=token is not None, **values)
        return HTMLResponse(html)

    async def home(request: Request) -> Response:
        return RedirectResponse("/models")

    async def models(request: Request) -> Response:
        return page("models.html", "models", page=models_page(ws))

    async def version(request: Request) -> Response:
        row = version_row(ws, request.path_params["name"], str(request.path_params["version"]))
        if row is None:
            raise HTTPException(404, f"no model version {request.path_params['name']}/{request.path_params['version']}")
        return page("version.html", "models", v=row, mlflow=links.get("MLflow"))

    async def card(request: Request) -> Response:
        row = version_row(ws, request.path_params["name"], str(request.path_params["version"]))
        if row is None or row.card is None:
            raise HTTPException(404, "no model card for this version")
        return FileResponse(row.card, media_type="text/html")

    cluster = on_cluster(ws)  # endpoints are read from the Kubernetes API and Prometheus, not local processes

    async def endpoints(request: Request) -> Response:
        listed = await (cluster_endpoints_page(ws) if cluster else endpoints_page(ws))
        return page("endpoints.html", "endpoints", page=listed, cluster=cluster)

    async def endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        detail = await (cluster_endpoint_detail(ws, name) if cluster else endpoint_detail(ws, name))
        if detail is None:
            raise HTTPException(404, f"no endpoint {request.path_params['name']}")
        return page("endpoint.html", "endpoints", d=detail, cluster=cluster)

    async def shadow(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            hours = float(request.query_params.get("hours", "1"))
        except ValueError:
            hours = -1.0
        if not 0 < hours <= 24 * 366:  # NaN fails this too
            raise HTTPException(400, "hours: give a number of hours from above 0 to a year, e.g. ?hours=24")
        if name not in names(ws):
            raise HTTPException(404, f"no endpoint {name}")
        since = datetime.now(UTC) - timedelta(hours=hours)
        try:
            compared = compare_shadow(ws, name, since)
        except KilnError as exc:
            raise HTTPException(400, exc.message) from None
        return page("shadow.html", "endpoints", c=compared, hours=hours)

    async def monitors(request: Request) -> Response:
        return page("monitors.html", "monitors", page=monitors_page(ws))

    async def monitor(request: Request) -> Response:
        detail = monitor_detail(ws, request.path_params["name"])
        if detail is None:
            raise HTTPException(404, f"no monitor runs for endpoint {request.path_params['name']}")
        return page("monitor.html", "monitors", m=detail, chart=_monitor_chart(detail))

    async def pipelines(request: Request) -> Response:
        return page("pipelines.html", "pipelines", page=pipelines_page(ws))

    async def features(request: Request) -> Response:
        return page("features.html", "features", page=features_page(ws))

    async def edge(request: Request) -> Response:
        return page("edge.html", "edge", page=edge_page(ws))

    async def files(request: Request) -> Response:
        """A report the pages link (monitor reports, pipeline outputs): only files inside the workspace."""
        raw = request.query_params.get("path", "")
        path = Path(raw).resolve()
        if not raw or not path.is_relative_to(ws.root.resolve()) or not path.is_file() \
                or path.suffix not in SHOWN_FILES:
            raise HTTPException(404, f"no report at {raw!r} in this workspace")
        return FileResponse(path, media_type=SHOWN_FILES[path.suffix])

    async def act(request: Request) -> Response:
        refused = _refusal(request, token)
        if refused is not None:
            return JSONResponse({"error": refused[1]}, status_code=refused[0])
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            return JSONResponse({"error": "expected a JSON object {\"reason\": TEXT}"}, status_code=400)
        p, reason = request.path_params, body.get("reason", "")
        try:
            if "version" in p:
                done = version_action(ws, p["name"], str(p["version"]), p["action"], reason)
            else:
                done = rollout_action(ws, p["name"], p["action"], reason)
        except KilnError as exc:
            return JSONResponse({"error": exc.message, **({"hint": exc.hint} if exc.hint else {})}, status_code=400)
        return JSONResponse(asdict(done))

    async def plotly(request: Request) -> Response:
        spec = importlib.util.find_spec("plotly")  # located, not imported: only its JavaScript is served
        if spec is None or not spec.submodule_search_locations:
            raise HTTPException(404, "plotly is not installed: charts cannot be drawn")
        js = Path(spec.submodule_search_locations[0]) / "package_data" / "plotly.min.js"
        return FileResponse(js, media_type="text/javascript", headers={"cache-control": "max-age=86400"})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "workspace": str(ws.root)})

    async def missing(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else \
            f"Studio failed to build this page: {type(exc).__name__}: {exc}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": detail}, status_code=status)
        response = page("error.html", "", status=status, detail=detail)
        response.status_code = status
        return response

    return Starlette(routes=[
        Route("/", home),
        Route("/models", models),
        Route("/models/{name}/{version:int}", version),
        Route("/models/{name}/{version:int}/card", card),
        Route("/endpoints", endpoints),
        Route("/endpoints/{name}", endpoint),
        Route("/endpoints/{name}/shadow", shadow),
        Route("/monitors", monitors),
        Route("/monitors/{name}", monitor),
        Route("/pipelines", pipelines),
        Route("/features", features),
        Route("/edge", edge),
        Route("/files", files),
        Route("/api/models/{name}/{version:int}/{action}", act, methods=["POST"]),
        Route("/api/endpoints/{name}/rollout/{action}", act, methods=["POST"]),
        Route("/health", health),
        Route("/static/plotly.min.js", plotly),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], exception_handlers={HTTPException: missing, Exception: missing})


def _links(ws: Workspace) -> dict[str, str]:
    """The other UIs every page links: where settings say a browser reaches them, else, off a cluster, the services
    `kiln up` runs on this machine."""
    s, studio = ws.settings.services, ws.settings.studio
    here = not on_cluster(ws)
    found = {"MLflow": studio.mlflow_url or (f"http://{s.mlflow.host}:{s.mlflow.port}" if here else None),
             "Evidently": studio.evidently_url or (f"http://{s.evidently.host}:{s.evidently.port}" if here else None),
             "KFP UI": studio.kfp_ui}
    return {name: url for name, url in found.items() if url}


def _monitor_chart(m: EndpointMonitors) -> dict[str, Any]:
    """What the monitor page charts, oldest run first: violations per run, and each feature's drift score."""
    runs = list(reversed(m.runs))
    drift: dict[str, list[tuple[str, float]]] = {}
    for r in runs:
        for d in r.drift:
            drift.setdefault(d.feature, []).append((r.finished.isoformat(timespec="seconds"), d.score))
    return {"finished": [r.finished.isoformat(timespec="seconds") for r in runs],
            "violations": [r.violations for r in runs], "drift": drift}


def _refusal(request: Request, token: str | None) -> tuple[int, str] | None:
    """Why an action is refused (status, message), or None when its bearer token is right."""
    if token is None:
        return 403, "actions are off: set the token variable (settings studio.token_env) before Studio starts"
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return 401, "missing or wrong bearer token"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Kiln Studio, the web console")
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8070)
    args = parser.parse_args(argv)
    ws = open_workspace(args.workspace)
    token = os.environ.get(ws.settings.studio.token_env) or None
    # Feast takes seconds to import: loaded while Studio starts, so the first visit of Features answers at once.
    threading.Thread(target=_warm, args=(ws,), name="studio-warm", daemon=True).start()
    uvicorn.run(build_app(ws, token), host=args.host, port=args.port, log_level="warning", access_log=False)


def _warm(ws: Workspace) -> None:
    try:
        features_page(ws)
    except Exception:  # noqa: BLE001 - the page itself shows what is wrong when it is visited
        return


if __name__ == "__main__":
    main()
