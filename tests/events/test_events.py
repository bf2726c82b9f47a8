"""Session events over SSE (order, ``Last-Event-ID`` resume) and the NDJSON log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.actions.helpers import act_ok, control
from tests.gateway_fixtures import Gateway


async def read_sse(resp: aiohttp.ClientResponse, count: int,
                   timeout: float = 20.0) -> list[tuple[int, str, dict[str, Any]]]:
    """Read *count* events: (id, SSE event name, JSON data)."""
    events: list[tuple[int, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}

    async def run() -> None:
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if "data" in fields:
                    events.append((int(fields["id"]), fields.get("event", "message"),
                                   json.loads(fields["data"])))
                    if len(events) >= count:
                        return
                fields.clear()
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    await asyncio.wait_for(run(), timeout)
    return events


async def test_events_in_order_and_resume(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    token = session["tokens"]["control"]
    url = gw.url(f"/api/visual-sessions/{sid}/events")

    # A view token may follow the events (also as ?token= for EventSource).
    async with gw.http.get(url + f"?token={session['tokens']['view']}") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        first = await read_sse(resp, 3)
    # The start-up spans come just before `running` (docs/api-extensions.md).
    assert [e[2]["type"] for e in first] == ["status", "startup", "status"]
    assert [first[0][2]["status"], first[2][2]["status"]] == ["starting", "running"]
    assert first[1][2]["from_pool"] is False and first[1][2]["spans_ms"]["total"] > 0

    async with gw.http.get(url, headers=gw.auth) as resp:
        head = await read_sse(resp, 2)
        await act_ok(gw, sid, action="left_click", coordinate=[10, 10])
        assert (await control(gw, sid, "take", token))[0] == 200
        assert (await control(gw, sid, "release", token))[0] == 200
        live = []
        while len([e for e in live if e[2]["type"] in ("action", "control")]) < 3:
            live += await read_sse(resp, 1)
    events = head + live
    # Other producers (the recorder's `recording` events) may interleave.
    live = [e for e in live if e[2]["type"] in ("action", "control")]
    ids = [e[0] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] == 1
    assert [e[1] for e in events] == [e[2]["type"] for e in events]
    assert [e[2]["type"] for e in live] == ["action", "control", "control"]
    assert live[0][2]["action"] == "left_click" and live[0][2]["coordinate"] == [10, 10]
    assert [e[2]["controller"] for e in live[1:]] == ["human", "agent"]
    assert all(e[2]["ts"] for e in events)

    # Reconnect after the second event: exactly the rest, same ids, nothing repeated.
    resume_after = events[1][0]
    async with gw.http.get(url, headers={**gw.auth, "Last-Event-ID": str(resume_after)}) as resp:
        again = await read_sse(resp, len(events) - 2)
    assert again == events[2:]
    # A bad Last-Event-ID is a 400 problem.
    async with gw.http.get(url, headers={**gw.auth, "Last-Event-ID": "x"}) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"

    # A live reader sees the stop, then the server ends the stream.
    async with gw.http.get(url, headers={**gw.auth, "Last-Event-ID": str(events[-1][0])}) as resp:
        await gw.stop(sid)
        tail = await read_sse(resp, 10_000)  # returns at the end of the stream
    statuses = [e[2]["status"] for e in tail if e[2]["type"] == "status"]
    assert statuses == ["stopping", "stopped"]
    assert tail[-1][2] == {**tail[-1][2], "type": "status", "status": "stopped"}
    assert [e[0] for e in tail] == list(range(events[-1][0] + 1, tail[-1][0] + 1))


async def test_logs_are_ndjson_and_kept_after_the_end(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    await act_ok(gw, sid, action="mouse_move", coordinate=[1, 2])
    await gw.stop(sid)
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/logs"), headers=gw.auth) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    events = [e for e in lines if e["type"] != "log"]
    assert [e.get("status") for e in events if e["type"] == "status"] == [
        "starting", "running", "stopping", "stopped"]
    assert any(e["type"] == "action" and e["action"] == "mouse_move" for e in events)
    assert any(e["type"] == "log" and e["source"] == "agent" for e in lines)
    stamps = [e["ts"] for e in lines if e.get("ts")]
    assert stamps == sorted(stamps)
    # The SSE stream of an ended session replays its events and ends.
    async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/events"),
                           headers=gw.auth) as resp:
        body = await asyncio.wait_for(resp.content.read(), 10)
    assert body.count(b"\ndata: ") + body.startswith(b"data: ") == len(events)
