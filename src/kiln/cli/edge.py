"""`kiln edge ...`: the fleet of edge devices as their heartbeats report it."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption, respond
from kiln.cli.output import JsonOption, out
from kiln.fleet.devices import Device, fleet_db, list_devices

app = typer.Typer(help="Edge devices (Edge Manager): the fleet that pulls compiled artifacts.", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command("devices")
def devices(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Every device that reported: last seen, target, active artifact, health (offline when it went quiet)."""

    respond(workspace, as_json, lambda ws: list_devices(fleet_db(ws)), _render_devices)


def _render_devices(fleet: list[Device]) -> None:
    if not fleet:
        out.print("no device has reported yet (devices run `kiln-edge run --server URL ...`)")
    for d in fleet:
        out.print(f"{d.device_id:<24} {d.target:<8} {d.status:<9} last seen {d.last_seen}  "
                  f"active {d.active or '-'}", markup=False)
