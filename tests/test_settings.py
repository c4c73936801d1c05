"""Settings from kiln.yaml and KILN_* variables: profile defaults, overrides, and errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.errors import InputError, SettingsError
from kiln.settings import load_settings
from kiln.workspace import FOLDERS, init_workspace
from tests.conftest import run_kiln


def workspace(tmp_path: Path, yaml: str | None = None) -> Path:
    root = (tmp_path / "ws").resolve()
    root.mkdir()
    if yaml is not None:
        (root / "kiln.yaml").write_text(yaml)
    return root


def inside(path: str, root: Path) -> bool:
    return Path(path).is_absolute() and Path(path).resolve().is_relative_to(root)


# --- profile defaults ---------------------------------------------------------------------------
def test_local_profile_defaults_live_in_the_workspace(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    s = load_settings(root)
    assert s.profile == "local"
    assert s.workspace == root
    assert s.mlflow.tracking_uri.startswith("sqlite:///")
    assert inside(s.mlflow.tracking_uri.removeprefix("sqlite:///"), root)
    assert inside(s.mlflow.artifact_root, root)
    online, registry, offline = s.features.online_store, s.features.registry, s.features.offline_store
    assert online.type == "sqlite" and inside(online.path, root)
    assert registry.type == "file" and inside(registry.path, root)
    assert inside(offline.path, root)
    assert s.artifacts.type == "local" and inside(s.artifacts.path, root)
    assert s.capture.type == "local" and inside(s.capture.path, root)
    assert s.artifacts.path != s.capture.path
    assert s.serving.type == "local"
    assert s.services.mlflow.port == 5000


def test_local_profile_paths_follow_the_workspace_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = workspace(tmp_path, "profile: local\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings(root)
    assert inside(s.features.online_store.path, root)
    assert inside(s.mlflow.tracking_uri.removeprefix("sqlite:///"), root)


def test_cluster_profile_defaults(tmp_path: Path) -> None:
    s = load_settings(workspace(tmp_path, "profile: cluster\n"))
    assert s.profile == "cluster"
    assert s.features.online_store.type == "redis"
    assert s.features.registry.type == "sql"
    assert s.artifacts.type == "s3" and s.artifacts.uri.startswith("s3://")
    assert s.capture.type == "s3"
    assert s.serving.type == "kserve"
    assert not s.mlflow.tracking_uri.startswith("sqlite")


def test_profile_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_PROFILE", "cluster")
    s = load_settings(workspace(tmp_path, "profile: local\n"))
    assert s.profile == "cluster"
    assert s.features.online_store.type == "redis"


# --- overrides ----------------------------------------------------------------------------------
def test_changing_a_backend_type_takes_none_of_the_old_defaults(tmp_path: Path) -> None:
    root = workspace(tmp_path, "profile: cluster\nfeatures:\n  online_store:\n    type: sqlite\n    path: x.db\n")
    s = load_settings(root)
    online = s.features.online_store
    assert online.type == "sqlite"
    assert Path(online.path) == root / "x.db"
    assert not hasattr(online, "connection_string")
    # The rest of the profile stays as it was.
    assert s.features.registry.type == "sql"
    assert s.serving.type == "kserve"


def test_changing_a_local_backend_to_a_remote_one(tmp_path: Path) -> None:
    root = workspace(tmp_path, "features:\n  online_store: {type: redis, connection_string: 'cache:6379'}\n"
                               "artifacts: {type: s3, uri: 's3://bucket/kiln'}\n")
    s = load_settings(root)
    assert s.features.online_store.type == "redis"
    assert s.features.online_store.connection_string == "cache:6379"
    assert s.artifacts.type == "s3" and s.artifacts.uri == "s3://bucket/kiln"
    assert s.capture.type == "local"


def test_env_overrides_a_nested_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = workspace(tmp_path)
    assert load_settings(root).services.mlflow.port == 5000
    monkeypatch.setenv("KILN_SERVICES__MLFLOW__PORT", "5123")
    assert load_settings(root).services.mlflow.port == 5123


def test_env_beats_kiln_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = workspace(tmp_path, "services:\n  mlflow:\n    host: 127.0.0.1\n    port: 5001\n")
    assert load_settings(root).services.mlflow.port == 5001
    monkeypatch.setenv("KILN_SERVICES__MLFLOW__PORT", "5123")
    s = load_settings(root)
    assert s.services.mlflow.port == 5123
    assert s.services.mlflow.host == "127.0.0.1"


def test_non_settings_kiln_variables_are_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_DEBUG", "1")
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    root = workspace(tmp_path)
    assert load_settings(root).workspace == root


# --- unknown keys -------------------------------------------------------------------------------
def test_misspelled_key_in_kiln_yaml(tmp_path: Path) -> None:
    root = workspace(tmp_path, "mlflow:\n  trackin_uri: http://127.0.0.1:5000\n")
    with pytest.raises(SettingsError) as exc:
        load_settings(root)
    assert "mlflow.trackin_uri" in exc.value.message


def test_misspelled_top_level_key_in_kiln_yaml(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace(tmp_path, "profle: cluster\n"))
    assert "profle" in exc.value.message


# --- bad values ---------------------------------------------------------------------------------
def test_bad_profile_names_only_profile(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace(tmp_path, "profile: clustr\n"))
    msg = exc.value.message
    assert "'profile'" in msg
    assert "clustr" in msg
    for other in ("mlflow", "features", "artifacts", "capture", "ray", "serving"):
        assert other not in msg, f"message names {other!r} too: {msg!r}"


def test_port_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace(tmp_path, "services:\n  mlflow:\n    port: 99999\n"))
    assert "services.mlflow.port" in exc.value.message


def test_unknown_backend_type(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace(tmp_path, "features:\n  online_store:\n    type: mongo\n"))
    assert "features.online_store" in exc.value.message
    assert "mongo" in exc.value.message


# --- the file itself ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["- a\n- b\n", "profile: [local\n", "profile: local\n  services: x\n"],
                         ids=["a-list", "broken-flow", "bad-indent"])
def test_unreadable_kiln_yaml_names_the_file(tmp_path: Path, text: str) -> None:
    root = workspace(tmp_path, text)
    with pytest.raises(SettingsError) as exc:
        load_settings(root)
    assert str(root / "kiln.yaml") in exc.value.message


def test_workspace_key_in_kiln_yaml_is_rejected(tmp_path: Path) -> None:
    root = workspace(tmp_path, "workspace: /somewhere/else\n")
    with pytest.raises(SettingsError) as exc:
        load_settings(root)
    assert "workspace" in exc.value.message
    assert "kiln.yaml" in exc.value.message


def test_settings_error_is_bad_input() -> None:
    assert SettingsError.exit_code == 1
    assert SettingsError("x").exit_code == 1
    assert issubclass(SettingsError, InputError)


# --- init_workspace (Python) -----------------------------------------------------------------------
def test_init_workspace_then_load(tmp_path: Path) -> None:
    ws, created = init_workspace(tmp_path / "ws", "cluster")
    assert (tmp_path / "ws" / "kiln.yaml") in created
    assert ws.settings.profile == "cluster"
    assert load_settings(tmp_path / "ws").profile == "cluster"
    ws2, created2 = init_workspace(tmp_path / "ws", "local")  # an existing kiln.yaml is kept
    assert created2 == []
    assert ws2.settings.profile == "cluster"


# --- the CLI --------------------------------------------------------------------------------------
def test_cli_init_creates_workspace_and_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    res = run_kiln("init", root)
    assert res.code == 0, res.stderr
    assert (root / "kiln.yaml").is_file()
    for name in FOLDERS:
        assert (root / name).is_dir(), name
    assert set(FOLDERS) >= {"data", "features", "models", "artifacts", "capture", "reports"}
    yaml_before = (root / "kiln.yaml").read_bytes()
    listing_before = sorted(p.relative_to(root) for p in root.rglob("*"))

    res = run_kiln("init", root, "--json")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["created"] == []
    assert Path(doc["workspace"]) == root.resolve()
    assert doc["profile"] == "local"
    assert (root / "kiln.yaml").read_bytes() == yaml_before
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == listing_before


def test_cli_init_json_on_a_new_folder(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    res = run_kiln("init", root, "--json", "--profile", "cluster")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["profile"] == "cluster"
    assert str(root.resolve() / "kiln.yaml") in doc["created"]
    assert "profile: cluster" in (root / "kiln.yaml").read_text()


def test_cli_init_refuses_a_broken_kiln_yaml(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    text = "profile: local\nmlflow:\n  trackin_uri: http://127.0.0.1:5000\n"
    (root / "kiln.yaml").write_text(text)
    res = run_kiln("init", root)
    assert res.code == 1
    assert "mlflow.trackin_uri" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert (root / "kiln.yaml").read_text() == text


def test_cli_init_where_nothing_may_be_written_says_so() -> None:
    res = run_kiln("init", "/sys/kiln-ws")  # sysfs takes no new folder, not even root's
    assert res.code == 1 and "/sys/kiln-ws: cannot make the workspace there: Operation not permitted" in res.stderr


def test_cli_init_unknown_profile(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    res = run_kiln("init", root, "--profile", "nope")
    assert res.code == 1
    assert "nope" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert not (root / "kiln.yaml").exists()


@pytest.mark.parametrize("name,value", [
    ("KILN_BOGUS", "1"),
    ("kiln_bogus", "1"),
    ("KILN_MLFLOW__NOPE", "1"),
    ("KILN_SERVICES__MLFLOW__PORT", "99999"),
    ("KILN_MLFLOW", "abc"),
])
def test_bad_environment_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                           value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as exc:
        load_settings(workspace(tmp_path))
    assert name in exc.value.message


def test_the_variables_kubernetes_sets_for_the_charts_services_are_not_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pod gets {NAME}_SERVICE_HOST, {NAME}_PORT_80_TCP_ADDR... for each Service of its namespace; the chart's
    are named kiln-*, so those begin with KILN_. A live cluster crashed every Kiln pod on them."""
    root = workspace(tmp_path)
    for name, value in {"KILN_CAPTURE_SERVICE_HOST": "10.96.0.7", "KILN_CAPTURE_SERVICE_PORT": "80",
                        "KILN_CAPTURE_SERVICE_PORT_HTTP": "80", "KILN_CAPTURE_PORT": "tcp://10.96.0.7:80",
                        "KILN_CAPTURE_PORT_80_TCP": "tcp://10.96.0.7:80", "KILN_CAPTURE_PORT_80_TCP_PROTO": "tcp",
                        "KILN_CAPTURE_PORT_80_TCP_PORT": "80", "KILN_CAPTURE_PORT_80_TCP_ADDR": "10.96.0.7"}.items():
        monkeypatch.setenv(name, value)
    assert load_settings(root).profile == "local"
    monkeypatch.setenv("KILN_CAPTURE_SERVICE_HOSTNAME", "typo")  # anything else with KILN_ still is refused by name
    with pytest.raises(SettingsError, match="KILN_CAPTURE_SERVICE_HOSTNAME"):
        load_settings(root)
