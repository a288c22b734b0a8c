"""`load_settings`: flags > environment > TOML file > defaults, and errors that name the culprit."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sidecar.cli.config import ConfigError, Settings, load_settings, parse_address
from sidecar.process.server import default_workers, usable_cores


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "sidecar.toml"
    path.write_text('data_dir = "/from/toml"\ningress = "0.0.0.0:1111"\nadmin = "0.0.0.0:2222"\nadmin_insecure = true\n'
                    'retention_s = 60\n')
    return path


def test_defaults() -> None:
    assert load_settings(environ={}) == Settings()


def test_toml_beats_defaults(toml: Path) -> None:
    settings = load_settings(config_file=str(toml), environ={})
    assert (settings.data_dir, settings.ingress, settings.retention_s) == ("/from/toml", "0.0.0.0:1111", 60.0)
    assert settings.durability == Settings().durability


def test_env_beats_toml(toml: Path) -> None:
    environ = {"SIDECAR_INGRESS": "127.0.0.1:3333", "SIDECAR_INACTIVITY_TIMEOUT_S": "2.5",
               "SIDECAR_REGISTER": "http://a:1,http://b:2", "UNRELATED": "x"}
    settings = load_settings(config_file=str(toml), environ=environ)
    assert settings.ingress == "127.0.0.1:3333"
    assert settings.admin == "0.0.0.0:2222"  # from the file: the environment did not set it
    assert settings.inactivity_timeout_s == 2.5  # strings from the environment are converted
    assert settings.register == ["http://a:1", "http://b:2"]


def test_flags_beat_env_and_toml(toml: Path) -> None:
    settings = load_settings(
        config_file=str(toml), environ={"SIDECAR_INGRESS": "127.0.0.1:3333", "SIDECAR_DURABILITY": "none"},
        overrides={"ingress": "127.0.0.1:4444", "admin": None, "register": (), "retention_s": 5.0},
    )
    assert settings.ingress == "127.0.0.1:4444"
    assert settings.admin == "0.0.0.0:2222"  # None means "flag not given"
    assert settings.register == []  # an empty repeatable flag means "not given" too
    assert settings.durability == "none"
    assert settings.retention_s == 5.0


@pytest.mark.parametrize("admin, loopback", [
    ("127.0.0.1:9070", True), ("127.9.9.9:9070", True), ("localhost:9070", True), ("[::1]:9070", True),
    ("0.0.0.0:9070", False), ("[::]:9070", False), ("10.0.0.5:9070", False), ("sidecar.internal:9070", False),
])
def test_an_admin_api_beyond_loopback_needs_a_token_or_insecure(admin: str, loopback: bool) -> None:
    if loopback:
        assert load_settings(environ={"SIDECAR_ADMIN": admin}).admin == admin
    else:
        with pytest.raises(ConfigError, match="--admin-token"):
            load_settings(environ={"SIDECAR_ADMIN": admin})
    token = "x" * 16
    assert load_settings(environ={"SIDECAR_ADMIN": admin, "SIDECAR_ADMIN_TOKEN": token}).admin_token == token
    assert load_settings(environ={"SIDECAR_ADMIN": admin, "SIDECAR_ADMIN_INSECURE": "true"}).admin_insecure


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_DATA_DIR", "/from/env")
    assert load_settings().data_dir == "/from/env"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"environ": {"SIDECAR_DURABILITY": "sometimes"}}, "durability must be 'fsync' or 'none'"),
    ({"environ": {"SIDECAR_ADMIN": "localhost"}}, "admin must be HOST:PORT, not 'localhost'"),
    ({"overrides": {"ingress": "127.0.0.1:0"}}, "ingress must be HOST:PORT"),
    ({"overrides": {"ingress": ":8080"}}, "ingress must be HOST:PORT"),
    ({"environ": {"SIDECAR_RETENTION_S": "a day"}}, "retention_s"),
    ({"environ": {"SIDECAR_MAX_QUEUE_PER_KEY": "-1"}}, "max_queue_per_key must be 0 (no limit) or more, not -1"),
    ({"config_file": "/nonexistent/sidecar.toml"}, "cannot read config file /nonexistent/sidecar.toml"),
    ({"environ": {"SIDECAR_BLOB_THRESHOLD_BYTES": "10"}}, "blob_threshold_bytes must be 64 or more, not 10"),
    ({"overrides": {"max_payload_bytes": 0}}, "max_payload_bytes must be 1 or more, not 0"),
    ({"environ": {"SIDECAR_WARN_STATE_BYTES": "-5"}}, "warn_state_bytes must be 1 or more, not -5"),
])
def test_errors_name_the_setting(kwargs: dict, message: str) -> None:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(**kwargs)


def test_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("ingress = \n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(config_file=str(path), environ={})


def test_unknown_toml_field(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('data_dri = "/x"\n')
    with pytest.raises(ConfigError, match="data_dri"):
        load_settings(config_file=str(path), environ={})


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_address("[::1]:9070") == ("[::1]", 9070)
    assert parse_address("127.0.0.1:0", "mesh", any_port=True) == ("127.0.0.1", 0)
    with pytest.raises(ConfigError, match="admin must be HOST:PORT"):
        parse_address("127.0.0.1:http", "admin")


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no limit
    ({"cpu.max": "150000 100000\n"}, 2),  # --cpus 1.5: two workers, not one per host core
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),  # no cgroup files at all
])
def test_default_workers_follow_a_containers_cpu_quota(tmp_path: Path, files: dict[str, str],
                                                       expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    visible = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path) == (visible if expected is None else min(visible, expected))


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (3, 1), (4, 2), (6, 3), (8, 4), (16, 8), (64, 32)])
def test_the_default_worker_count_leaves_cores_to_the_handler_services(cores: int, workers: int) -> None:
    """Below 4 cores a second worker only adds mesh hops on cores the handler service and the
    clients need; from 4 on, half of the cores go to workers."""
    assert default_workers(cores) == workers
