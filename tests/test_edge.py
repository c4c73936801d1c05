"""The edge agent against the real distribution point: install, serve, report, and every fault it must survive."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.compiled import Compiled, ok
from tests.containers import Images, docker
from tests.s3 import S3
from tests.test_images import RESTRICTED
from tests.test_serving import ROWS
from tests.test_stack import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(compiled: Compiled):
    """Both bundles published; the distribution point on a free port."""
    for target in ("x86_64", "aarch64"):
        ok("artifacts", "publish", compiled.ids[target], "-w", compiled.root)
    with distribution_point(compiled.root) as url:
        yield compiled, url


@contextlib.contextmanager
def distribution_point(workspace: Path):
    """`python -m kiln.fleet.server` for ``workspace`` on a free port; its URL once it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kiln.fleet.server", "--workspace", str(workspace),
                             "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url, lambda: f"exit code {proc.poll()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def wait_up(url: str, why: Callable[[], str], seconds: float = 60) -> None:
    """Until ``url``/v1/health answers; ``why`` says what went wrong when it never does."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        assert time.monotonic() < deadline, f"the distribution point at {url} did not answer: {why()}"
        time.sleep(0.3)


def agent_for(url: str, compiled: Compiled, state: Path, key: Path | None = None, target: str = "x86_64",
              **kw):
    from kiln_edge.agent import Agent, AgentConfig

    return Agent(AgentConfig(server=url, device_id=state.name, target=target, state=state, download_attempts=4,
                             public_key=key or compiled.root / "artifacts" / "signing-key.pub", **kw))


def platform_probabilities(compiled: Compiled, rows: list[dict]) -> np.ndarray:
    import pandas as pd

    from kiln.compile.runner import CompiledModel
    from kiln.training.encoding import Encoder

    bundle = compiled.bundle("x86_64")
    m = json.loads((bundle / "manifest.json").read_text())
    encoder = Encoder.from_dict(json.loads((bundle / "encoder.json").read_text()))
    model = CompiledModel({int(b): bundle / n for b, n in m["libraries"].items()})
    return model.predict(encoder.transform(pd.DataFrame(rows).astype({"calls": "float64"})))[:, 1]


def test_agent_installs_serves_samples_and_reports(dist, tmp_path: Path) -> None:
    compiled, url = dist
    agent = agent_for(url, compiled, tmp_path / "dev-x86", sample_rate=1.0)
    assert agent.poll() == compiled.ids["x86_64"]
    assert (tmp_path / "dev-x86" / "active").resolve().name == "a"
    answer = agent.predict(ROWS)
    got = [p["probability"] for p in answer["predictions"]]
    assert got == pytest.approx(platform_probabilities(compiled, ROWS).tolist(), abs=1e-5)
    assert agent.upload_samples() == 1
    agent.heartbeat()
    devices = ok("edge", "devices", "-w", compiled.root)
    mine = next(d for d in devices if d["device_id"] == "dev-x86")
    assert mine["active"] == compiled.ids["x86_64"] and mine["status"] == "ok" and mine["target"] == "x86_64"
    from kiln.serving.capture import read_capture

    captured = list(read_capture(compiled.root / "capture", "edge-toy"))
    assert captured[-1]["variant"] == "dev-x86" and captured[-1]["request"]["instances"] == ROWS
    assert agent.poll() is None, "the same artifact again is not installed twice"

    # the command line, on the state folder the agent left
    res = subprocess.run([str(Path(sys.executable).parent / "kiln-edge"), "predict", "--state",
                          str(tmp_path / "dev-x86")], input=json.dumps({"instances": ROWS}), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert [p["probability"] for p in json.loads(res.stdout)["predictions"]] == pytest.approx(got, abs=1e-7)
    res = subprocess.run([str(Path(sys.executable).parent / "kiln-edge"), "predict", "--state",
                          str(tmp_path / "dev-x86")], input=json.dumps({"instances": [{"calls": "x"}]}),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "instances[0].calls must be a number" in res.stderr


def published(compiled: Compiled, target: str) -> Path:
    return compiled.root / "artifacts" / "published" / "bundles" / compiled.ids[target]


def test_tampered_file_wrong_key_and_other_target_are_rejected(dist, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from kiln.compile.keys import public_pem

    compiled, url = dist
    lib = published(compiled, "x86_64") / "model-b256.so"
    original = lib.read_bytes()
    lib.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    try:
        agent = agent_for(url, compiled, tmp_path / "dev-tamper")
        assert agent.poll() is None and agent.model is None
        assert "model-b256.so: sha256 differs" in agent.rejected[compiled.ids["x86_64"]]
        assert not (tmp_path / "dev-tamper" / "active").exists()
    finally:
        lib.write_bytes(original)

    other = tmp_path / "other.pub"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    agent = agent_for(url, compiled, tmp_path / "dev-key", key=other)
    assert agent.poll() is None and "signature does not match" in agent.rejected[compiled.ids["x86_64"]]

    # a server that hands the aarch64 bundle to x86_64 devices
    latest = compiled.root / "artifacts" / "published" / "targets" / "x86_64" / "latest.json"
    saved = latest.read_text()
    shutil.copy(latest.with_name("latest.json").parent.parent / "aarch64" / "latest.json", latest)
    try:
        agent = agent_for(url, compiled, tmp_path / "dev-target")
        assert agent.poll() is None
        assert "built for target aarch64, this device is x86_64" in agent.rejected[compiled.ids["aarch64"]]
    finally:
        latest.write_text(saved)


def test_expired_and_older_artifacts_are_refused(dist, tmp_path: Path) -> None:
    from kiln_edge.bundle import Rejected, load_public_key, verify

    compiled, _ = dist
    key = load_public_key(compiled.root / "artifacts" / "signing-key.pub")
    bundle = published(compiled, "x86_64")
    manifest = verify(bundle, key, "x86_64")
    later = datetime.now(UTC) + timedelta(days=91)
    with pytest.raises(Rejected, match="expired at"):
        verify(bundle, key, "x86_64", now=later)
    with pytest.raises(Rejected, match="rollback refused"):
        verify(bundle, key, "x86_64", running={**manifest, "id": "newer", "created": later.isoformat()})


def test_a_bundle_that_fails_its_smoke_test_never_becomes_active(dist, tmp_path: Path) -> None:
    """Validly signed, but its library does not load: rejected, and the running model stays."""
    from kiln.compile.bundle import write_bundle
    from kiln.compile.keys import fingerprint, signing_key
    from kiln.compile.store import publish_artifact
    from kiln.workspace import open_workspace

    compiled, url = dist
    agent = agent_for(url, compiled, tmp_path / "dev-smoke")
    assert agent.poll() == compiled.ids["x86_64"]

    ws = open_workspace(compiled.root)
    source = compiled.bundle("x86_64")
    broken = source.parent / ".broken-build"
    shutil.copytree(source, broken)
    (broken / "model-b1.so").write_bytes(b"\x7fELF not really a library")
    (broken / "manifest.json").unlink()
    (broken / "manifest.sig").unlink()
    from kiln.compile.bundle import ManifestDraft

    m = json.loads((source / "manifest.json").read_text())
    draft = ManifestDraft(model=m["model"], target=m["target"], runtime=m["runtime"], input=m["input"],
                          output=m["output"], libraries=m["libraries"], expires_days=30)
    key = signing_key(ws)
    new = write_bundle(broken, draft, key, fingerprint(key.public_key()))
    broken.rename(source.parent / new["id"])
    latest = compiled.root / "artifacts" / "published" / "targets" / "x86_64" / "latest.json"
    saved = latest.read_text()
    try:
        assert publish_artifact(ws, new["id"]).latest
        assert agent.poll() is None
        assert "smoke test failed" in agent.rejected[new["id"]]
        assert agent.model.manifest["id"] == compiled.ids["x86_64"]
        assert (tmp_path / "dev-smoke" / "active").resolve().name == "a"
        assert agent.predict(ROWS)["artifact"] == compiled.ids["x86_64"]
    finally:
        latest.write_text(saved)


def test_active_slot_broken_on_disk_falls_back_to_the_last_good_one(dist, tmp_path: Path) -> None:
    compiled, url = dist
    state = tmp_path / "dev-fallback"
    agent = agent_for(url, compiled, state)
    assert agent.poll() == compiled.ids["x86_64"]
    shutil.copytree(state / "slots" / "a", state / "slots" / "b")
    agent.slots.activate("b")
    (state / "slots" / "b" / "model-b1.so").write_bytes(b"corrupted")
    again = agent_for(url, compiled, state)
    again.load_active()
    assert again.model is not None and (state / "active").resolve().name == "a"


class CuttingProxy:
    """TCP proxy to the distribution point that cuts its first ``cuts`` long responses after ``after`` bytes,
    and can go down and come back: a flaky link to a server that dies mid-download."""

    def __init__(self, upstream_port: int, after: int, cuts: int) -> None:
        self.upstream, self.after, self.cuts = upstream_port, after, cuts
        self.port = free_port()
        self.cut = 0
        self._open()

    def _open(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def down_for(self, seconds: float) -> None:
        self.running = False
        self.sock.close()
        threading.Timer(seconds, self._open).start()

    def _accept(self) -> None:
        sock = self.sock
        while self.running:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.upstream))
        threading.Thread(target=self._forward, args=(client, up, None), daemon=True).start()
        self._forward(up, client, self)

    def _forward(self, src: socket.socket, dst: socket.socket, cutter: "CuttingProxy | None") -> None:
        sent = 0
        try:
            while data := src.recv(4096):
                if cutter and self.cut < self.cuts and sent + len(data) > self.after:
                    dst.sendall(data[:self.after - sent])
                    self.cut += 1
                    if self.cut == 1:
                        self.down_for(1.5)  # and the server is gone for a moment
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


def test_downloads_resume_after_drops_and_a_server_outage(dist, tmp_path: Path, capsys) -> None:
    compiled, url = dist
    proxy = CuttingProxy(int(url.rsplit(":", 1)[1]), after=40_000, cuts=2)
    agent = agent_for(f"http://127.0.0.1:{proxy.port}", compiled, tmp_path / "dev-flaky")
    assert agent.poll() == compiled.ids["x86_64"], agent.last_error
    log = capsys.readouterr().err
    assert proxy.cut == 2 and log.count("will resume") >= 2, log
    assert agent.predict(ROWS)["artifact"] == compiled.ids["x86_64"]


def test_emulated_arm_device_pulls_verifies_runs_and_reports(dist, tmp_path: Path) -> None:
    """The real agent as an aarch64 process (qemu): it pulls the aarch64 bundle over loopback, serves it, and its
    predictions equal the x86 artifact's."""
    from tests.emulator import ensure_device, needs_tools

    reason = needs_tools()
    if reason:
        pytest.skip(reason)
    compiled, url = dist
    device = ensure_device()
    state = tmp_path / "arm-1"
    edge_src = Path(__file__).resolve().parents[1] / "edge" / "src"
    log = (tmp_path / "arm-agent.log").open("w")
    proc = device.popen(["-m", "kiln_edge", "run", "--server", url, "--device-id", "arm-1", "--target", "aarch64",
                         "--trust", compiled.root / "artifacts" / "signing-key.pub", "--state", state,
                         "--interval", "2", "--sample-rate", "1"], extra_paths=[edge_src], stdout=log, stderr=log)
    try:
        deadline, health = time.monotonic() + 300, None
        while time.monotonic() < deadline and proc.poll() is None:
            if (state / "port").exists():
                port = int((state / "port").read_text())
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).json()
                except httpx.HTTPError:
                    health = None
                if health and health["active"]:
                    break
            time.sleep(1)
        text = (tmp_path / "arm-agent.log").read_text()
        assert health and health["active"] == compiled.ids["aarch64"], text[-3000:]
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"instances": ROWS}, timeout=120).json()
        got = [p["probability"] for p in answer["predictions"]]
        assert got == pytest.approx(platform_probabilities(compiled, ROWS).tolist(), abs=1e-5)
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"instances": [{"plan": 3, "calls": "x"}]},
                         timeout=60)
        assert bad.status_code == 400 and "calls must be a number" in bad.json()["error"]

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            arm = [d for d in ok("edge", "devices", "-w", compiled.root) if d["device_id"] == "arm-1"]
            from kiln.serving.capture import read_capture

            sampled = [r for r in read_capture(compiled.root / "capture", "edge-toy") if r["variant"] == "arm-1"]
            if arm and arm[0]["active"] == compiled.ids["aarch64"] and sampled:
                break
            time.sleep(2)
        assert arm and arm[0]["target"] == "aarch64" and arm[0]["status"] == "ok", arm
        assert sampled and sampled[0]["response"]["predictions"][0]["probability"] == pytest.approx(got[0])
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_an_edge_container_pulls_from_the_distribution_points_container_verifies_and_predicts(
        dist, images: Images, tmp_path: Path) -> None:
    """Both sides as their images run them: the distribution point in the platform image as the chart's pod (the
    workspace at /kiln/workspace, read-only root, no capabilities), the agent in the edge image as user 10002 with
    its state on the image's volume."""
    compiled, _ = dist
    port = free_port()
    name = f"kiln-dist-{port}"
    volume = f"kiln-edge-state-{port}"
    docker("run", "-d", "--name", name, *RESTRICTED, "--user", f"{os.getuid()}:{os.getgid()}", "--tmpfs", "/tmp",
           "-e", "HOME=/tmp", "-v", f"{compiled.root}:/kiln/workspace", images.platform, "python", "-m",
           "kiln.fleet.server", "--workspace", "/kiln/workspace", "--host", "127.0.0.1", "--port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url, lambda: docker("logs", name, check=False).stderr[-3000:])
        key = compiled.root / "artifacts" / "signing-key.pub"
        edge = ("run", "--rm", *RESTRICTED, "-v", f"{volume}:/var/lib/kiln-edge", "-v", f"{key}:/etc/kiln/trust.pub:ro")
        pulled = docker(*edge, images.edge, "run", "--server", url, "--device-id", "edge-box", "--target", "x86_64",
                        "--trust", "/etc/kiln/trust.pub", "--state", "/var/lib/kiln-edge", "--once")
        assert compiled.ids["x86_64"] in pulled.stdout + pulled.stderr
        answer = subprocess.run(["docker", *edge, "-i", images.edge, "predict", "--state", "/var/lib/kiln-edge"],
                                input=json.dumps({"instances": ROWS}), capture_output=True, text=True, timeout=120)
        assert answer.returncode == 0, answer.stderr
        got = [p["probability"] for p in json.loads(answer.stdout)["predictions"]]
        assert got == pytest.approx(platform_probabilities(compiled, ROWS).tolist(), abs=1e-5)
        devices = ok("edge", "devices", "-w", compiled.root)
        box = next(d for d in devices if d["device_id"] == "edge-box")
        assert box["active"] == compiled.ids["x86_64"] and box["status"] == "ok"
    finally:
        docker("rm", "-f", name, check=False)
        docker("volume", "rm", "-f", volume, check=False)


def test_compiled_and_published_bundles_on_s3_reach_a_device(compiled: Compiled, aws: S3, tmp_path: Path) -> None:
    """With the artifacts store on S3: `kiln compile` copies the bundle there, a workspace without it brings it back,
    publishing writes the bundle and then its target's pointer as objects, and the distribution point serves a device
    from the store alone."""
    root = tmp_path / "ws"
    shutil.copytree(compiled.root, root, ignore=shutil.ignore_patterns("compiled", "published"))
    prefix = f"edge-{uuid.uuid4().hex[:8]}"
    settings = yaml.safe_load((root / "kiln.yaml").read_text())
    settings["artifacts"] = {"type": "s3", "uri": f"s3://kiln/{prefix}"}
    (root / "kiln.yaml").write_text(yaml.safe_dump(settings))
    model = json.loads((compiled.bundle("x86_64") / "manifest.json").read_text())["model"]

    built = ok("compile", f"{model['name']}/{model['version']}", "--target", "x86_64", "-w", root)
    local = {p.name for p in Path(built["path"]).iterdir()}
    assert {k.rsplit("/", 1)[1] for k in aws.keys(f"{prefix}/compiled/{built['id']}/")} == local

    shutil.rmtree(root / "artifacts" / "compiled")  # a workspace (a pod) that did not compile it
    listed = ok("artifacts", "list", "-w", root)
    assert [a["id"] for a in listed] == [built["id"]] and not listed[0]["published"]
    shutil.rmtree(root / "artifacts" / "compiled")
    published = ok("artifacts", "publish", built["id"], "-w", root)[0]  # brings back the one it needs
    assert published["location"] == f"s3://kiln/{prefix}/published/bundles/{built['id']}"
    assert {k.rsplit("/", 1)[1] for k in aws.keys(f"{prefix}/published/bundles/{built['id']}/")} == local
    assert not (root / "artifacts" / "published").exists(), "the distribution point is the S3 store"

    with distribution_point(root) as url:
        assert httpx.get(f"{url}/v1/artifacts/{built['id']}/nope.so").status_code == 404
        part = httpx.get(f"{url}/v1/artifacts/{built['id']}/manifest.json", headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and len(part.content) == 10  # devices resume downloads from the store too
        agent = agent_for(url, compiled, tmp_path / "dev-s3", key=root / "artifacts" / "signing-key.pub")
        assert agent.poll() == built["id"]
        got = [p["probability"] for p in agent.predict(ROWS)["predictions"]]
        assert got == pytest.approx(platform_probabilities(compiled, ROWS).tolist(), abs=1e-5)



def test_a_distribution_point_whose_s3_store_does_not_answer_says_so(compiled: Compiled, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from kiln.fleet.server import build_app
    from kiln.workspace import open_workspace

    root = tmp_path / "ws"
    shutil.copytree(compiled.root, root, ignore=shutil.ignore_patterns("compiled", "published"))
    settings = yaml.safe_load((root / "kiln.yaml").read_text())
    settings["artifacts"] = {"type": "s3", "uri": "s3://kiln/gone", "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    (root / "kiln.yaml").write_text(yaml.safe_dump(settings))
    for key, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    client = TestClient(build_app(open_workspace(root)))
    for path in ("/v1/targets/x86_64/latest", "/v1/artifacts/some-id/manifest.json"):
        answer = client.get(path)
        assert answer.status_code == 503 and "s3://kiln/gone" in answer.json()["error"], answer.text
    assert client.get("/v1/health").status_code == 200
