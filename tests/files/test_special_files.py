"""A FIFO (or socket) in the shared folder never wedges the gateway (issue 20, H2).

The session plants them itself, from inside its sandbox. Downloads used to
open with a blocking ``open`` in the default thread pool: a FIFO with no
writer held a thread for ever, and about six such requests held them all,
so static pages and session start and stop hung for every session. Now the
open is ``O_NONBLOCK`` + ``fstat`` (anything but a regular file is a 404
problem) and file I/O runs on a bounded pool of its own.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.media.files import FILE_IO_THREADS
from tests.gateway_fixtures import Gateway
from tests.security.helpers import run_in_app

pytestmark = pytest.mark.timeout(240)
DOWNLOADS = 4 * FILE_IO_THREADS + 8
"""More than the file pool's and the default executor's threads together."""


async def test_fifo_downloads_do_not_block_the_gateway(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid, control = session["session_id"], session["tokens"]["control"]
    made = await run_in_app(gw, sid, ["sh", "-c", (
        "mkfifo /home/user/Downloads/pipe && mkdir /home/user/Downloads/sub && "
        "mkfifo /home/user/Downloads/sub/pipe2 && "
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); "
        "s.bind(\"/home/user/Downloads/sock\")'")])
    assert made.code == 0, made.err
    files = gw.url(f"/api/visual-sessions/{sid}/files")

    async def download(path: str, token: str) -> tuple[int, str]:
        async with gw.http.get(f"{files}/{path}",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, resp.headers.get("Content-Type", "")

    flood = [asyncio.create_task(download(path, token))
             for i in range(DOWNLOADS)
             for path, token in [(("pipe", "sub/pipe2", "sock")[i % 3],
                                  (gw.token, control)[i % 2])]]
    # While those are in flight, the rest of the gateway answers: static files,
    # the API, and a whole session start and stop (which use the default pool).
    async def the_rest() -> None:
        async with gw.http.get(gw.url("/viewer/viewer.css")) as resp:
            assert resp.status == 200
        other = await gw.create_running(resolution="640x480")
        await gw.stop(other["session_id"])
        async with gw.http.get(gw.url("/api/visual-sessions"), headers=gw.auth) as resp:
            assert resp.status == 200
    await asyncio.wait_for(the_rest(), 120)
    answers = await asyncio.wait_for(asyncio.gather(*flood), 60)
    assert {a for a in answers} == {(404, "application/problem+json")}, answers
    # None of them is listed as a file; the regular file beside them downloads.
    async with gw.http.get(files, headers=gw.auth) as resp:
        listed = {f["path"] for f in (await resp.json())["files"]}
    assert not listed & {"pipe", "sub/pipe2", "sock"}, listed
    async with gw.http.put(f"{files}/ok.txt", data=b"fine", headers=gw.auth) as resp:
        assert resp.status in (200, 201), await resp.text()
    async with gw.http.get(f"{files}/ok.txt", headers=gw.auth) as resp:
        assert resp.status == 200 and await resp.read() == b"fine"
    await gw.stop(sid)
