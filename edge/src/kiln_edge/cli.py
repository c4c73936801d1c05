"""`kiln-edge run | predict | status`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

TARGETS = ("x86_64", "aarch64")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln-edge", description="Kiln's edge agent.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Pull, verify and serve the newest artifact; report to the platform.")
    run.add_argument("--server", required=True, help="The distribution point, e.g. http://127.0.0.1:6580")
    run.add_argument("--device-id", required=True)
    run.add_argument("--target", required=True, choices=TARGETS)
    run.add_argument("--trust", required=True, type=Path, help="The platform's Ed25519 public key (PEM).")
    run.add_argument("--state", required=True, type=Path, help="Where slots, downloads and samples live.")
    run.add_argument("--interval", type=float, default=30.0, help="Seconds between polls and heartbeats.")
    run.add_argument("--sample-rate", type=float, default=0.0, help="Share of predictions sent back (0-1).")
    run.add_argument("--port", type=int, default=0, help="Loopback port for predictions (0: any free one).")
    run.add_argument("--once", action="store_true", help="One poll, upload and heartbeat, then exit.")
    predict = sub.add_parser("predict", help="Predict with the active model: JSON rows from a file or stdin.")
    predict.add_argument("--state", required=True, type=Path)
    predict.add_argument("input", nargs="?", default="-", help="A JSON file: {\"instances\": [...]} or a list.")
    status = sub.add_parser("status", help="The active artifact of a state folder.")
    status.add_argument("--state", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "predict":
        return _predict(args)
    return _status(args)


def _run(args: argparse.Namespace) -> int:
    from kiln_edge.agent import Agent, AgentConfig, log
    from kiln_edge.serve import start_server

    if not 0 <= args.sample_rate <= 1:
        print("kiln-edge: --sample-rate must lie in [0, 1]", file=sys.stderr)
        return 2
    if not args.trust.is_file():
        print(f"kiln-edge: --trust {args.trust}: no such file", file=sys.stderr)
        return 2
    args.state.mkdir(parents=True, exist_ok=True)
    agent = Agent(AgentConfig(server=args.server, device_id=args.device_id, target=args.target,
                              public_key=args.trust, state=args.state, interval=args.interval,
                              sample_rate=args.sample_rate))
    agent.load_active()
    if args.once:
        agent.cycle()
        return 0 if agent.model else 1
    server = start_server(agent, args.port)
    port = server.server_address[1]
    staged = args.state / ".port"
    staged.write_text(f"{port}\n")
    staged.replace(args.state / "port")  # whole or absent: whoever waits for the file never reads it half-written
    log(f"serving predictions on http://127.0.0.1:{port}/v1/predict")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        agent.cycle()
        stop.wait(args.interval)
    server.shutdown()
    agent.upload_samples()
    return 0


def _load_active(state: Path):  # a CompiledModel, imported lazily
    from kiln_edge.model import CompiledModel
    from kiln_edge.slots import Slots

    slots = Slots(state)
    name = slots.active_name()
    manifest = slots.manifest(name)
    if manifest is None:
        return None
    return CompiledModel(slots.folder(name), manifest)


def _predict(args: argparse.Namespace) -> int:
    from kiln_edge.model import InputProblem

    text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
    try:
        body = json.loads(text)
    except ValueError as exc:
        print(f"kiln-edge: input is not JSON: {exc}", file=sys.stderr)
        return 2
    rows = body.get("instances") if isinstance(body, dict) else body
    model = _load_active(args.state)
    if model is None:
        print(f"kiln-edge: no active model in {args.state}", file=sys.stderr)
        return 1
    try:
        print(json.dumps({"predictions": model.predict(rows), "artifact": model.manifest["id"]}))
    except InputProblem as exc:
        print(f"kiln-edge: {exc}", file=sys.stderr)
        return 2
    return 0


def _status(args: argparse.Namespace) -> int:
    from kiln_edge.slots import Slots

    slots = Slots(args.state)
    name = slots.active_name()
    manifest = slots.manifest(name)
    print(json.dumps({"slot": name, "active": manifest["id"] if manifest else None,
                      "created": manifest["created"] if manifest else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
