"""The files of docs/deploy.md agree with the service they deploy and with the guide itself:
timeouts, paths and ports that must match the code's, and the guide's copies of each file.
(tests/test_deploy_nginx.py runs the nginx site for real.)"""

from __future__ import annotations

import re
from pathlib import Path

from diagnoxix.app import SHUTDOWN_GRACE_SECONDS
from diagnoxix.config import Settings
from diagnoxix.edge.server import SHUTDOWN_LIMIT_SECONDS

REPO_ROOT = Path(__file__).resolve().parent.parent
SITE = REPO_ROOT / "deploy" / "nginx" / "diagnoxix.conf"
UNIT = REPO_ROOT / "deploy" / "systemd" / "diagnoxix-notify.service"
ENV_FILE = REPO_ROOT / "deploy" / "systemd" / "diagnoxix-notify.env"
WRAPPER = REPO_ROOT / "deploy" / "bin" / "diagnoxix-notify"
JOURNALD = REPO_ROOT / "deploy" / "journald" / "diagnoxix-notify.conf"
DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"


def _directives(text: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;\n{{]+);", text, flags=re.MULTILINE)


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)?", value.strip())
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def _unit() -> dict[str, str]:
    lines = UNIT.read_text(encoding="utf-8").splitlines()
    return {
        key: value for key, _, value in (line.partition("=") for line in lines) if value and key[:1].isupper()
    }


def _env() -> dict[str, str]:
    lines = ENV_FILE.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line[:1].isupper())


def test_the_nginx_site_fits_the_service() -> None:
    settings = Settings()
    site = SITE.read_text(encoding="utf-8")
    # Sockets idle but for the service's pings must outlive nginx's timeouts.
    timeouts = _directives(site, "proxy_read_timeout") + _directives(site, "proxy_send_timeout")
    assert len(timeouts) == 4  # both sockets' locations
    for timeout in timeouts:
        assert _seconds(timeout) >= 2 * settings.ws_heartbeat_seconds
    # nginx lets an idle upstream connection go before the service does.
    (keepalive,) = _directives(site, "keepalive_timeout")
    assert _seconds(keepalive) < settings.http_header_timeout_seconds
    # The proxy sets the forwarding headers, never appends to what a client sent.
    headers = dict(h.split(None, 1) for h in _directives(site, "proxy_set_header"))
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    # Oversized bodies reach the service, which answers in its JSON error shape.
    (body,) = _directives(site, "client_max_body_size")
    assert int(body.rstrip("m")) * 1024 * 1024 > settings.max_body_bytes


def test_the_unit_its_settings_and_the_wrapper_fit_together() -> None:
    unit, env = _unit(), _env()
    (upstream,) = _directives(SITE.read_text(encoding="utf-8"), "server")
    python, run_py, *flags = unit["ExecStart"].split()
    option = dict(zip(flags[::2], flags[1::2], strict=True))
    assert upstream == f"{option['--host']}:{option['--port']}"
    # The database lives in the one directory the sandbox lets the service write.
    data = Path(env["DIAGNOXIX_DB"]).parent
    assert data == Path("/var/lib") / unit["StateDirectory"]
    assert unit["ReadWritePaths"] == str(data)
    # systemd waits for the graceful shutdown before it kills, and for the server's own limit on a
    # stuck one, so the journal says what held it.
    assert _seconds(unit["TimeoutStopSec"]) >= 2 * SHUTDOWN_GRACE_SECONDS
    assert _seconds(unit["TimeoutStopSec"]) > SHUTDOWN_LIMIT_SECONDS
    assert env["DIAGNOXIX_TRUSTED_PROXIES"] == "127.0.0.1"
    # The command line runs as the same user, the same code, with the same settings.
    wrapper = WRAPPER.read_text(encoding="utf-8")
    assert f"--reuid={unit['User']} --regid={unit['Group']}" in wrapper
    assert f'{python} {run_py} "$@"' in wrapper.replace("\\\n   ", "")
    assert f". {unit['EnvironmentFile']}\n" in wrapper


def test_the_guide_shows_these_very_files() -> None:
    guide = DEPLOY_DOC.read_text(encoding="utf-8")
    for path in (SITE, UNIT, ENV_FILE, WRAPPER, JOURNALD):
        relative = path.relative_to(REPO_ROOT)
        block = re.search(rf"<!-- file: {re.escape(str(relative))} -->\n```\w*\n(.*?)```\n", guide, re.DOTALL)
        assert block, f"docs/deploy.md does not show {relative}"
        assert block.group(1) == path.read_text(encoding="utf-8"), (
            f"docs/deploy.md's copy of {relative} is stale"
        )
