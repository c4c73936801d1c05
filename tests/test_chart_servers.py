"""The chart's MLflow server command, run for real against this machine's PostgreSQL: what its pod would run."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cluster_checks import documents, run
from tests.k8s_tools import tools
from tests.test_stack import free_port

pytestmark = [pytest.mark.slow, pytest.mark.services]

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = ("127.0.0.1", 5432)


def test_mlflow_command_serves_the_probe_and_in_cluster_callers_only(tmp_path: Path) -> None:
    try:
        socket.create_connection(POSTGRES, timeout=1).close()
    except OSError:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import psycopg2

    objs = documents(run(tools()["helm"], "template", "kiln", ROOT / "charts" / "kiln", "-n", "kubeflow").stdout)
    [deployment] = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "kiln-mlflow"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    command = list(container["command"])
    probe = container["readinessProbe"]["httpGet"]
    assert "httpHeaders" not in probe
    database = f"mlflow_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    port = free_port()
    # The pod's command with this machine's PostgreSQL in place of the chart's and a free port on loopback.
    command[command.index("--backend-store-uri") + 1] = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    command[command.index("--workers") + 1] = "1"
    server = subprocess.Popen([str(Path(sys.executable).parent / command[0]), *command[1:]], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
                                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        url = f"http://127.0.0.1:{port}{probe['path']}"
        kubelet = {"Host": "10.244.0.17:5000"}  # the kubelet's probe names the pod's IP
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                answer = httpx.get(url, headers=kubelet, timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "MLflow did not answer in 240 s"
                time.sleep(1)
        assert answer.status_code == 200, answer.text  # the probe passes
        # Pipeline steps call it by the name kiln.yaml gives it; the registry answers them from PostgreSQL.
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/search"
        answer = httpx.get(api, headers={"Host": "kiln-mlflow.kubeflow.svc.cluster.local:5000"}, timeout=10)
        assert answer.status_code == 200, answer.text
        # A name --allowed-hosts does not hold is refused (MLflow's guard against DNS rebinding).
        assert httpx.get(api, headers={"Host": "mlflow.example.org"}, timeout=10).status_code == 403
    finally:
        server.terminate()
        server.wait(timeout=30)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()
