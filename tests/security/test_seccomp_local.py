"""The local backend's sandboxes run under the docker pods' seccomp profile.

The probe is a program the session's own xterm runs (typed into its shell), so
it inherits exactly what the launcher's processes have; it reports each
syscall's errno. Without the filter every "EPERM" below is "ok" (keyctl,
add_key, userfaultfd in user mode, mount inside a fresh user namespace) or a
different errno (perf_event_open), and the x32 call is not killed.
Xvfb (a screenshot), xterm (it ran the probe) and Chromium (a data: page
loaded by a renderer inside Chromium's own namespace sandbox) keep working.
"""

from __future__ import annotations

import json
import platform
import signal
from pathlib import Path

import pyseccomp
from playwright.async_api import async_playwright

from gateway.backends.cgroup import Cgroup
from tests.actions.helpers import downloads, poll, read_text, screenshot, shell, wait_shell_ready
from tests.gateway_fixtures import Gateway

PROBE = r'''
import ctypes, errno, json, os, subprocess, sys
NR = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(a) if isinstance(a, int) else a
                                                 for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")

out = {}
out["status"] = {k: v.strip() for k, _, v in (l.partition(":") for l in open("/proc/self/status"))
                 if k in ("Seccomp", "Seccomp_filters", "NoNewPrivs")}
out["keyctl"] = call("keyctl", 0, -3, 0, 0, 0)  # KEYCTL_GET_KEYRING_ID of the session keyring
out["add_key"] = call("add_key", b"user", b"vr-probe", b"x", 1, -3)
out["userfaultfd"] = call("userfaultfd", 1)  # UFFD_USER_MODE_ONLY: allowed unprivileged
attr = (ctypes.c_uint32 * 32)()
attr[0], attr[1], attr[2] = 1, 128, 0  # PERF_TYPE_SOFTWARE, size, PERF_COUNT_SW_CPU_CLOCK
attr[10] = 0b1100000  # exclude_kernel | exclude_hv
out["perf_event_open"] = call("perf_event_open", ctypes.byref(attr), 0, -1, -1, 0)
out["kexec_load"] = call("kexec_load", 0, 0, 0, 0)
out["init_module"] = call("init_module", 0, 0, b"")
out["bpf"] = call("bpf", 0, 0, 0)  # BPF_MAP_CREATE
if "x32_getpid" in NR:
    child = subprocess.run([sys.executable, "-c",
                            "import ctypes; ctypes.CDLL(None).syscall(%d)" % NR["x32_getpid"]])
    out["x32"] = child.returncode
# Chromium's sandbox needs a user namespace: allowed; mounting in it is not.
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
out["unshare_user"] = "ok" if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 else \
    errno.errorcode[ctypes.get_errno()]
out["mount_in_userns"] = "ok" if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 else \
    errno.errorcode[ctypes.get_errno()]
print(json.dumps(out))
'''

PAGE = """<!doctype html><title>seccomp-page-loaded</title><p id=out></p>
<script>document.getElementById("out").textContent = "script ran"</script>"""


def _numbers() -> dict[str, int]:
    names = ["keyctl", "add_key", "userfaultfd", "perf_event_open", "kexec_load",
             "init_module", "bpf"]
    nr = {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in names}
    if platform.machine() == "x86_64":
        nr["x32_getpid"] = 0x40000000 | nr.get("getpid", 39)
    return nr


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _sandbox_processes(sid: str) -> dict[int, tuple[bytes, dict[str, str]]]:
    """Command line and status of each process of the session's app sandbox."""
    pids = [int(p) for f in Cgroup(f"{sid}.app").procs_files for p in Path(f).read_text().split()]
    return {p: (Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" "), _status(p))
            for p in pids}


