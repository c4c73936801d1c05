"""The local Kubernetes of scripts/dev-cluster.sh for the tests: started when none answers (and stopped at the end
of the run that started it), reused when one does."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "dev-cluster.sh"


@dataclass(frozen=True)
class Kube:
    kubeconfig: Path
    kubectl: Path

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                             capture_output=True, text=True, timeout=timeout)
        assert not check or res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr[-3000:]}"
        return res

    def apply(self, *objects: dict) -> None:
        self.run("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))

    def get(self, *args: str) -> dict:
        return json.loads(self.run("get", *args, "-o", "json").stdout)


def host_network() -> tuple[str, list[str]]:
    """The host's forwarding switch and firewall chains: what the cluster must leave as it found."""
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    uncounted = (re.sub(r" \[\d+:\d+\]", "", line) for line in rules.splitlines())  # without packet counters
    return forward, sorted(line for line in uncounted if line.startswith((":", "-")))


@contextlib.contextmanager
def dev_cluster() -> Iterator[Kube]:
    from tests.k8s_tools import tools

    before = host_network()
    running = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=1800)
    assert up.returncode == 0, up.stderr[-4000:]
    try:
        yield Kube(Path(up.stdout.strip().splitlines()[-1]), tools()["kubectl"])
    finally:
        if not running:
            down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=300)
            assert down.returncode == 0, down.stderr[-3000:]
            assert host_network() == before, "the cluster left the host's forwarding or firewall rules changed"
