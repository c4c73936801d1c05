"""What every command shares: its workspace option, engine output kept off stdout, and `--json` or text.

A command is a thin shell: its options, one library call that returns a typed result, and one renderer.
`respond` owns the rest::

    @app.command("show")
    def show(ref: str = RefArgument, workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
        respond(workspace, as_json, lambda ws: get_version(ws, ref), _render_version)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from kiln.cli.output import engine_output, err, print_json
from kiln.workspace import Workspace, open_workspace, require_local

T = TypeVar("T")

WorkspaceOption = typer.Option(None, "--workspace", "-w", help="Workspace folder (default: found from the "
                                                               "current folder, or KILN_WORKSPACE).")


def local_workspace(path: Path | None) -> Workspace:
    """The workspace, which must use the local profile (its services run as processes here)."""
    return require_local(open_workspace(path))


def show(result: T, as_json: bool, render: Callable[[T], None]) -> T:
    """``result`` as one JSON document on stdout with ``--json``, else as ``render`` writes it."""
    if as_json:
        print_json(result)
    else:
        render(result)
    return result


def respond(workspace: Path | None, as_json: bool, call: Callable[[Workspace], T], render: Callable[[T], None], *,
            status: str | None = None, local: bool = False, engines: bool = True) -> T:
    """Open the workspace (``local``: one of the local profile), run ``call`` with the engines' output kept off stdout
    (``engines``; under a spinner saying ``status``), then show its result."""
    ws = local_workspace(workspace) if local else open_workspace(workspace)
    with engine_output() if engines else contextlib.nullcontext():
        if status is None:
            result = call(ws)
        else:
            with err.status(status):
                result = call(ws)
    return show(result, as_json, render)