async def test_blocked_syscalls_fail_with_eperm_and_xterm_still_works(
        light_gateway: Gateway) -> None:
    gw = light_gateway
    sid = (await gw.create_running(resolution="1024x768"))["session_id"]
    await wait_shell_ready(gw, sid)
    folder = downloads(gw, sid)
    (folder / "probe.py").write_text(PROBE)
    (folder / "nr.json").write_text(json.dumps(_numbers()))
    await shell(gw, sid, "python3 ~/Downloads/probe.py \"$(cat ~/Downloads/nr.json)\" "
                         "> ~/Downloads/out.tmp 2>&1; mv ~/Downloads/out.tmp ~/Downloads/out.json")
    text = await poll(lambda: read_text(folder / "out.json"), timeout=30, what="out.json")
    assert text is not None and text.startswith("{"), text
    out = json.loads(text)

    assert out.pop("status") == {"Seccomp": "2", "Seccomp_filters": "1", "NoNewPrivs": "1"}
    if "x32" in out:  # another ABI's syscall number kills the process (SIGSYS)
        assert out.pop("x32") == -signal.SIGSYS
    assert out == {"keyctl": "EPERM", "add_key": "EPERM", "userfaultfd": "EPERM",
                   "perf_event_open": "EPERM", "kexec_load": "EPERM", "init_module": "EPERM",
                   "bpf": "EPERM", "unshare_user": "ok", "mount_in_userns": "EPERM"}
    # Xvfb still serves the screen.
    assert (await screenshot(gw, sid)).shape == (768, 1024, 3)

    # The runtime agent's sandbox has the filter too (only bwrap's own init has not).
    agent_pids = [int(p) for f in Cgroup(f"{sid}.agent").procs_files
                  for p in Path(f).read_text().split()]
    confined = {Path(f"/proc/{p}/comm").read_text().strip(): _status(p)["Seccomp"]
                for p in agent_pids if Path(f"/proc/{p}/comm").read_text().strip() != "bwrap"}
    assert confined and set(confined.values()) == {"2"}, confined
    await gw.stop(sid)


async def test_chromium_loads_a_page_inside_its_own_sandbox(gateway: Gateway) -> None:
    gw = gateway
    sid = (await gw.create_running(resolution="1024x768"))["session_id"]
    page_file = gw.state_dir / "sessions" / sid / "home" / "Downloads" / "page.html"
    page_file.write_text(PAGE)
    page_file.chmod(0o644)
    # A real page load, driven through the session's DevTools endpoint: a renderer
    # parsed the page and ran its script.
    async with async_playwright() as pw:
        browser = await pw.chromium.connect_over_cdp(
            gw.url(f"/api/visual-sessions/{sid}/cdp"), headers=gw.auth)
        context = browser.contexts[0]
        page = context.pages[0] if context.pages else await context.new_page()
        await page.goto("file:///home/user/Downloads/page.html")
        assert await page.title() == "seccomp-page-loaded"
        assert await page.text_content("#out") == "script ran"
        processes = _sandbox_processes(sid)
        await browser.close()
    # Chromium's own sandbox still runs: its renderers sit in a pid namespace of their
    # own inside the app sandbox's (more NSpid levels than the browser), and both
    # run under the same filter.
    cmdlines = {p: c for p, (c, _) in processes.items()}
    chromium = {p: c for p, c in cmdlines.items() if c.startswith(b"/usr/lib/chromium/chromium ")}
    browsers = [p for p, c in chromium.items() if b" --type=" not in c]
    renderers = [p for p, c in chromium.items() if b" --type=renderer " in c]
    assert len(browsers) == 1 and renderers, [c[:60] for c in cmdlines.values()]
    depth = len(processes[browsers[0]][1]["NSpid"].split())
    for pid in [*browsers, *renderers]:
        status = processes[pid][1]
        assert status["Seccomp"] == "2"
        if pid in renderers:  # nested pid namespaces: Chromium's namespace sandbox
            assert len(status["NSpid"].split()) > depth, status["NSpid"]
    await gw.stop(sid)
