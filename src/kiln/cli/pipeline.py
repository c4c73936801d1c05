"""`kiln pipeline ...`: list, compile to KFP IR YAML, run locally (kfp.local) or on a KFP API server."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption, respond, show
from kiln.cli.output import JsonOption, out, progress
from kiln.errors import InputError
from kiln.workflow.catalog import PipelineInfo, describe, load_pipeline, pipeline_names
from kiln.workflow.ir import CompiledPipeline, compile_pipeline
from kiln.workflow.local_run import LocalRun, coerce_parameters, run_local
from kiln.workflow.remote import SubmittedRun, UploadedPipeline, submit, upload_pipelines

app = typer.Typer(help="Kubeflow Pipelines: list, compile, run.", no_args_is_help=True, rich_markup_mode=None)
NameArgument = typer.Argument(..., help="A pipeline's name (`kiln pipeline list`) or a .py file defining one.")


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """The pipelines Kiln ships, with their parameters and defaults."""
    show([describe(name) for name in pipeline_names()], as_json, _render_pipelines)


def _render_pipelines(found: list[PipelineInfo]) -> None:
    for info in found:
        out.print(f"{info.name}: {info.description}", markup=False)
        out.print("  " + ", ".join(f"{k}={v!r}" for k, v in info.parameters.items()), markup=False)


WorkspacePvcOption = typer.Option(None, "--workspace-pvc", help="Mount this PersistentVolumeClaim at /kiln/workspace "
                                  "in every step (the chart's `<release>-workspace`).")
SecretEnvOption = typer.Option([], "--secret-env", help="SECRET:KEY=ENV, repeatable: every step gets the Secret's key "
                               "as an environment variable (e.g. kiln-postgresql:password=PGPASSWORD).")


@app.command("compile")
def compile_(
    name: str = NameArgument,
    output: Path = typer.Option(..., "--output", "-o", help="YAML file to write (upload it in the KFP UI)."),
    workspace_pvc: str | None = WorkspacePvcOption,
    secret_env: list[str] = SecretEnvOption,
    as_json: bool = JsonOption,
) -> None:
    """Compile a pipeline to KFP IR YAML and check it: a valid spec, an image and a command for every step."""
    show(compile_pipeline(load_pipeline(name), output, workspace_pvc, secret_env), as_json, _render_compiled)


def _render_compiled(summary: CompiledPipeline) -> None:
    out.print(f"{summary.pipeline}: {summary.executors} steps, image {', '.join(summary.images)} -> {summary.file}",
              markup=False)


def _render_uploaded(r: UploadedPipeline) -> None:
    out.print(f"{r.pipeline}: {r.action} ({r.version})  {r.url}", markup=False)


@app.command("upload")
def upload(
    names: list[str] = typer.Argument(..., help="Pipeline names (`kiln pipeline list`) or .py files defining them."),
    host: str = typer.Option(..., "--host", help="The KFP API server's URL, e.g. http://localhost:8888."),
    workspace_pvc: str | None = WorkspacePvcOption,
    secret_env: list[str] = SecretEnvOption,
    as_json: bool = JsonOption,
) -> None:
    """Compile pipelines and upload them to a KFP API server, so its UI lists them (a new version when one exists)."""
    pipelines = [load_pipeline(n) for n in names]  # every name checked before anything is uploaded
    # Text shows each pipeline as it is uploaded; JSON shows them all at the end.
    results = upload_pipelines(host, pipelines, workspace_pvc, secret_env, _ignore if as_json else _render_uploaded)
    show(results, as_json, _ignore)


def _ignore(_: object) -> None:
    return None


def _parse_params(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param '{item}': expected NAME=VALUE")
        params[key.strip()] = value
    return params


@app.command("run")
def run(
    name: str = NameArgument,
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE, repeatable; lists as a,b,c or JSON."),
    host: str | None = typer.Option(None, "--host", help="Submit to the KFP API server at this URL instead of "
                                       "running here."),
    runner: str = typer.Option("subprocess", "--runner", help="Run each step here as a process (subprocess) or in "
                               "a container of the platform image (docker: `make images` builds it)."),
    workspace_pvc: str | None = WorkspacePvcOption,
    secret_env: list[str] = SecretEnvOption,
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a pipeline here (each step a process or a container, outputs under WS/pipelines/runs), or submit it
    with --host."""
    pipeline = load_pipeline(name)
    params = coerce_parameters(pipeline, _parse_params(param))
    if host:
        show(submit(host, pipeline, params, workspace_pvc=workspace_pvc, secret_env=secret_env), as_json,
             _render_submitted)
        return
    if workspace_pvc or secret_env:
        raise InputError("--workspace-pvc and --secret-env are for a cluster: give --host too")
    respond(workspace, as_json, lambda ws: run_local(ws, pipeline, params, progress, runner), _render_run)


def _render_submitted(result: SubmittedRun) -> None:
    out.print(f"submitted {result.pipeline}: run {result.run_id}\n  {result.url}", markup=False)


def _render_run(result: LocalRun) -> None:
    out.print(f"{result.pipeline}: {result.status} in {result.seconds:.0f} s (run {result.run}, {result.runner} "
              f"runner)", markup=False)
    for task in result.tasks:
        out.print(f"  {task.name:<22} {task.status.lower():<8} {task.seconds:6.1f} s", markup=False)
    out.print(f"  outputs: {result.root}\n  log: {result.log}", markup=False)
