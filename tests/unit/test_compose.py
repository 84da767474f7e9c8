"""compose.yaml and deploy/ as an operator would rely on them (Docker is not available here).

The file is read as Docker Compose reads it (YAML with merge keys) and checked for what a broken
deployment would get wrong: a service that cannot start, a worker that cannot reach ZFS, a Redis
that forgets jobs on restart, a secret typed into the file, a setting name zfleet does not know,
an admin port open to the world, a Prometheus that scrapes nothing.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import coordinator.metrics
from app.cli.common import FLEET_CONFIG_ENV
from coordinator.config import load_config
from protocol.settings import CONFIG_ENV, ENV_PREFIX, Settings
from tests.conftest import need_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SECRET_WORDS = ("SECRET", "PASSWORD", "PASSPHRASE", "TOKEN", "KEY")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in compose["services"].items()}


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in services.items() if k.startswith("worker-")}


def env_names() -> set[str]:
    """Every ZFLEET_* variable zfleet reads: the settings, their *_FILE forms, the config paths."""
    names = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    secrets = {f.name for f in dataclasses.fields(Settings) if "Secret" in str(f.type)}
    names |= {ENV_PREFIX + s.upper() + "_FILE" for s in secrets}
    return names | {CONFIG_ENV, FLEET_CONFIG_ENV}


def existing(path: str) -> bool:
    """A file the deployment needs: present, or (for secrets) its committed .example template."""
    p = ROOT / path
    return p.exists() or Path(str(p) + ".example").exists()


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for f in service.get("env_file", []):
        path = ROOT / (f if isinstance(f, str) else f["path"])
        if not path.exists():
            path = Path(str(path) + ".example")
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                k, _, v = line.partition("=")
                env[k.strip()] = v.strip()
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env.update({k: str(v) for k, v in raw.items()})
    return env


def test_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    for name in ("redis", "coordinator", "metrics", "flower", "store", "prometheus"):
        assert name in services, f"compose.yaml lacks the {name} service"
    assert len(workers(services)) >= 2, "one worker per host: at least two hosts"


def test_every_service_can_start(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name} has neither image nor build"
        build = svc.get("build")
        if build:
            ctx = ROOT / build["context"]
            assert ctx.is_dir(), f"{name}: build context {ctx} missing"
            assert (ctx / build["dockerfile"]).is_file(), f"{name}: Dockerfile missing"


def test_dockerfile_installs_the_locked_package() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    for copied in ("uv.lock", "protocol", "coordinator", "workers"):
        assert re.search(rf"^COPY .*\b{copied}\b", text, re.M), f"Dockerfile never copies {copied}"
    assert "--frozen" in text, "the image must install exactly the lock file's versions"
    assert "zfsutils-linux" in text


def test_workers_reach_zfs(services: dict[str, dict[str, Any]]) -> None:
    fleet = load_config(ROOT / "deploy" / "fleet.toml")
    for name, svc in workers(services).items():
        assert svc.get("privileged") is True, f"{name} must be privileged for ZFS ioctls"
        devices = [d.split(":")[0] for d in svc.get("devices", [])]
        assert "/dev/zfs" in devices, f"{name} lacks /dev/zfs"
        binds = [v for v in svc["volumes"] if isinstance(v, dict) and v.get("type") == "bind"]
        assert binds, f"{name} has no pool mount"
        for b in binds:
            assert b["bind"]["propagation"] == "rshared", f"{name}: {b['target']} not rshared"
        cmd = svc["command"]
        host = cmd[cmd.index("--host") + 1]
        assert host in fleet.hosts, f"{name} runs host {host!r}, unknown to deploy/fleet.toml"
        assert svc.get("hostname") == host


def test_redis_persists(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command, "jobs must survive a Redis restart (AOF)"
    data = [v for v in redis["volumes"] if v.split(":")[1] == "/data"]
    assert data, "Redis's /data must be a volume"
    assert data[0].split(":")[0] in compose["volumes"], "Redis's volume must be a named volume"
    assert "--dir /data" in command


def test_referenced_files_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    missing = []
    for name, svc in services.items():
        for f in svc.get("env_file", []):
            path = f if isinstance(f, str) else f["path"]
            if not existing(path):
                missing.append(f"{name}: env_file {path}")
        for v in svc.get("volumes", []):
            source = v["source"] if isinstance(v, dict) else v.split(":")[0]
            if source.startswith("./") and not (ROOT / source).exists():
                missing.append(f"{name}: volume {source}")
    for name, secret in compose["secrets"].items():
        path = secret["file"]
        # certificates come from `zfleet ca`, the rest from committed .example templates
        if not existing(path) and "/ca/" not in path:
            missing.append(f"secret {name}: {path}")
    assert not missing, missing


def test_every_secret_used_is_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["secrets"])
    for name, svc in services.items():
        for s in svc.get("secrets", []):
            source = s if isinstance(s, str) else s["source"]
            assert source in declared, f"{name} uses undeclared secret {source}"


def test_certificates_are_per_host(compose: dict[str, Any], services: dict[str, Any]) -> None:
    for name, svc in workers(services).items():
        host = svc["hostname"]
        sources = {s["source"] for s in svc["secrets"] if isinstance(s, dict)}
        files = {compose["secrets"][s]["file"] for s in sources}
        assert files == {f"deploy/secrets/ca/{host}.crt", f"deploy/secrets/ca/{host}.key"}, name
        env = env_of(svc)
        assert env["ZFLEET_TLS_CERT"].startswith("/run/secrets/")
        assert env["ZFLEET_TLS_CA"].startswith("/run/secrets/")


def test_env_names_are_zfleet_settings(services: dict[str, Any]) -> None:
    known = env_names()
    for name, svc in services.items():
        for var in env_of(svc):
            if var.startswith(ENV_PREFIX):
                assert var in known, f"{name}: {var} is not a zfleet setting"


def test_no_secret_inline(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        raw = svc.get("environment", {})
        for var, value in raw.items():
            if any(w in var for w in SECRET_WORDS) and not var.endswith("_FILE"):
                assert str(value).startswith("/run/secrets/"), f"{name}: {var} inline"
    text = COMPOSE.read_text()
    assert "redis://:" not in text, "a Redis password in compose.yaml"


def test_ports_bind_as_intended(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for port in svc.get("ports", []):
            parts = str(port).split(":")
            if name.startswith("worker-"):
                # peers on other hosts connect to the data plane: published on all addresses,
                # on the port the stream server binds
                cmd = svc["command"]
                bind = cmd[cmd.index("--stream-bind") + 1]
                assert parts == [bind.split(":")[1]] * 2, f"{name}: {port} vs {bind}"
            else:
                assert parts[0] == "127.0.0.1", f"{name}: {port} must bind 127.0.0.1 only"


def test_stream_addresses_match_the_fleet_config(services: dict[str, Any]) -> None:
    fleet = load_config(ROOT / "deploy" / "fleet.toml")
    for svc in workers(services).values():
        host = fleet.hosts[svc["hostname"]]
        cmd = svc["command"]
        bind_port = cmd[cmd.index("--stream-bind") + 1].rsplit(":", 1)[1]
        assert host.stream_address is not None
        assert host.stream_address.rsplit(":", 1)[1] == bind_port


def test_prometheus_scrapes_the_metrics_ports(services: dict[str, Any]) -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = [
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    scraped = {t.split(":")[0]: int(t.split(":")[1]) for t in targets}
    exposing = {
        n: int(env_of(s)["ZFLEET_METRICS_PORT"])
        for n, s in services.items()
        if "ZFLEET_METRICS_PORT" in env_of(s)
    }
    assert exposing, "no service exposes metrics"
    for name, port in exposing.items():
        assert scraped.get(name) == port, f"prometheus does not scrape {name}:{port}"
    rule_files = prom.get("rule_files", [])
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    for rf in rule_files:
        assert rf in mounted, f"rule file {rf} is not mounted"
        rules = yaml.safe_load((ROOT / mounted[rf]).read_text())
        assert rules["groups"][0]["rules"], "alert rules are empty"
    assert mounted["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"


def test_alert_rules_pass_promtool() -> None:
    promtool = need_binary("promtool")
    done = subprocess.run([promtool, "check", "rules", str(ROOT / "deploy" / "alerts.yml")],
                          check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_use_series_zfleet_exports() -> None:
    exported = set(re.findall(r"``(zfleet_[a-z_]+)", coordinator.metrics.__doc__ or ""))
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    for rule in rules["groups"][0]["rules"]:
        for name in re.findall(r"\b(zfleet_[a-z_]+)", rule["expr"]):
            assert name in exported, f"alert {rule['alert']} uses {name}, which nothing exports"
