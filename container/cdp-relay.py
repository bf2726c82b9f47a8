#!/usr/bin/python3
"""Chromium's DevTools over a pipe, relayed to one unix socket (app sandbox side).

Runs inside the app sandbox (``local``) or the app container (``docker``) as
the session user, with the system ``python3`` and nothing but its standard
library. It starts Chromium with ``--remote-debugging-pipe`` -- the browser
reads CDP commands on fd 3 and writes replies and events on fd 4, one JSON
message per frame, each frame ended by a NUL byte -- so DevTools listens on
no TCP port at all. The relay listens on a unix socket in a folder shared
only with the runtime agent and accepts one client at a time, and only from
the runtime agent's uid or its own (``SO_PEERCRED``): the agent multiplexes,
gates and audits; this program only moves whole frames. Its own uid because
under gVisor (``--docker-runtime runsc``) a client from the host through the
socket file reports the sandbox's credentials, not its own; a process of the
session user gains nothing by it (it already is Chromium's user).

Frames are forwarded whole: a client that goes away mid-frame never leaves
half a message in the browser's pipe, and a new client never receives the
tail of an old reply. Every accepted client first receives one relay frame::

    {"relay": {"state": "ready", "pid": 123, "generation": 1, "restarts": 0}}

or, while Chromium is down, ``{"relay": {"state": "restarting", "retry_after": 2,
"reason": "..."}}`` followed by the socket closing. When Chromium exits, the
client's socket is closed and Chromium is started again after a back-off
(1 s doubling to 30 s; reset after a minute of uptime). SIGTERM/SIGINT stop
Chromium and the relay.

Usage: cdp-relay.py --socket PATH --peer-uid UID -- chromium [flags...] [url]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

MAX_FRAME = 256 * 1024 * 1024
"""Largest frame in either direction (Chromium's own pipe limit); a client
sending more is disconnected."""
MAX_BACKLOG = 512 * 1024 * 1024
"""Bytes queued for a slow client before it is disconnected."""
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0


def log(message: str) -> None:
    print(f"cdp-relay: {message}", file=sys.stderr, flush=True)


def frame(payload: dict[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\0"


class Browser:
    """One Chromium process and its two pipes."""

    def __init__(self, argv: list[str], generation: int) -> None:
        cmd_r, self.cmd_w = os.pipe()      # relay -> browser (its fd 3)
        self.resp_r, resp_w = os.pipe()    # browser -> relay (its fd 4)
        try:
            self.pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, cmd_r, 3),
                (os.POSIX_SPAWN_DUP2, resp_w, 4),
            ])
        finally:
            os.close(cmd_r)
            os.close(resp_w)
        os.set_blocking(self.cmd_w, False)
        os.set_blocking(self.resp_r, False)
        try:
            self.pidfd: int | None = os.pidfd_open(self.pid)
        except OSError:  # ENOSYS under gVisor (runsc 2022): SIGCHLD + WNOHANG instead
            self.pidfd = None
        self.generation = generation
        self.started = time.monotonic()
        self.inbox = bytearray()       # partial frame from the browser
        self.outbox = bytearray()      # whole frames for the browser

    def close(self) -> None:
        for fd in (self.cmd_w, self.resp_r, self.pidfd):
            if fd is None:
                continue
            try:
                os.close(fd)
            except OSError:
                pass


class Client:
    """The connected runtime agent."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = bytearray()


class Relay:
    def __init__(self, socket_path: str, peer_uid: int, argv: list[str]) -> None:
        self.argv = argv
        self.peer_uid = peer_uid
        self.sel = selectors.DefaultSelector()
        self.browser: Browser | None = None
        self.client: Client | None = None
        self.generation = 0
        self.backoff = BACKOFF_MIN_S
        self.restart_at = 0.0
        self.last_exit = ""
        self.stopping = False
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # srw-rw-rw-: the folder (0750, the agent's group) decides who reaches it, and
        # SO_PEERCRED who stays. Under gVisor the host's socket file gets the app
        # user's group, not the folder's, so group-only would lock the agent out.
        old = os.umask(0o111)
        try:
            self.listener.bind(socket_path)
        finally:
            os.umask(old)
        self.listener.listen(4)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # wakes the loop (no pidfd)
        # The selector wakes on signals through this pipe.
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    # ------------------------------------------------------------ browser
    def start_browser(self) -> None:
        self.generation += 1
        try:
            self.browser = Browser(self.argv, self.generation)
        except OSError as e:
            self.last_exit = f"cannot start {self.argv[0]}: {e.strerror}"
            log(self.last_exit)
            self.schedule_restart()
            return
        b = self.browser
        log(f"started {self.argv[0]} pid {b.pid} (generation {b.generation})")
        self.sel.register(b.resp_r, selectors.EVENT_READ, "browser-out")
        if b.pidfd is not None:
            self.sel.register(b.pidfd, selectors.EVENT_READ, "browser-exit")

    def reap_without_pidfd(self) -> None:
        b = self.browser
        if b is None or b.pidfd is not None:
            return
        try:
            pid, status = os.waitpid(b.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = b.pid, -1
        if pid:
            self.browser_exited(status)

    def browser_exited(self, status: int | None = None) -> None:
        b = self.browser
        if b is None:
            return
        try:
            if status is None:
                _, status = os.waitpid(b.pid, 0)
            if status < 0:
                raise ChildProcessError
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"status {os.WEXITSTATUS(status)}")
        except ChildProcessError:
            how = "gone"
        self.last_exit = f"Chromium exited ({how})"
        log(f"{self.last_exit}; restarting")
        for fd in (b.resp_r, b.pidfd):
            if fd is None:
                continue
            try:
                self.sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        try:
            self.sel.unregister(b.cmd_w)
        except (KeyError, ValueError):
            pass
        b.close()
        uptime = time.monotonic() - b.started
        self.browser = None
        if uptime > STABLE_S:
            self.backoff = BACKOFF_MIN_S
        self.drop_client("the browser exited")
        self.schedule_restart()

    def schedule_restart(self) -> None:
        self.restart_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    def browser_readable(self) -> None:
        b = self.browser
        assert b is not None
        try:
            data = os.read(b.resp_r, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # EOF: the browser is exiting; its pidfd reports when it is gone.
            self.sel.unregister(b.resp_r)
            return
        b.inbox += data
        end = b.inbox.rfind(b"\0")
        if end < 0:
            return
        whole = bytes(b.inbox[: end + 1])
        del b.inbox[: end + 1]
        if self.client is not None:         # no client: nobody is waiting for it
            self.queue_to_client(whole)

    def queue_to_browser(self, data: bytes) -> None:
        b = self.browser
        if b is None:
            return
        was_empty = not b.outbox
        b.outbox += data
        if was_empty:
            self.flush_browser()

    def flush_browser(self) -> None:
        b = self.browser
        if b is None:
            return
        try:
            n = os.write(b.cmd_w, b.outbox)
            del b.outbox[:n]
        except BlockingIOError:
            pass
        except OSError:
            b.outbox.clear()                # the browser is going; its pidfd says when
        self._want_write(b.cmd_w, "browser-in", bool(b.outbox))

    # ------------------------------------------------------------- client
    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid not in (self.peer_uid, os.getuid()):
            log(f"refused a client with uid {uid}")
            sock.close()
            return
        if self.client is not None:
            sock.sendall(frame({"relay": {"state": "busy"}}))
            sock.close()
            return
        if self.browser is None:
            retry = max(1, round(self.restart_at - time.monotonic() + 1))
            try:
                sock.sendall(frame({"relay": {"state": "restarting", "retry_after": retry,
                                              "reason": self.last_exit}}))
            except OSError:
                pass
            sock.close()
            return
        self.client = Client(sock)
        self.sel.register(sock, selectors.EVENT_READ, "client")
        b = self.browser
        self.queue_to_client(frame({"relay": {
            "state": "ready", "pid": b.pid, "generation": b.generation,
            "restarts": self.generation - 1}}))

    def drop_client(self, why: str) -> None:
        c = self.client
        if c is None:
            return
        self.client = None
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        log(f"client disconnected ({why})")

    def client_readable(self) -> None:
        c = self.client
        assert c is not None
        try:
            data = c.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop_client("closed")
            return
        c.inbox += data
        end = c.inbox.rfind(b"\0")
        if end < 0:
            if len(c.inbox) > MAX_FRAME:
                self.drop_client("frame too large")
            return
        whole = bytes(c.inbox[: end + 1])
        del c.inbox[: end + 1]
        self.queue_to_browser(whole)

    def queue_to_client(self, data: bytes) -> None:
        c = self.client
        if c is None:
            return
        was_empty = not c.outbox
        c.outbox += data
        if len(c.outbox) > MAX_BACKLOG:
            self.drop_client("too slow")
            return
        if was_empty:
            self.flush_client()

    def flush_client(self) -> None:
        c = self.client
        if c is None:
            return
        try:
            n = c.sock.send(c.outbox)
            del c.outbox[:n]
        except BlockingIOError:
            pass
        except OSError:
            self.drop_client("write failed")
            return
        self._want_write(c.sock, "client", bool(c.outbox), read=True)

    def _want_write(self, fileobj: object, tag: str, want: bool, read: bool = False) -> None:
        events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if want else 0)
        try:
            if events:
                self.sel.modify(fileobj, events, tag)  # type: ignore[arg-type]
            else:
                self.sel.unregister(fileobj)  # type: ignore[arg-type]
        except KeyError:
            if events:
                self.sel.register(fileobj, events, tag)  # type: ignore[arg-type]

    # --------------------------------------------------------------- loop
    def run(self) -> int:
        self.start_browser()
        while not self.stopping:
            timeout = None
            if self.browser is None:
                timeout = max(0.0, self.restart_at - time.monotonic())
            for key, events in self.sel.select(timeout):
                tag = key.data
                if tag == "wake":
                    try:
                        os.read(self.wake_r, 64)
                    except OSError:
                        pass
                    self.reap_without_pidfd()
                elif tag == "listen":
                    self.accept()
                elif tag == "browser-out" and self.browser is not None:
                    self.browser_readable()
                elif tag == "browser-in":
                    self.flush_browser()
                elif tag == "browser-exit":
                    self.browser_exited()
                elif tag == "client" and self.client is not None:
                    if events & selectors.EVENT_WRITE:
                        self.flush_client()
                    if events & selectors.EVENT_READ and self.client is not None:
                        self.client_readable()
            if self.browser is None and not self.stopping and time.monotonic() >= self.restart_at:
                self.start_browser()
        self.drop_client("relay stopping")
        if self.browser is not None:
            try:
                os.kill(self.browser.pid, signal.SIGTERM)
                os.waitpid(self.browser.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--peer-uid", required=True, type=int)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        parser.error("the browser command is missing")
    if "--remote-debugging-pipe" not in argv:
        argv = [argv[0], "--remote-debugging-pipe", *argv[1:]]
    try:
        relay = Relay(args.socket, args.peer_uid, argv)
    except OSError as e:
        log(f"cannot listen on {args.socket}: {e.strerror or e}")
        return 1 if e.errno != errno.EADDRINUSE else 2
    return relay.run()


if __name__ == "__main__":
    sys.exit(main())
