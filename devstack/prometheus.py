"""A Prometheus server for the local stack: Debian's ``prometheus`` package (2.42, with
``promtool``), listening on 127.0.0.1, its data in ``.run/prometheus/data``, kept 2 days or
512 MB, whichever comes first.

The scrape config is generated on every start (:func:`render`): one job per process that
serves metrics, labelled ``process=<name>``, and Envoy's own metrics from its admin port,
every 5 s; it loads the alert and recording rules of ``observability/prometheus/``. A server
already running is told to reload it (``POST /-/reload``), so a re-run of ``up`` picks up new
worker replicas and edited rules.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from devstack import apt, procs
from devstack.paths import REPO_ROOT, RUN_DIR, ensure_run_dirs
from devstack.ports import HOST, current

NAME = "prometheus"
PACKAGE = "prometheus"
PROMETHEUS_ROOT = RUN_DIR / "prometheus"
DATA_DIR = PROMETHEUS_ROOT / "data"
CONFIG = PROMETHEUS_ROOT / "prometheus.yml"
RULES_DIR = REPO_ROOT / "observability" / "prometheus"
RULE_FILES = (RULES_DIR / "alerts.yml", RULES_DIR / "recording.yml")
RULE_TESTS = (RULES_DIR / "alerts_test.yml",)
SCRAPE_INTERVAL = "5s"
RETENTION_TIME = "2d"
RETENTION_SIZE = "512MB"
ENVOY_JOB = "envoy"
ENVOY_METRICS_PATH = "/stats/prometheus"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ensure_installed() -> Path:
    """Install Debian's prometheus if needed; return the server's binary."""
    return apt.ensure_executable("prometheus", PACKAGE)


def promtool() -> Path:
    """``promtool``, which comes with the same package."""
    return apt.ensure_executable("promtool", PACKAGE)


def scrape_config(
    targets: Sequence[tuple[str, str]],
    *,
    envoy_admin: str,
    rule_files: Sequence[Path] = RULE_FILES,
) -> dict[str, Any]:
    """The server's configuration: a job per ``(process name, host:port)`` of ``targets``
    and one for Envoy's admin address ``envoy_admin``, each labelled with its process."""
    jobs = [_job(name, address) for name, address in targets]
    jobs.append(_job(ENVOY_JOB, envoy_admin, metrics_path=ENVOY_METRICS_PATH))
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": "4s",
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": jobs,
    }


def _job(process: str, address: str, *, metrics_path: str = "/metrics") -> dict[str, Any]:
    return {
        "job_name": process,
        "metrics_path": metrics_path,
        "static_configs": [{"targets": [address], "labels": {"process": process}}],
    }


def render(
    targets: Sequence[tuple[str, str]],
    *,
    envoy_admin: str,
    out: Path = CONFIG,
    rule_files: Sequence[Path] = RULE_FILES,
) -> Path:
    """Write the configuration for ``targets`` (see :func:`scrape_config`) to ``out``."""
    config = scrape_config(targets, envoy_admin=envoy_admin, rule_files=rule_files)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_suffix(".tmp")
    staged.write_text(
        "# Written by devstack/prometheus.py at every `ordermesh up`: edits are lost.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    staged.replace(out)
    return out


def url(port: int | None = None) -> str:
    return f"http://{HOST}:{current().prometheus if port is None else port}"


def is_ready(port: int | None = None, timeout: float = 1.0) -> bool:
    try:
        with _NO_PROXY.open(f"{url(port)}/-/ready", timeout=timeout) as response:
            return int(response.status) == 200
    except OSError:
        return False


def start(config_path: Path = CONFIG, *, timeout: float = 60.0) -> None:
    """Start the server with ``config_path`` and wait until it is ready; a server already
    running reloads ``config_path`` instead (and fails loudly if it refuses it)."""
    binary = ensure_installed()
    port = current().prometheus
    if procs.is_running(NAME):
        _reload(port)
        return
    if not config_path.is_file():
        raise FileNotFoundError(f"prometheus config not found: {config_path}")
    procs.check_port_free(NAME, port, "ORDERMESH_PROMETHEUS_PORT")
    ensure_run_dirs()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        f"--config.file={config_path.resolve()}",
        f"--web.listen-address={HOST}:{port}",
        f"--storage.tsdb.path={DATA_DIR}",
        f"--storage.tsdb.retention.time={RETENTION_TIME}",
        f"--storage.tsdb.retention.size={RETENTION_SIZE}",
        # POST /-/reload: how a re-run of `up` hands over a new config. Loopback only.
        "--web.enable-lifecycle",
        "--log.format=json",
    ]
    procs.start_daemon(NAME, argv, cwd=PROMETHEUS_ROOT)
    procs.wait_until(lambda: is_ready(port), timeout, f"prometheus on {url(port)}", name=NAME)


def _reload(port: int) -> None:
    request = urllib.request.Request(f"{url(port)}/-/reload", method="POST")
    try:
        with _NO_PROXY.open(request, timeout=30):
            return
    except urllib.error.HTTPError as error:
        reason = error.read().decode(errors="replace").strip()
        raise procs.NotReadyError(f"prometheus refused its new config: {reason}") from None
    except OSError as error:
        raise procs.NotReadyError(f"prometheus on {url(port)} did not reload: {error}") from None


def stop(timeout: float = 20.0) -> bool:
    return procs.stop(NAME, timeout)


def check(config_path: Path, rule_tests: Sequence[Path] = RULE_TESTS) -> None:
    """``promtool check config`` (which loads the rule files it names), ``check rules`` and
    ``test rules``; raise with promtool's output if one fails."""
    tool = str(promtool())
    for argv in (
        [tool, "check", "config", str(config_path)],
        [tool, "check", "rules", *map(str, RULE_FILES)],
        [tool, "test", "rules", *map(str, rule_tests)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        print((done.stdout + done.stderr).rstrip(), flush=True)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` failed (exit {done.returncode})")
