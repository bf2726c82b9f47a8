"""Property-based fuzzing of the whole API from its own OpenAPI document.

Schemathesis turns every operation of the live ``/api/openapi.json`` into a
Hypothesis strategy, in both modes (``positive``: requests the document says
are valid; ``negative``: requests that break it). Each case is sent to an
in-process gateway with the real local backend and a real running session,
with a token drawn from {API, view, control, another session's, garbage,
none}, so the fuzzer gets past authentication as often as it is stopped by it.

Every response must be:

* below 500;
* ``application/problem+json`` with a matching ``status`` when it is an error;
* free of tracebacks, exception reprs and internal paths (``/work/``,
  ``/run/``, the state dir) — unless the request itself carried that text
  (error details quote the offending value).

The run is bounded (``VR_FUZZ_EXAMPLES`` examples per operation and mode,
derandomised, no example database) and prints the number of cases tried.
Sessions the fuzzer creates are stopped at once; at the end no pod process
may be left.

The second test sends malformed SDP offers to WHEP and then checks that a
real aiortc viewer still gets frames from the same session.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.gateway_fixtures import Gateway, in_process_gateway, wait_no_pod_processes
from tests.webrtc.whep_client import Typist, WhepViewer

EXAMPLES = int(os.environ.get("VR_FUZZ_EXAMPLES", "30"))
"""Examples per operation and generation mode."""

_SESSION_OPS_DESTRUCTIVE = {("DELETE", "/api/visual-sessions/{session_id}"),
                            ("POST", "/api/visual-sessions/{session_id}/stop")}
_LEAK_PATTERNS = ("Traceback (most recent call last)", 'File "/', "/work/", "/run/", "/tmp/",
                  "site-packages", "<class '", " object at 0x")
_EXCEPTION_REPR = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception)\(")
_BINARY_TYPES = ("image/png", "video/mp4", "application/octet-stream")
"""Bodies that are the session's own data (pixels, recordings, shared files)."""

_WHO = ("api", "api", "api", "control", "control", "view", "other", "garbage", "none")
"""Which token a case carries (weighted towards getting past authentication)."""

schemathesis.serializer.alias(["application/sdp", "application/trickle-ice-sdpfrag"],
                              "text/plain")


@dataclass
class FuzzContext:
    base_url: str
    state_dir: Path
    api: str
    view: str
    control: str
    other_view: str
    live: str
    ended: str
    created: list[str] = field(default_factory=list)
    cases: int = 0
    operations: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    per_operation_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tokens(self) -> dict[str, str | None]:
        return {"api": self.api, "view": self.view, "control": self.control,
                "other": self.other_view, "garbage": "not-a-token", "none": None}


def _leaks(text: str, sent: str, state_dir: Path) -> list[str]:
    found = []
    for pattern in (*_LEAK_PATTERNS, str(state_dir)):
        if pattern in text and pattern not in sent:
            found.append(pattern)
    for match in _EXCEPTION_REPR.finditer(text):
        if match.group(0) not in sent:
            found.append(match.group(0))
    return found


def _check(ctx: FuzzContext, label: str, request: requests.PreparedRequest,
           resp: requests.Response, body: bytes) -> None:
    status = resp.status_code
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    problems = []
    if status >= 500:
        problems.append(f"server error {status}")
    if status >= 400:
        if ctype != "application/problem+json":
            problems.append(f"error with Content-Type {ctype!r}")
        else:
            try:
                doc = json.loads(body)
                if doc.get("status") != status or not doc.get("type") or not doc.get("title"):
                    problems.append(f"problem document does not match: {doc}")
            except ValueError:
                problems.append("problem+json body is not JSON")
    if ctype == "application/x-ndjson":
        # the session's own process logs (sandbox paths such as /run/vr are theirs to
        # print); only the gateway's host paths must not appear
        text = body.decode("utf-8", "replace")
        if str(ctx.state_dir) in text:
            problems.append("leaks the state dir")
    elif ctype not in _BINARY_TYPES:
        sent = f"{request.url} {dict(request.headers)} "
        if request.body:
            raw = request.body if isinstance(request.body, bytes) else str(request.body).encode()
            sent += raw.decode("utf-8", "replace")
        leaks = _leaks(body.decode("utf-8", "replace"), sent, ctx.state_dir)
        if leaks:
            problems.append(f"leaks {leaks}")
    if problems:
        ctx.failures.append(f"{label} {request.method} {request.url} -> {status}: "
                            f"{'; '.join(problems)}; body {body[:300]!r}")


