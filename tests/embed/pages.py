"""A web app on another origin than the gateway, served by the test itself.

:class:`PageServer` is an aiohttp server on 127.0.0.1 (port 0) with:

* ``/players.js`` — ``@eyevinn/webrtc-player`` and ``whip-whep`` from npm,
  bundled by esbuild (:func:`tests.cdp.npm.browser_bundle`);
* ``/player.html`` — a ``<video>`` and ``play(kind, whepUrl, token)`` that plays
  a session with either player; ``window.result`` counts decoded frames
  (``requestVideoFrameCallback``) and collects errors;
* ``/embed.html?src=URL`` — iframes ``src`` with ``allow="fullscreen;
  clipboard-write"`` and records every ``postMessage`` it receives from it in
  ``window.messages``; ``send(command, id)`` posts a command to the frame;
* ``/sibling.html`` — a page that posts a take-control command to its parent's
  first frame with target ``"*"`` (a frame of another origin trying to drive the
  viewer).

The same server answers as ``http://127.0.0.1:PORT`` and ``http://localhost:PORT``:
two origins, one of which the test allows.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Page

from tests.cdp.npm import browser_bundle

HERE = Path(__file__).resolve().parent
BUNDLE = HERE.parents[1] / "build" / "npm-tests" / "players.js"

PLAYER_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>players</title>
<script src="/players.js"></script></head>
<body style="margin:0;background:#000">
<video id="v" autoplay muted playsinline width="640" height="480"></video>
<script>
window.result = { frames: 0, width: 0, height: 0, errors: [], events: [] };
addEventListener('unhandledrejection', (e) =>
  result.errors.push(String((e.reason && e.reason.message) || e.reason)));
const video = document.getElementById('v');
function tick(now, meta) {
  result.frames++; result.width = meta.width; result.height = meta.height;
  video.requestVideoFrameCallback(tick);
}
video.requestVideoFrameCallback(tick);

// Grey levels of the picture, downscaled to w x h (cross-origin WebRTC video is
// not tainted: the page may read it).
window.pixels = (w, h) => {
  const c = document.createElement('canvas'); c.width = w; c.height = h;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, w, h);
  const d = ctx.getImageData(0, 0, w, h).data, out = [];
  for (let i = 0; i < d.length; i += 4) out.push(Math.round((d[i] + d[i + 1] + d[i + 2]) / 3));
  return out;
};

window.play = async (kind, url, token) => {
  if (kind === 'eyevinn') {
    // no STUN by default here: the player's own default is a public server
    const player = new WebRTCPlayer({ video, type: 'whep', iceServers: [] });
    for (const name of ['no-media', 'media-recovered', 'peer-connection-failed',
                        'initial-connection-failed', 'connect-error']) {
      player.on(name, () => result.events.push(name));
    }
    window.player = player;
    await player.load(new URL(url), `Bearer ${token}`);
  } else {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.ontrack = (e) => { video.srcObject = new MediaStream([e.track]); };
    pc.onconnectionstatechange = () => result.events.push(pc.connectionState);
    const client = new WHEPClient();
    window.player = client; window.pc = pc;
    try {
      await client.view(pc, url, token);
      result.events.push('answered');
    } catch (e) {
      result.errors.push(String(e.message || e));
    }
  }
};
</script></body></html>
"""

EMBED_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>embed</title></head>
<body style="margin:0">
<iframe id="viewer" allow="fullscreen; clipboard-write" width="800" height="560"></iframe>
<script>
const params = new URLSearchParams(location.search);
const frame = document.getElementById('viewer');
const target = new URL(params.get('src')).origin;
window.messages = [];
addEventListener('message', (e) => {
  if (e.source === frame.contentWindow) window.messages.push({ origin: e.origin, data: e.data });
});
window.send = (command, id) =>
  frame.contentWindow.postMessage({ type: 'visual-runtime:command', command, id }, target);
if (params.get('sibling')) {
  const s = document.createElement('iframe');
  s.id = 'sibling'; s.src = params.get('sibling');
  document.body.append(s);
}
frame.src = params.get('src');
</script></body></html>
"""

SIBLING_HTML = """<!doctype html><html><head><meta charset="utf-8"></head><body><script>
window.attack = () => parent.frames[0].postMessage(
  { type: 'visual-runtime:command', command: 'take-control', id: 'sibling' }, '*');
</script></body></html>
"""


class PageServer:
    """The test's own web app on another origin (see the module docstring)."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def allowed(self) -> str:
        """The origin the tests allow (``--allowed-origins``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def other(self) -> str:
        """The same server under an origin that is not allowed."""
        return f"http://localhost:{self.port}"

    async def start(self) -> None:
        browser_bundle(HERE / "node" / "players.mjs", BUNDLE)
        app = web.Application()
        html = {"/player.html": PLAYER_HTML, "/embed.html": EMBED_HTML,
                "/sibling.html": SIBLING_HTML}

        async def page(request: web.Request) -> web.Response:
            return web.Response(text=html[request.path], content_type="text/html")

        async def players(request: web.Request) -> web.FileResponse:
            return web.FileResponse(BUNDLE, headers={"Content-Type": "text/javascript"})

        for path in html:
            app.router.add_get(path, page)
        app.router.add_get("/players.js", players)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def sync(check: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """*check* as the coroutine function :func:`tests.viewer.pages.poll` awaits."""
    async def run() -> Any:
        return check()
    return run


async def messages(page: Page) -> list[dict[str, Any]]:
    """The postMessage data the embedding page has received so far (with origins)."""
    raw: str = await page.evaluate("JSON.stringify(window.messages)")
    found: list[dict[str, Any]] = json.loads(raw)
    return found
