"""Shared fixtures: real Xvfb displays for tests that need a screen."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, async_playwright


@dataclass(frozen=True)
class XDisplay:
    """A running Xvfb server started by a test."""

    name: str
    """DISPLAY value, e.g. ``":12"``."""
    width: int
    height: int
    process: subprocess.Popen[bytes]


def require_binary(name: str) -> str:
    """Return the path of *name*; fail (never skip) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required system binary {name!r} is not installed (run scripts/test.sh)")
    return path


def start_xvfb(width: int = 1600, height: int = 900) -> XDisplay:
    """Start Xvfb on a free display number and wait until it accepts clients."""
    binary = require_binary("Xvfb")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [binary, "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        number = reader.readline().strip().decode()
    if not number:
        proc.kill()
        proc.wait()
        pytest.fail("Xvfb did not report a display number")
    return XDisplay(name=f":{number}", width=width, height=height, process=proc)


def stop_xvfb(display: XDisplay) -> None:
    display.process.terminate()
    try:
        display.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        display.process.kill()
        display.process.wait()


CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
"""Debian's Chromium as root, headless, kept off the (closed) network."""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium through Playwright (which makes a fresh profile)."""
    path = require_binary("chromium")
    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
def xvfb() -> Iterator[XDisplay]:
    """A fresh 1600x900 Xvfb for one test."""
    display = start_xvfb()
    try:
        yield display
    finally:
        stop_xvfb(display)


pytest_plugins = ["tests.gateway_fixtures"]