def _send(ctx: FuzzContext, http: requests.Session, label: str, kwargs: dict[str, Any]) -> None:
    kwargs = {**kwargs, "timeout": (5, 60), "allow_redirects": False}
    with http.request(**kwargs, stream=True) as resp:
        if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            body = b""  # a live event stream never ends; its status and headers are the test
        else:
            body = resp.raw.read(4 << 20, decode_content=True)
        with ctx.lock:
            ctx.cases += 1
            ctx.statuses[resp.status_code] += 1
            ctx.per_operation[label] += 1
            ctx.per_operation_status[(label, resp.status_code)] += 1
        _check(ctx, label, resp.request, resp, body)
        if (label == "POST /api/visual-sessions" and resp.status_code == 201):
            sid = json.loads(body)["session_id"]
            ctx.created.append(sid)
            stop = http.post(f"{ctx.base_url}/api/visual-sessions/{sid}/stop",
                             headers={"Authorization": f"Bearer {ctx.api}"}, timeout=60)
            assert stop.status_code == 200, stop.text


def _tame(case: Any) -> None:
    """Keep actions short: the fuzzer is after the edges, not 100 s waits."""
    body = case.body
    if isinstance(body, dict):
        duration = body.get("duration")
        if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0.3:
            body["duration"] = 0.3
        text = body.get("text")
        if isinstance(text, str) and len(text) > 24:
            body["text"] = text[:24]
        actions = body.get("actions")
        if isinstance(actions, list) and len(actions) > 3:
            # an OpenAI batch of 50 'wait's (1 s each) is valid, and takes 50 s
            body["actions"] = actions[:3]


_KEYS = ("Return", "BackSpace", "Escape", "ctrl+l", "shift+Tab", "a", "F5", "Up")


def _valid_actions(width: int, height: int) -> st.SearchStrategy[dict[str, Any]]:
    """Actions the runtime agent must carry out (200): the schema alone cannot say that
    coordinates must lie on the screen, so positive schema cases rarely get this far."""
    xy = st.tuples(st.integers(0, width - 1), st.integers(0, height - 1)).map(list)
    return st.one_of(
        st.fixed_dictionaries({"action": st.sampled_from(
            ["mouse_move", "left_click", "right_click", "middle_click", "double_click",
             "triple_click"]), "coordinate": xy}),
        st.fixed_dictionaries({"action": st.just("left_click_drag"), "start_coordinate": xy,
                               "coordinate": xy}),
        st.fixed_dictionaries({"action": st.just("scroll"), "coordinate": xy,
                               "scroll_direction": st.sampled_from(["up", "down", "left",
                                                                    "right"]),
                               "scroll_amount": st.integers(1, 5)}),
        # Typeable text: not empty, no control characters (DEL, C1), which are a 422.
        st.fixed_dictionaries({"action": st.just("type"), "text": st.text(
            st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_categories=("Cc",)),
            min_size=1, max_size=12)}),
        st.fixed_dictionaries({"action": st.just("key"), "text": st.sampled_from(_KEYS)}),
        st.fixed_dictionaries({"action": st.sampled_from(["screenshot", "cursor_position",
                                                          "left_mouse_down", "left_mouse_up"])}),
        st.fixed_dictionaries({"action": st.just("wait"),
                               "duration": st.floats(0, 0.2, allow_nan=False)}),
    )


def run_valid_actions(ctx: FuzzContext, http: requests.Session, width: int, height: int) -> None:
    label = "POST /api/visual-sessions/{session_id}/actions (valid)"
    url = f"{ctx.base_url}/api/visual-sessions/{ctx.live}/actions"
    auth = {"Authorization": f"Bearer {ctx.api}"}
    released = http.post(f"{ctx.base_url}/api/visual-sessions/{ctx.live}/control",
                         json={"action": "release"}, headers=auth, timeout=30)
    assert released.status_code == 200, released.text

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(action=_valid_actions(width, height))
    def one(action: dict[str, Any]) -> None:
        _send(ctx, http, label, {"method": "POST", "url": url, "json": action, "headers": auth})

    one()
    if ctx.per_operation_status[(label, 200)] != ctx.per_operation[label]:
        ctx.failures.append(f"valid actions not all carried out: "
                            f"{ {k[1]: n for k, n in ctx.per_operation_status.items() if k[0] == label} }")


