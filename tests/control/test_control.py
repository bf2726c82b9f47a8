"""Control hand-over between the agent (HTTP actions) and a human (data channel).

The hand-over race is checked exactly: the agent types numbered lines into
``cat > ~/Downloads/race.txt`` in a tight loop while a human takes control
with the control token; right after the take response the human types
``HUMAN`` through a real WebRTC data channel, and after the agent loop has
finished, ``END``. X delivers input in injection order, so any agent input
injected after the take would show up after ``HUMAN`` in the file.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.actions.helpers import (
    XTERM_POINT,
    act,
    act_ok,
    control,
    downloads,
    poll,
    read_text,
    shell,
    wait_shell_ready,
)
from tests.gateway_fixtures import Gateway
from tests.webrtc.whep_client import WhepViewer

PROBLEM = "https://visual-runtime.dev/problems/"


async def test_take_release_rules_and_events(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="800x600")
    sid = session["session_id"]
    tokens = session["tokens"]
    assert session["controller"] == "agent"

    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/control"),
                           headers={"Authorization": f"Bearer {tokens['view']}"}) as resp:
        assert resp.status == 200
        state = await resp.json()
    assert state["controller"] == "agent"

    # A view token may watch but not take; nothing changes.
    status, problem = await control(gw, sid, "take", tokens["view"])
    assert status == 403 and problem["type"] == PROBLEM + "forbidden"
    # Another session's control token: 403; no token: 401; a bad body: 400/422.
    other = await gw.create_running(resolution="640x480")
    status, _ = await control(gw, sid, "take", other["tokens"]["control"])
    assert status == 403
    async with gw.http.post(gw.url(f"/api/visual-sessions/{sid}/control"),
                            json={"action": "take"}) as resp:
        assert resp.status == 401
    status, problem = await control(gw, sid, "grab", tokens["control"])
    assert status == 422 and problem["errors"][0]["field"] == "action"
    assert (await gw.get(sid))["controller"] == "agent"

    status, taken = await control(gw, sid, "take", tokens["control"])
    assert status == 200 and taken["controller"] == "human"
    assert (await gw.get(sid))["controller"] == "human"
    # The agent is refused with a problem naming the reason; nothing is injected.
    before = (await act_ok(gw, other["session_id"], action="cursor_position"))["cursor"]
    status, problem = await act(gw, sid, action="mouse_move", coordinate=[5, 5])
    assert status == 409
    assert problem["type"] == PROBLEM + "human-in-control"
    assert problem["status"] == 409 and "control" in problem["detail"]
    # Taking again with the same token is fine; a different controller token is not.
    status, _ = await control(gw, sid, "take", tokens["control"])
    assert status == 200
    status, problem = await control(gw, sid, "take")  # the API token
    assert status == 409 and problem["type"] == PROBLEM + "control-held"
    status, problem = await control(gw, sid, "release")
    assert status == 409

    status, released = await control(gw, sid, "release", tokens["control"])
    assert status == 200 and released["controller"] == "agent"
    assert released["since"] >= taken["since"]
    moved = await act_ok(gw, sid, action="mouse_move", coordinate=[5, 5])
    assert moved["cursor"] == [5, 5]
    assert before  # the other session was untouched by all of this

    # The API token may take and release too.
    assert (await control(gw, sid, "take"))[0] == 200
    assert (await control(gw, sid, "release"))[0] == 200

    # Each change is one `control` event saying who and when; releases carry
    # a screenshot URL to resume from.
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/logs"), headers=gw.auth) as resp:
        assert resp.status == 200
        lines = [line for line in (await resp.text()).splitlines() if line]
    import json
    events = [json.loads(line) for line in lines]
    changes = [e for e in events if e.get("type") == "control"]
    assert [e["controller"] for e in changes] == ["human", "agent", "human", "agent"]
    for e in changes:
        assert e["ts"] and e["by"]
    assert changes[0]["by"] == "control"
    assert changes[2]["by"] == "api"
    for release in (changes[1], changes[3]):
        url = release["screenshot_url"]
        assert url == f"/api/visual-sessions/{sid}/screenshot"
        async with gw.http.get(gw.url(url), headers=gw.auth) as resp:
            assert resp.status == 200 and resp.content_type == "image/png"

    # Stopped sessions: control and actions are 409.
    await gw.stop(sid)
    status, problem = await control(gw, sid, "take")
    assert status == 409 and problem["type"] == PROBLEM + "session-not-running"
    status, problem = await act(gw, sid, action="cursor_position")
    assert status == 409 and problem["type"] == PROBLEM + "session-not-running"


async def test_data_channel_hears_control_changes(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    viewer = WhepViewer(gw, sid, session["tokens"]["view"], with_input=True)
    try:
        await viewer.connect()
        await viewer.wait_channel_open()
        await viewer.wait_message(lambda m: m == {"type": "control", "controller": "agent"})
        seen = len(viewer.messages)
        assert (await control(gw, sid, "take", session["tokens"]["control"]))[0] == 200
        await viewer.wait_message(lambda m: m == {"type": "control", "controller": "human"},
                                  after=seen)
        event = await viewer.wait_message(lambda m: m.get("type") == "event", after=seen)
        assert event["event"]["type"] == "control"
        assert event["event"]["controller"] == "human" and event["event"]["by"] == "control"
        assert event["event"]["ts"]
        seen = len(viewer.messages)
        assert (await control(gw, sid, "release", session["tokens"]["control"]))[0] == 200
        event = await viewer.wait_message(lambda m: m.get("type") == "event", after=seen)
        assert event["event"]["controller"] == "agent"
        assert event["event"]["screenshot_url"] == f"/api/visual-sessions/{sid}/screenshot"
    finally:
        await viewer.close()


async def test_no_agent_input_after_take_response(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="1024x768")
    sid = session["session_id"]
    token = session["tokens"]["control"]
    await wait_shell_ready(gw, sid)
    target = downloads(gw, sid) / "race.txt"
    await shell(gw, sid, "cat > ~/Downloads/race.txt")
    await poll(target.exists, what="race.txt")

    human = WhepViewer(gw, sid, token, with_input=True, codec=None)
    await human.connect()
    try:
        await human.wait_channel_open()
        results: list[tuple[int, float, int, dict[str, Any]]] = []
        stop = asyncio.Event()

        async def agent() -> None:
            i = 0
            while not stop.is_set():
                sent = time.monotonic()
                status, body = await act(gw, sid, action="type", text=f"a{i:05d}\n")
                results.append((i, sent, status, body))
                i += 1

        task = asyncio.create_task(agent())
        try:
            # Let the agent get going, then take control in the middle of its loop.
            await poll(lambda: (read_text(target) or "").count("\n") >= 10, what="agent lines")
            status, _ = await control(gw, sid, "take", token)
            assert status == 200
            took_at = time.monotonic()
            human.send({"type": "text", "text": "HUMAN\n"})
            # Keep the agent hammering for a while after the take.
            await poll(lambda: sum(1 for _, sent, *_ in results if sent > took_at) >= 30,
                       what="agent attempts after the take")
        finally:
            stop.set()
            await task
        human.send({"type": "text", "text": "END\n"})
        content = await poll(lambda: (read_text(target) or "").endswith("END\n") and
                             read_text(target), what="END in race.txt")
    finally:
        await human.close()

    lines = content.splitlines()
    assert lines[-2:] == ["HUMAN", "END"], lines[-5:]
    # Exactly the actions that succeeded were typed, in order, all before HUMAN.
    done = [f"a{i:05d}" for i, _, status, _ in results if status == 200]
    assert lines[:-2] == done
    for i, sent, status, body in results:
        assert status in (200, 409), body
        if sent > took_at:
            assert status == 409, (i, body)
            assert body["type"] == PROBLEM + "human-in-control"
    assert any(status == 409 for _, _, status, _ in results)
    # And the agent resumes after the release.
    assert (await control(gw, sid, "release", token))[0] == 200
    await act_ok(gw, sid, action="mouse_move", coordinate=XTERM_POINT)
    await act_ok(gw, sid, action="type", text="again\n")
    await poll(lambda: (read_text(target) or "").endswith("END\nagain\n"), what="agent resumed")
