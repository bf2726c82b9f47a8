"""Root never writes through a link the runtime agent left in the recording folder
(issue 20, H5).

The recording folder belongs to the runtime agent's uid while the pod lives;
when the session stops the gateway (root) finalises it: ffmpeg writes a
remuxed file, and the gateway writes the state, chapters and segment list.
A hostile agent could leave symlinks at those names pointing at host files.
Here the agent's uid does just that (``setpriv``, as the pod's own launcher
drops to it); after the stop every target is untouched, the names hold
regular files of the gateway's, and the folder is root's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gateway.appkeys import MANAGER
from tests.gateway_fixtures import Gateway
from tests.recording.helpers import act, wait_event

pytestmark = pytest.mark.timeout(180)
PLANT = """
import json, os, sys
fd, links = int(sys.argv[1]), json.loads(sys.argv[2])
for name, target in links.items():
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    os.symlink(target, name, dir_fd=fd)
"""
NAMES = ["chapters.json", "chapters.vtt", "recording.finalising.mp4", "recording.json",
         "segments.txt"]


async def test_finalising_never_follows_the_agents_links(light_gateway: Gateway) -> None:
    gw = light_gateway
    session = await gw.create_running(resolution="640x480")
    sid = session["session_id"]
    await wait_event(gw, sid, "recording", status="started")
    await act(gw, sid, {"action": "mouse_move", "coordinate": [10, 10]})  # one chapter
    manager = gw.extra["app"][MANAGER]
    folder = manager.session_dir(manager.get(sid)) / "recording"
    uid_agent = int(manager.get(sid).pod["uid_agent"])
    victims = Path(tempfile.mkdtemp(prefix="vr-victims-"))
    try:
        targets = {}
        for name in NAMES:
            target = victims / f"{name}.victim"
            target.write_text("host file, must not change\n")
            targets[name] = target
        # The agent's uid, handed the folder as the agent has it (its sandbox binds it;
        # the host path's parents are root's): it plants a link at every name.
        links = {n: str(t) for n, t in targets.items() if n != "recording.json"}
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            subprocess.run(
                ["setpriv", f"--reuid={uid_agent}", f"--regid={uid_agent}", "--clear-groups",
                 "--", sys.executable, "-c", PLANT, str(dir_fd), json.dumps(links)],
                check=True, timeout=30, pass_fds=(dir_fd,))
        finally:
            os.close(dir_fd)
        assert (folder / "chapters.json").is_symlink()
        await gw.stop(sid)
        finalised = await wait_event(gw, sid, "recording", status="finalised", timeout=120)
        assert finalised["chapters"] >= 1
        for name, target in targets.items():
            assert target.read_text() == "host file, must not change\n", name
        for name in ("chapters.json", "chapters.vtt", "recording.json"):
            assert not (folder / name).is_symlink() and (folder / name).is_file(), name
            assert (folder / name).stat().st_uid == 0, name
        assert '"chapters"' in (folder / "chapters.json").read_text()
        assert folder.stat().st_uid == 0
    finally:
        shutil.rmtree(victims, ignore_errors=True)
