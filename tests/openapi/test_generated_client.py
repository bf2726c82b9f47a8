"""A client generated from the live gateway's OpenAPI document with openapi-python-client.

The document is fetched from the running gateway, the client generated with the
settings in ``openapi-python-client.yml`` (nothing else), built into a wheel,
installed into a scratch directory and imported from there; then it creates a
session, acts (both dialects), takes a screenshot and stops the session. The
pointer is read on the session's X server.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.actions.helpers import png_rgb
from tests.dialects.helpers import pointer, session_display
from tests.gateway_fixtures import Gateway

CONFIG = Path(__file__).parent / "openapi-python-client.yml"
PACKAGE = "visual_runtime_generated"


def _run(*argv: str, cwd: Path) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{argv[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "WARNING" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


async def test_generated_client_round_trip(light_gateway: Gateway, tmp_path: Path) -> None:
    gw = light_gateway
    async with gw.http.get(gw.url("/api/openapi.json")) as resp:
        assert resp.status == 200
        document = await resp.json()
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    (tmp_path / "openapi.json").write_text(json.dumps(document))

    generator = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert generator, "openapi-python-client is not installed (pip install -e '.[test]')"
    _run(generator, "generate", "--path", "openapi.json", "--config", str(CONFIG),
         "--meta", "setup", "--output-path", "gen", cwd=tmp_path)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path / "dist"), str(tmp_path / "gen"), cwd=tmp_path)
    wheels = list((tmp_path / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
         str(tmp_path / "site"), str(wheels[0]), cwd=tmp_path)

    sys.path.insert(0, str(tmp_path / "site"))
    try:
        client_mod = importlib.import_module(PACKAGE)
        models = importlib.import_module(PACKAGE + ".models")
        create = importlib.import_module(PACKAGE + ".api.sessions.create_session")
        get = importlib.import_module(PACKAGE + ".api.sessions.get_session")
        stop = importlib.import_module(PACKAGE + ".api.sessions.stop_session")
        act = importlib.import_module(PACKAGE + ".api.actions.act")
        act_openai = importlib.import_module(PACKAGE + ".api.actions.act_openai")
        screenshot = importlib.import_module(PACKAGE + ".api.actions.get_screenshot")
        assert str(Path(client_mod.__file__)).startswith(str(tmp_path / "site"))

        async with client_mod.AuthenticatedClient(base_url=gw.base_url, token=gw.token,
                                                  timeout=None) as api:
            created = await create.asyncio_detailed(client=api, body=models.CreateSession(
                resolution="1024x768", agent_resolution="512x384"))
            assert created.status_code == 201, created.content
            assert created.headers["Location"].endswith(created.parsed.session_id)
            sid = created.parsed.session_id
            running = await get.asyncio(sid, client=api, wait=models.GetSessionWait.RUNNING)
            assert running.status == models.SessionStatus.RUNNING
            assert running.agent_resolution == "512x384"

            disp = session_display(gw, sid)
            try:
                moved = await act.asyncio(sid, client=api, body=models.ActionMouseMove(
                    action=models.ActionMouseMoveAction.MOUSE_MOVE, coordinate=[511, 383]))
                assert isinstance(moved, models.ActionResult) and moved.cursor == [511, 383]
                assert pointer(disp) == (1023, 767)
                clicked = await act.asyncio(sid, client=api, body=models.ComputerToolsetCall(
                    name=models.ComputerToolsetCallName.LEFT_CLICK,
                    input_=models.ComputerToolsetCallInput.from_dict({"coordinate": [256, 192]})))
                assert clicked.cursor == [256, 192] and pointer(disp) == (513, 385)  # pixel centres
                batch = await act_openai.asyncio(sid, client=api, body=models.OpenAIBatch(actions=[
                    models.OpenAIMove(type_=models.OpenAIMoveType.MOVE, x=10, y=20),
                    models.OpenAIClick(type_=models.OpenAIClickType.CLICK,
                                       button=models.OpenAIClickButton.LEFT, x=30, y=40)]))
                assert isinstance(batch, models.OpenAIResult) and batch.actions == 2
                assert pointer(disp) == (61, 81)
                bad = await act.asyncio_detailed(sid, client=api, body=models.ActionMouseMove(
                    action=models.ActionMouseMoveAction.MOUSE_MOVE, coordinate=[512, 0]))
                assert bad.status_code == 422
                assert [e.field for e in bad.parsed.errors] == ["coordinate"]
            finally:
                disp.close()

            shot = await screenshot.asyncio(sid, client=api)
            assert png_rgb(shot.payload.read()).shape == (384, 512, 3)
            stopped = await stop.asyncio(sid, client=api)
            assert stopped.session_id == sid
        await gw.wait_status(sid, {"stopped"})
    finally:
        sys.path.remove(str(tmp_path / "site"))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