def fuzz_operation(ctx: FuzzContext, http: requests.Session, operation: Any,
                   mode: GenerationMode) -> None:
    """Up to EXAMPLES cases of one operation in one generation mode."""
    label = f"{operation.method.upper()} {operation.path}"
    destructive = (operation.method.upper(), operation.path) in _SESSION_OPS_DESTRUCTIVE
    sids = ["generated", "ended"] if destructive else ["live", "live", "ended", "generated"]
    tokens = ctx.tokens()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), who=st.sampled_from(_WHO),
           sid=st.sampled_from(sids), query_token=st.booleans())
    def one(case: Any, who: str, sid: str, query_token: bool) -> None:
        if case.path_parameters and "session_id" in case.path_parameters:
            if sid == "live":
                case.path_parameters["session_id"] = ctx.live
            elif sid == "ended":
                case.path_parameters["session_id"] = ctx.ended
        _tame(case)
        headers: dict[str, str] = {}
        token = tokens[who]
        if token is not None:
            if query_token and operation.path.startswith("/sessions/"):
                case.query = {**(case.query or {}), "token": token}
            else:
                headers["Authorization"] = f"Bearer {token}"
        _send(ctx, http, label, case.as_transport_kwargs(base_url=ctx.base_url, headers=headers))

    began = time.monotonic()
    try:
        one()
    except Unsatisfiable:
        # nothing to break (no parameters, no body): the positive mode covered it
        assert mode is GenerationMode.NEGATIVE, label
    ctx.timings[f"{label} {mode.value}"] = time.monotonic() - began


def run_fuzz(ctx: FuzzContext) -> None:
    http = requests.Session()
    # the live document, loaded as a dict: from_url leaves out the operation serving it
    live_doc = http.get(ctx.base_url + "/api/openapi.json", timeout=30)
    assert live_doc.status_code == 200, live_doc.text
    schema = schemathesis.openapi.from_dict(live_doc.json())
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            ctx.operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz_operation(ctx, http, operation, mode)
        began = time.monotonic()
        run_valid_actions(ctx, http, 800, 600)
        ctx.timings["valid actions"] = time.monotonic() - began
    finally:
        http.close()


@pytest.fixture
async def fuzz_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """Light sessions; the failed-token throttle and the creation rate limit out of the
    way (the fuzzer sends bad tokens on purpose, and create bodies must reach validation;
    both limits have their own tests in test_api_hardening.py)."""
    async for gw in in_process_gateway(tmp_path, apps=("xterm",), max_sessions=8,
                                       auth_failure_limit=1_000_000, create_burst=1000,
                                       create_rate_per_minute=1000):
        yield gw
    assert wait_no_pod_processes(gw.state_dir, timeout=30) == []


# requests may drop a pooled connection of an unread event stream to the GC (a client-side
# ResourceWarning, raised as an unraisable-exception warning at a random later point).
@pytest.mark.filterwarnings("ignore::ResourceWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_fuzz_whole_api_from_openapi(fuzz_gateway: Gateway) -> None:
    started = time.monotonic()
    gw = fuzz_gateway
    if True:
        other = await gw.create_running(resolution="640x480", enable_recording=False)
        ended = await gw.create_running(resolution="640x480", enable_recording=False)
        await gw.stop(ended["session_id"])
        live = await gw.create_running(resolution="800x600")
        tokens = live["tokens"]
        ctx = FuzzContext(gw.base_url, gw.state_dir, gw.token, tokens["view"], tokens["control"],
                          other["tokens"]["view"], live["session_id"], ended["session_id"])
        await asyncio.to_thread(run_fuzz, ctx)
        # the fuzzed session and the gateway still work
        async with gw.http.get(gw.url("/healthz")) as resp:
            assert resp.status == 200
        for sid in ctx.created:
            assert (await gw.wait_status(sid, {"stopped", "failed"}, timeout=60))["status"] \
                in ("stopped", "failed")
        took = time.monotonic() - started
        print(f"\nfuzz: {ctx.cases} cases over {len(ctx.per_operation)} operations in {took:.0f} s; "
              f"statuses {dict(sorted(ctx.statuses.items()))}; sessions created by the fuzzer "
              f"{len(ctx.created)}; failures {len(ctx.failures)}")
        if os.environ.get("VR_FUZZ_VERBOSE"):
            for op in sorted(ctx.per_operation):
                print(op, {st: n for (o, st), n in sorted(ctx.per_operation_status.items())
                           if o == op})
        slowest = sorted(ctx.timings.items(), key=lambda kv: -kv[1])[:5]
        print("slowest: " + ", ".join(f"{k} {v:.1f} s" for k, v in slowest))
        if ctx.failures:
            logs = gw.state_dir / "sessions" / ctx.live / "logs"
            tail = "".join((logs / "agent.log").read_text(errors="replace").splitlines(True)[-40:]) \
                if (logs / "agent.log").exists() else "(no agent.log)"
            raise AssertionError("\n".join(ctx.failures[:40]) + "\n--- agent.log tail:\n" + tail)
        assert len(ctx.per_operation) == ctx.operations + 1  # every operation, + valid actions
        assert ctx.cases >= 20 * len(ctx.per_operation)
        assert not [s for s in ctx.statuses if s >= 500]


# ------------------------------------------------------------------ WHEP: malformed SDP

_VIDEO_OFFER_TEMPLATE = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n"
    "a=rtcp-mux\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n{rtpmaps}"
)


