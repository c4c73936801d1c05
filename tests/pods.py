"""The chart's workloads run as their pods would, on this machine's Docker engine: each container of a Deployment,
Job or CronJob that `helm template` renders is started from the built image with the pod's command and args, env
(values, Secret and ConfigMap keys), mounted ConfigMaps and Secrets, volumes (the workspace claim as a host folder
owned by the pod's fsGroup, emptyDirs as scratch), user and group, read-only root filesystem, capabilities, no new
privileges and memory and CPU limits. Pods share the host's network: every Service name resolves to loopback, so
each component's port must be free here (the values choose them).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.containers import docker

UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 1000, "M": 1000**2, "G": 1000**3}


@dataclass(frozen=True)
class Workload:
    kind: str  # Deployment, Job or CronJob
    name: str
    pod: dict[str, Any]  # the pod template's spec


@dataclass
class Cluster:
    """What the pods would find in the namespace: its objects (ConfigMaps, Services), Secrets made by the test, and
    the folders standing in for volumes."""

    objects: list[dict[str, Any]]
    secrets: dict[str, dict[str, str]]
    claims: dict[str, Path]  # PersistentVolumeClaim name -> host folder
    scratch: Path
    namespace: str = "kiln"
    started: list[str] = field(default_factory=list)

    def workloads(self) -> list[Workload]:
        found = []
        for o in self.objects:
            kind, name = o["kind"], o["metadata"]["name"]
            if kind in ("Deployment", "Job"):
                found.append(Workload(kind, name, o["spec"]["template"]["spec"]))
            elif kind == "CronJob":
                found.append(Workload(kind, name, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        return found

    def config_map(self, name: str) -> dict[str, str]:
        [cm] = [o for o in self.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
        return dict(cm.get("data") or {})

    def hosts(self) -> list[str]:
        names = []
        for o in self.objects:
            if o["kind"] == "Service":
                n = o["metadata"]["name"]
                names += [n, f"{n}.{self.namespace}", f"{n}.{self.namespace}.svc", f"{n}.{self.namespace}.svc.cluster.local"]
        return names

    def run_args(self, workload: Workload, container: dict[str, Any]) -> list[str]:
        """`docker run` arguments (before the image) for one container of ``workload``'s pod."""
        pod = workload.pod
        pod_sec, sec = pod.get("securityContext") or {}, container.get("securityContext") or {}
        user = sec.get("runAsUser", pod_sec.get("runAsUser"))
        group = sec.get("runAsGroup", pod_sec.get("runAsGroup"))
        if sec.get("runAsNonRoot", pod_sec.get("runAsNonRoot")):
            assert user not in (None, 0), f"{workload.name}: runAsNonRoot without a non-root runAsUser"
        args = ["--network", "host", "--label", "kiln.test=pods", "--user", f"{user}:{group}" if group else str(user)]
        if pod_sec.get("fsGroup") is not None:
            args += ["--group-add", str(pod_sec["fsGroup"])]
        if sec.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        caps = sec.get("capabilities") or {}
        args += [a for c in caps.get("drop", []) for a in ("--cap-drop", c)]
        args += [a for c in caps.get("add", []) for a in ("--cap-add", c)]
        if sec.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        limits = (container.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            args += ["--memory", str(_bytes(str(limits["memory"])))]
        if "cpu" in limits:
            cpu = str(limits["cpu"])
            args += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
        for host in self.hosts():
            args += ["--add-host", f"{host}:127.0.0.1"]
        for name, value in self.env(workload, container).items():
            args += ["-e", f"{name}={value}"]
        args += self.mounts(workload, container)
        if container.get("workingDir"):
            args += ["--workdir", container["workingDir"]]
        return args

    def env(self, workload: Workload, container: dict[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var:
                out[var["name"]] = str(var["value"])
                continue
            source = var["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                assert ref["name"] in self.secrets, f"{workload.name}: Secret {ref['name']} does not exist"
                out[var["name"]] = self.secrets[ref["name"]][ref["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                out[var["name"]] = self.config_map(ref["name"])[ref["key"]]
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                out[var["name"]] = {"metadata.namespace": self.namespace, "metadata.name": workload.name}[path]
            else:
                raise AssertionError(f"{workload.name}: env {var['name']}: {source} is not supported here")
        return out

    def mounts(self, workload: Workload, container: dict[str, Any]) -> list[str]:
        volumes = {v["name"]: v for v in workload.pod.get("volumes") or []}
        args: list[str] = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            target, sub = mount["mountPath"], mount.get("subPath")
            read_only = mount.get("readOnly", False)
            if "emptyDir" in volume:
                assert not sub, f"{workload.name}: subPath on an emptyDir"
                args += ["--tmpfs", f"{target}:rw,exec,mode=1777"]
                continue
            if "persistentVolumeClaim" in volume:
                source = self.claims[volume["persistentVolumeClaim"]["claimName"]]
                read_only = read_only or volume["persistentVolumeClaim"].get("readOnly", False)
            elif "configMap" in volume:
                source = self._files(volume["configMap"], self.config_map(volume["configMap"]["name"]))
                read_only = True  # ConfigMap and Secret volumes are read-only in Kubernetes
            elif "secret" in volume:
                source = self._files(volume["secret"], self.secrets[volume["secret"]["secretName"]])
                read_only = True
            else:
                raise AssertionError(f"{workload.name}: volume {mount['name']} of a kind not supported here")
            host = source / sub if sub else source
            assert host.exists(), f"{workload.name}: {host} (volume {mount['name']}) does not exist"
            args += ["-v", f"{host}:{target}" + (":ro" if read_only else "")]
        return args

    def _files(self, ref: dict[str, Any], data: dict[str, str]) -> Path:
        folder = self.scratch / f"volume-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            path = folder / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[item["key"]])
            path.chmod(0o644)
        return folder

    def command(self, container: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(entrypoint args for `docker run`, arguments after the image): Kubernetes' command replaces the image's
        entrypoint, its args the image's CMD."""
        command, args = container.get("command"), container.get("args") or []
        if command:
            return ["--entrypoint", command[0]], [*command[1:], *args]
        return [], list(args)

    def start(self, workload: Workload, detach: bool = True) -> list[str]:
        """Start every container of the pod (detached); their container names."""
        names = []
        for container in workload.pod["containers"]:
            name = f"pod-{workload.name}-{container['name']}-{uuid.uuid4().hex[:6]}"
            entry, rest = self.command(container)
            docker("run", "-d", "--name", name, *self.run_args(workload, container), *entry, container["image"],
                   *rest)
            self.started.append(name)
            names.append(name)
        return names

    def run(self, workload: Workload, timeout: float = 600,
            command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Job's (or a CronJob's one run's) single container to its end: its exit code and output. ``command``
        runs something else in a pod set up the same way."""
        [container] = workload.pod["containers"]
        if command is not None:
            container = {**container, "command": command, "args": []}
        name = f"job-{workload.name}-{uuid.uuid4().hex[:6]}"
        entry, rest = self.command(container)
        self.started.append(name)
        return subprocess.run(["docker", "run", "--name", name, *self.run_args(workload, container), *entry,
                               container["image"], *rest], capture_output=True, text=True, timeout=timeout)

    def wait_ready(self, workload: Workload, name: str, container: dict[str, Any]) -> float:
        """Poll the container's readiness probe (httpGet on loopback) until it passes; the seconds it took."""
        probe = container["readinessProbe"]["httpGet"]
        port = probe["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
        startup = container.get("startupProbe") or {}
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 30)
        url = f"http://127.0.0.1:{port}{probe.get('path', '/')}"
        t0 = time.monotonic()
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if 200 <= httpx.get(url, timeout=2).status_code < 400:
                    return time.monotonic() - t0
            state = docker("inspect", "-f", "{{.State.Status}}", name, check=False).stdout.strip()
            if state != "running" or time.monotonic() - t0 > budget:
                logs = docker("logs", "--tail", "40", name, check=False)
                raise AssertionError(f"{workload.kind} {workload.name}: not ready at {url} ({state}) after "
                                     f"{time.monotonic() - t0:.0f} s:\n{logs.stdout[-2500:]}{logs.stderr[-2500:]}")
            time.sleep(1)

    def remove_all(self) -> None:
        for name in self.started:
            docker("rm", "-f", name, check=False)
        self.started.clear()


def _bytes(quantity: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", quantity)
    assert m, f"memory quantity {quantity}"
    return int(float(m.group(1)) * UNITS.get(m.group(2) or "", 1))


def own(folder: Path, uid: int, gid: int) -> None:
    """A claim's folder as a fsGroup-owned volume would be: the pod's group may write it."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, uid, gid)
