"""``mmbot status``: the view of a running node, read from its metrics endpoint (mmbot/live/status.py).

Exit status: 0 shown; 2 bad arguments; 3 nothing answers at the address, or what answers exposes no
mmbot metrics (one ``error:`` line either way).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import click

DEFAULT_PORT = 9464  # [live] metrics_port of the shipped configs
EXIT_UNREACHABLE = 3


def _base_url(url: str | None, port: int | None) -> str:
    from mmbot.cli.main import fail

    if url is not None and port is not None:
        fail("--url and --port: give one of them")
    if url is None:
        if port is not None and not 1 <= port <= 65535:
            fail(f"--port {port}: must be 1..65535")
        return f"http://127.0.0.1:{port or DEFAULT_PORT}"
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        fail(f"--url {url}: bad port")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        fail(f"--url {url}: expected http://HOST:PORT (the node's metrics address)")
    path = parts.path.rstrip("/")
    if path.endswith("/metrics"):
        path = path[: -len("/metrics")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 (http(s) only, checked above)
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


@click.command("status")
@click.option("--url", default=None, help="Metrics address of the node, e.g. http://127.0.0.1:9464.")
@click.option("--port", type=int, default=None,
              help=f"Port on 127.0.0.1 (default {DEFAULT_PORT}, the shipped configs' [live] metrics_port).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1, max=60), default=3.0, show_default=True,
              help="Seconds to wait for the answer.")
def status(url, port, as_json, timeout_s) -> None:
    """Position, PnL, working quotes, guard states, fills and book age of a running mmbot live/shadow node.

    The same view as the node's console status line, read from its /metrics (and /ready) endpoint
    (docs/runbook.md "Console and mmbot status")."""
    from mmbot.cli.main import fail
    from mmbot.live.status import format_block, parse_views

    base = _base_url(url, port)
    try:
        code, text = _get(base + "/metrics", timeout_s)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        fail(f"nothing answers at {base}/metrics ({reason}): is mmbot live running with its metrics port there "
             "([live] metrics_port or --metrics-port)?", EXIT_UNREACHABLE)
    views = parse_views(text) if code == 200 else []
    if not views:
        fail(f"{base}/metrics answered HTTP {code} without mmbot metrics (no mmbot_info series): not an mmbot node?",
             EXIT_UNREACHABLE)
    ready = None
    try:
        _, body = _get(base + "/ready", timeout_s)
        ready = json.loads(body)
    except (urllib.error.URLError, OSError, ValueError):
        ready = None
    if as_json:
        click.echo(json.dumps({"url": base, "ready_detail": ready, "nodes": views}, indent=2, sort_keys=True))
        return
    click.echo("\n\n".join(format_block(v, base, ready if isinstance(ready, dict) else None) for v in views))
    sys.stdout.flush()


def register(main: click.Group) -> None:
    main.add_command(status)
