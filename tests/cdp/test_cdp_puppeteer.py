"""Puppeteer (npm ``puppeteer-core``, run with node) connects to a session's
Chromium through the gateway exactly as it connects to any browser endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import shutil

from tests.cdp.npm import npm_prefix
from tests.cdp.test_cdp_playwright import FORM
from tests.gateway_fixtures import Gateway

SCRIPT = os.path.join(os.path.dirname(__file__), "node", "puppeteer_drive.mjs")


async def test_puppeteer_connects_through_the_gateway(gateway: Gateway) -> None:
    gw = gateway
    prefix = await asyncio.to_thread(npm_prefix)
    session = await gw.create_running()
    sid = session["session_id"]
    files = gw.state_dir / "sessions" / sid / "home" / "Downloads"
    (files / "form.html").write_text(FORM)
    (files / "form.html").chmod(0o644)
    token = session["tokens"]["control"]
    try:
        async with gw.http.get(gw.url(f"/api/visual-sessions/{sid}/cdp/json/version"),
                               headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            endpoint = (await resp.json())["webSocketDebuggerUrl"]
        # ES modules resolve packages from the script's own folder
        script = prefix / "puppeteer_drive.mjs"
        shutil.copyfile(SCRIPT, script)
        proc = await asyncio.create_subprocess_exec(
            "node", str(script), endpoint, token, "file:///home/user/Downloads/form.html",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=str(prefix))
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-2000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert result["out"] == "hello puppeteer"
        assert result["version"].startswith("Chrome/")
        assert result["pngMagic"] == "89504e47"
    finally:
        await gw.stop(sid)
