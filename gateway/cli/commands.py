"""The ``visual-runtime`` commands that talk to a running gateway.

``sessions list|create|get|stop|delete|open|revoke``, ``logs [--follow]`` and
``recording -o FILE``. Where the gateway is and which token to use:

* URL: ``--url``, else ``VISUAL_RUNTIME_URL``, else the URL a gateway wrote to
  ``<state dir>/gateway-url`` when it started, else ``http://127.0.0.1:3000``;
* token: ``--token``, else ``VISUAL_RUNTIME_TOKEN``, else
  ``<state dir>/api-token`` (``--state-dir``/``VISUAL_RUNTIME_STATE_DIR``,
  default ``state``).

Human-readable output by default; ``--json`` prints the gateway's JSON (one
object, or NDJSON for ``logs``) and, on errors, its problem document. Progress
goes to stderr (see :mod:`gateway.cli.progress`). Exit status: 0 success, 1 the
gateway refused or could not be reached, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import webbrowser
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from gateway.cli.progress import Progress, human_bytes
from gateway.config import env_default
from visual_runtime_client.client import (
    TERMINAL_STATUSES,
    ApiError,
    ClientError,
    RemoteSession,
    TransportError,
    VisualRuntimeClient,
    error_from_response,
)

__all__ = ["URL_FILE", "add_client_commands", "resolve_token", "resolve_url"]

DEFAULT_URL = "http://127.0.0.1:3000"
URL_FILE = "gateway-url"
"""File in the state dir where ``serve`` leaves its base URL for the client commands."""
API = "/api/visual-sessions"


class UsageError(Exception):
    """A problem with how the command was called (exit status 2)."""


# --------------------------------------------------------------- settings
def add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=env_default("url", None),
                   help=f"gateway base URL (env VISUAL_RUNTIME_URL; default: <state dir>/"
                        f"{URL_FILE}, else {DEFAULT_URL})")
    p.add_argument("--token", default=env_default("token", None),
                   help="API token (env VISUAL_RUNTIME_TOKEN; default: <state dir>/api-token)")
    p.add_argument("--state-dir", type=Path,
                   default=Path(env_default("state_dir", "state") or "state"),
                   help="the gateway's state dir, for its URL and token (env "
                        "VISUAL_RUNTIME_STATE_DIR)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--progress", action="store_true",
                   help="draw progress bars on stderr even when it is not a terminal")


def resolve_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    try:
        url = (Path(args.state_dir) / URL_FILE).read_text().strip()
    except OSError:
        url = ""
    return (url or DEFAULT_URL).rstrip("/")


def resolve_token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    path = Path(args.state_dir) / "api-token"
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise UsageError(f"no API token: pass --token, set VISUAL_RUNTIME_TOKEN, or point "
                         f"--state-dir at the gateway's state dir ({path}: {e.strerror})") from e
    if not token:
        raise UsageError(f"{path} is empty; pass --token")
    return token


# ----------------------------------------------------------------- output
def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _short_time(value: object) -> str:
    text = str(value or "-")
    return text.replace("T", " ")[:19] if text != "-" else text


def session_rows(sessions: list[dict[str, Any]]) -> str:
    rows = []
    for s in sessions:
        error = str(s.get("error") or "")
        rows.append([str(s["session_id"]), str(s["status"]), str(s.get("resolution", "")),
                     str(s.get("backend", "")), str(s.get("controller", "")),
                     str(s.get("viewers", 0)), _short_time(s.get("created_at")),
                     error if len(error) <= 60 else error[:57] + "..."])
    return table(rows, ["SESSION", "STATUS", "RESOLUTION", "BACKEND", "CONTROL", "VIEWERS",
                        "CREATED (UTC)", "ERROR"])


def session_details(s: dict[str, Any], base: str) -> str:
    keys = ["status", "stop_reason", "backend", "resolution", "network", "controller",
            "viewers", "timeout_minutes", "idle_timeout_minutes", "enable_recording",
            "enable_file_transfer", "start_url", "created_at", "started_at", "expires_at",
            "ended_at", "error"]
    lines = [f"session {s['session_id']}"]
    for k in keys:
        if k in s and s[k] is not None:
            lines.append(f"  {k + ':':<22}{s[k]}")
    for name, path in (s.get("urls") or {}).items():
        lines.append(f"  {('url ' + name + ':'):<22}{base}{path}")
    return "\n".join(lines)


def format_log_entry(entry: dict[str, Any]) -> str:
    """One line of ``logs`` for people: time, kind, then the rest."""
    if entry.get("type") == "log":
        return f"{entry.get('source', '?'):<5} | {entry.get('line', '')}"
    ts = _short_time(entry.get("ts"))
    rest = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                    for k, v in entry.items() if k not in ("id", "ts", "type"))
    return f"event | {ts}  {entry.get('type', '?'):<14} {rest}".rstrip()


# ---------------------------------------------------------------- running
def _run(args: argparse.Namespace,
         body: Callable[[VisualRuntimeClient, argparse.Namespace], Awaitable[int]]) -> int:
    """Run *body* with a client; map the client's errors onto messages and exit codes."""
    try:
        token = resolve_token(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = resolve_url(args)

    async def main() -> int:
        async with VisualRuntimeClient(base, token) as client:
            return await body(client, args)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ApiError as e:
        if args.json:
            _print_json(e.problem)
        else:
            print(f"error: {e.status} {e.title}: {e.detail}", file=sys.stderr)
            for err in e.problem.get("errors", []) or []:
                if isinstance(err, dict):
                    print(f"  {err.get('field')}: {err.get('message')}", file=sys.stderr)
        return 1
    except (TransportError, aiohttp.ClientError, TimeoutError) as e:
        reason = str(e) or type(e).__name__
        detail = (f"cannot reach the gateway at {base}: {reason}. Is `visual-runtime serve` "
                  f"running? Check with `curl {base}/healthz` and `visual-runtime doctor`.")
        if args.json:
            _print_json({"type": "about:blank", "title": "Gateway unreachable",
                         "status": None, "detail": detail})
        else:
            print(f"error: {detail}", file=sys.stderr)
        return 1
    except (ClientError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


async def wait_until_started(session: RemoteSession, args: argparse.Namespace,
                             timeout: float) -> dict[str, Any]:
    """Follow the session until it is past ``starting`` (progress on stderr)."""
    progress = Progress(f"session {session.session_id}", force_bar=args.progress)
    progress.set_state(str(session.info.get("status") or "starting"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            task = asyncio.create_task(session.refresh(wait=True))
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=0.1)
                    progress.tick()
                info = task.result()
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            progress.set_state(str(info.get("status")))
            if info.get("status") != "starting" or loop.time() > deadline:
                return info
    finally:
        status = session.info.get("status")
        progress.finish(f"session {session.session_id}: {status} after "
                        f"{progress.elapsed:.1f} s", plain=False)


# --------------------------------------------------------------- sessions
async def sessions_list(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    path = API + (f"?status={args.status}" if args.status else "")
    data = await client.request("GET", path)
    if args.json:
        _print_json(data)
    elif not data["sessions"]:
        print("no sessions")
    else:
        print(session_rows(data["sessions"]))
    return 0


async def sessions_create(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    for name in ("resolution", "timeout_minutes", "idle_timeout_minutes", "network",
                 "start_url"):
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    if args.no_recording:
        body["enable_recording"] = False
    if args.no_file_transfer:
        body["enable_file_transfer"] = False
    created = await client.request("POST", API, json_body=body)
    session = RemoteSession(client, created)
    info = created
    if args.wait:
        info = await wait_until_started(session, args, args.wait_timeout)
    tokens = session.tokens or {}
    if args.json:
        _print_json({**info, "tokens": tokens})
    else:
        print(session_details(info, client.base_url))
        print(f"  {'viewer (control):':<22}{session.viewer_url('control')}")
        print(f"  {'viewer (watch only):':<22}{session.viewer_url('view')}")
        print("  (the tokens are shown only now; `visual-runtime sessions open ID` mints more)")
    return 1 if info.get("status") == "failed" else 0


async def sessions_get(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    data = await client.request("GET", f"{API}/{args.id}")
    if args.json:
        _print_json(data)
    else:
        print(session_details(data, client.base_url))
    return 0


async def sessions_stop(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    data = await client.request("POST", f"{API}/{args.id}/stop", timeout=120)
    if args.json:
        _print_json(data)
    else:
        print(f"{data['session_id']}  {data['status']} ({data.get('stop_reason')})")
    return 0


async def sessions_delete(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    await client.request("DELETE", f"{API}/{args.id}", timeout=120)
    if args.json:
        _print_json({"session_id": args.id, "deleted": True})
    else:
        print(f"{args.id}  deleted (with its recording and files)")
    return 0


def browser_available() -> bool:
    """A graphical browser can be opened: ``$BROWSER``, or a display and a known browser."""
    if os.environ.get("BROWSER"):
        return True
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
            and sys.platform != "darwin":
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


async def sessions_open(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    kind = "view" if args.view else "control"
    minted = await client.request("POST", f"{API}/{args.id}/tokens", json_body={"kind": kind})
    url = client.base_url + minted["viewer_url"]
    opened = False
    if not args.no_browser and browser_available():
        opened = await asyncio.to_thread(webbrowser.open, url)
    if args.json:
        _print_json({"session_id": args.id, "kind": kind, "token": minted["token"],
                     "token_id": minted.get("token_id"), "url": url, "opened": opened})
    else:
        print(url)
        note = ("opened in your browser" if opened else
                "open it in a browser (no browser was started)")
        print(f"{kind} link for session {args.id}: {note}", file=sys.stderr)
    return 0


async def sessions_revoke(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    done = await client.session(args.id).revoke_token(args.revoked)
    if args.json:
        _print_json({"session_id": args.id, **dataclasses.asdict(done)})
    else:
        extra = ", control went back to the agent" if done.released_control else ""
        print(f"{done.kind} token {done.token_id} of session {args.id} revoked "
              f"({done.closed} open connection(s) closed{extra})")
    return 0


# ------------------------------------------------------------------- logs
async def _fetch_logs(client: VisualRuntimeClient, sid: str) -> list[dict[str, Any]]:
    body: bytes = await client.request("GET", f"{API}/{sid}/logs", expect="bytes",
                                       timeout=120)
    entries = []
    for line in body.decode(errors="replace").splitlines():
        if line.strip():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
    return entries


class _LogPrinter:
    """Prints each log entry once, however often the log is fetched again."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.printed: Counter[str] = Counter()
        self.last_event_id = 0

    def show(self, entries: list[dict[str, Any]]) -> None:
        seen: Counter[str] = Counter()
        for entry in entries:
            key = json.dumps(entry, sort_keys=True)
            seen[key] += 1
            if seen[key] <= self.printed[key]:
                continue
            self.printed[key] += 1
            if isinstance(entry.get("id"), int):
                self.last_event_id = max(self.last_event_id, entry["id"])
            print(json.dumps(entry) if self.as_json else format_log_entry(entry), flush=True)


async def logs(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    printer = _LogPrinter(args.json)
    printer.show(await _fetch_logs(client, args.id))
    if not args.follow:
        return 0
    session = client.session(args.id)
    if (await session.refresh()).get("status") in TERMINAL_STATUSES:
        return 0
    wake = asyncio.Event()
    ended = asyncio.Event()

    async def watch_events() -> None:
        try:
            async for event in session.events(last_event_id=printer.last_event_id):
                wake.set()
                if event.type == "status" and event.data.get("status") in TERMINAL_STATUSES:
                    break
        finally:
            ended.set()

    watcher = asyncio.create_task(watch_events())
    try:
        while not ended.is_set():
            # New events wake us at once; process output is picked up every 2 s.
            # (asyncio.timeout, not wait_for: Python 3.11's wait_for loses a Ctrl+C's
            # cancellation when the event is set at the same moment, and this ran on.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await wake.wait()
            wake.clear()
            printer.show(await _fetch_logs(client, args.id))
        if watcher.done() and watcher.exception() is not None:
            raise watcher.exception()  # type: ignore[misc]
        printer.show(await _fetch_logs(client, args.id))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return 0


# -------------------------------------------------------------- recording
async def recording(client: VisualRuntimeClient, args: argparse.Namespace) -> int:
    out = Path(args.output or f"{args.id}.mp4")
    url = f"{client.base_url}{API}/{args.id}/recording"
    tmp = out.with_name(out.name + ".part")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    async with client.http.get(url, headers={"Authorization": f"Bearer {client.token}"},
                               timeout=timeout) as resp:
        if resp.status >= 400:
            raise error_from_response(resp.status, await resp.read(), resp.headers)
        total = resp.content_length
        progress = Progress(f"recording {args.id}", total=total, force_bar=args.progress)
        size = 0
        try:
            with tmp.open("wb") as f:
                async for chunk in resp.content.iter_chunked(1 << 16):
                    await asyncio.to_thread(f.write, chunk)
                    size += len(chunk)
                    progress.update(size)
            if total is not None and size != total:
                raise TransportError(f"the download broke off after {size} of {total} bytes")
            tmp.replace(out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            progress.finish(f"recording {args.id}: download failed after "
                            f"{human_bytes(size)}")
            raise
        progress.finish(f"recording {args.id}: {human_bytes(size)} in "
                        f"{progress.elapsed:.1f} s")
    if args.json:
        _print_json({"session_id": args.id, "path": str(out), "bytes": size,
                     "content_type": resp.content_type})
    else:
        print(f"saved {human_bytes(size)} ({size} bytes) to {out}")
    return 0


# ---------------------------------------------------------------- parsers
def _cmd(body: Callable[[VisualRuntimeClient, argparse.Namespace], Awaitable[int]]
         ) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return _run(args, body)
    return run


def add_client_commands(sub: Any) -> None:
    """Add ``sessions``, ``logs`` and ``recording`` to the CLI's subparsers."""
    sessions = sub.add_parser("sessions", help="manage the sessions of a running gateway")
    ops = sessions.add_subparsers(dest="op", required=True, metavar="COMMAND")

    p = ops.add_parser("list", help="a table of the sessions")
    p.add_argument("--status", choices=("starting", "running", "stopping", "stopped",
                                        "expired", "failed"))
    add_client_flags(p)
    p.set_defaults(func=_cmd(sessions_list))

    p = ops.add_parser("create", help="create a session (prints its viewer links)")
    p.add_argument("--resolution", help="WxH, e.g. 1280x800 (default 1600x900)")
    p.add_argument("--timeout-minutes", type=int)
    p.add_argument("--idle-timeout-minutes", type=int)
    p.add_argument("--network", choices=("egress", "none"))
    p.add_argument("--start-url", help="http(s) URL Chromium opens")
    p.add_argument("--no-recording", action="store_true")
    p.add_argument("--no-file-transfer", action="store_true")
    p.add_argument("--wait", action="store_true",
                   help="wait until the session runs (or fails), showing progress")
    p.add_argument("--wait-timeout", type=float, default=90.0, help="seconds (default 90)")
    add_client_flags(p)
    p.set_defaults(func=_cmd(sessions_create))

    for name, func, help_ in (
            ("get", sessions_get, "one session's details"),
            ("stop", sessions_stop, "stop a session (keeps its recording and logs)"),
            ("delete", sessions_delete, "stop a session and delete its recording and files")):
        p = ops.add_parser(name, help=help_)
        p.add_argument("id", metavar="ID")
        add_client_flags(p)
        p.set_defaults(func=_cmd(func))

    p = ops.add_parser("open", help="print a viewer link with a fresh control token and "
                                    "open it in a browser when there is one")
    p.add_argument("id", metavar="ID")
    p.add_argument("--view", action="store_true", help="a watch-only link (view token)")
    p.add_argument("--no-browser", action="store_true", help="only print the link")
    add_client_flags(p)
    p.set_defaults(func=_cmd(sessions_open))

    p = ops.add_parser("revoke", help="revoke a view or control token at once (its viewers "
                                      "are closed, control it held goes back to the agent)")
    p.add_argument("id", metavar="ID")
    p.add_argument("revoked", metavar="TOKEN", help="the token, or its token_id")
    add_client_flags(p)
    p.set_defaults(func=_cmd(sessions_revoke))

    p = sub.add_parser("logs", help="a session's events and process logs")
    p.add_argument("id", metavar="ID")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing until the session ends (Ctrl+C to stop)")
    add_client_flags(p)
    p.set_defaults(func=_cmd(logs))

    p = sub.add_parser("recording", help="download a session's recording (MP4, H.264)")
    p.add_argument("id", metavar="ID")
    p.add_argument("-o", "--output", help="file to write (default: <ID>.mp4)")
    add_client_flags(p)
    p.set_defaults(func=_cmd(recording))