def _offer(codecs: dict[int, str]) -> str:
    rtpmaps = "".join(f"a=rtpmap:{pt} {name}\r\n" for pt, name in codecs.items())
    return _VIDEO_OFFER_TEMPLATE.format(pts=" ".join(map(str, codecs)), rtpmaps=rtpmaps)


UNANSWERABLE = {400, 422}
"""A body that is not SDP at all may be a 400; an offer the session cannot answer is the
WHEP draft's 422 (docs/cdp-and-embedding.md). Either way a problem, and nothing else."""

MALFORMED_OFFERS: dict[str, tuple[bytes, set[int]]] = {
    "garbage": (b"\x00\x01garbage, not SDP at all\r\n" * 10, UNANSWERABLE),
    "non-utf8": (b"v=0\r\no=- 1 1 IN IP4 \xff\xfe\xfd\r\ns=\x80\x81\r\n", UNANSWERABLE),
    "huge": (b"v=0\r\n" + b"a=x-padding:" + b"A" * (200 * 1024) + b"\r\n", {413}),
    "no video m-line": (_offer({111: "opus/48000/2"}).replace("m=video", "m=audio").encode(),
                        UNANSWERABLE),
    "only unsupported codecs": (_offer({98: "VP9/90000", 45: "AV1/90000"}).encode(), UNANSWERABLE),
    "no codecs": (_VIDEO_OFFER_TEMPLATE.format(pts="", rtpmaps="").encode(), UNANSWERABLE),
    "bad payload type": (_offer({999: "H264/90000"}).encode(), UNANSWERABLE),
    "truncated": (_offer({96: "VP8/90000"})[:150].encode(), UNANSWERABLE),
    "many m-lines": (("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
                      + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n" * 500)
                     .encode(), UNANSWERABLE),
    "nul bytes": (b"v=0\r\n\x00\x00\x00\r\n", UNANSWERABLE),
}


async def _agent_viewers(gw: Gateway, sid: str) -> int:
    from gateway.appkeys import MANAGER

    manager = gw.extra["app"][MANAGER]
    reply = await manager.agent(manager.get(sid)).request("GET", "/stats")
    return int(reply.json()["viewers"])


async def test_malformed_sdp_is_4xx_and_viewer_still_works(light_gateway: Gateway) -> None:
    gw = light_gateway
    if True:
        session = await gw.create_running(resolution="640x480", enable_recording=False)
        sid = session["session_id"]
        url = gw.url(f"/api/visual-sessions/{sid}/whep")
        auth = {"Authorization": f"Bearer {session['tokens']['view']}",
                "Content-Type": "application/sdp"}
        seen = {}
        for name, (body, expected) in MALFORMED_OFFERS.items():
            async with gw.http.post(url, data=body, headers=auth) as resp:
                text = await resp.text()
                seen[name] = resp.status
                assert resp.status in expected, (name, resp.status, text)
                assert resp.content_type == "application/problem+json", (name, text)
                assert json.loads(text)["status"] == resp.status
                assert not _leaks(text, body.decode("utf-8", "replace"), gw.state_dir), text
        # chunked (no Content-Length) and over the cap: 413 too
        async def chunks() -> Any:
            for _ in range(100):
                yield b"a=x:" + b"B" * 1020 + b"\r\n"
        async with gw.http.post(url, data=chunks(), headers=auth) as resp:
            assert resp.status == 413, await resp.text()
        print(f"\nmalformed SDP: {seen}")
        assert await _agent_viewers(gw, sid) == 0  # bad input changed nothing
        viewer = WhepViewer(gw, sid, session["tokens"]["view"], codec="h264")
        try:
            await viewer.connect()
            async with Typist(gw, sid):
                frames = await viewer.wait_frames(3)
            assert {(f.width, f.height) for f in frames} == {(640, 480)}
        finally:
            await viewer.close()
