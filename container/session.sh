#!/bin/sh
# The app container's desktop: X first, then the apps (as the local backend's
# launcher does). Settings come from the environment:
#   VR_RESOLUTION WxH, VR_APPS (subset of "fluxbox xterm chromium"),
#   VR_START_URL, VR_CHROMIUM_FLAGS.
set -u
mkdir -p "$HOME/.fluxbox" "$HOME/Downloads"
cat > "$HOME/.fluxbox/init" <<FLUX
session.screen0.toolbar.visible: false
session.screen0.rootCommand:
session.styleOverlay: ~/.fluxbox/overlay
session.screen0.workspaces: 1
FLUX
echo "background: none" > "$HOME/.fluxbox/overlay"
# The swarm pod: the session user serves its Downloads folder to the runtime agent
# (agent_side/files_server.py; container/pod.sh sets VR_FILES_SOCKET).
if [ -n "${VR_FILES_SOCKET:-}" ]; then
  /opt/venv/bin/python -m agent_side.files_server --socket "$VR_FILES_SOCKET" \
    --root "$HOME/Downloads" --peer-uid "${VR_AGENT_UID:-10002}" >"$HOME/.files-server.log" 2>&1 &
fi

# -auth: only clients with the pod's cookie (gateway/backends/xauth.py) open the display.
# -displayfd: Xvfb writes the display number into the pipe once it accepts
# clients (or closes it when it dies). Not `test -S` on the socket: under
# gVisor (--docker-runtime runsc) stat of the host-created socket is EPERM.
READY="$HOME/.xvfb-ready"
rm -f "$READY"
mkfifo "$READY"
Xvfb :0 ${XAUTHORITY:+-auth "$XAUTHORITY"} -screen 0 "${VR_RESOLUTION}x24" -nolisten tcp \
  -noreset -dpi 96 -displayfd 3 \
  +extension DAMAGE +extension MIT-SHM +extension XTEST 3>"$READY" &
XVFB=$!
read -r _display <"$READY" || { echo 'Xvfb exited before it accepted clients' >&2; exit 1; }
rm -f "$READY"
export DISPLAY=:0
case " $VR_APPS " in *" fluxbox "*) fluxbox -rc "$HOME/.fluxbox/init" & ;; esac
# ptyHandshake off: with it, xterm's child checks that the pty became its
# controlling terminal by opening /dev/tty, which gVisor before 2024-10 always
# fails with EIO (xterm loops on "open ttydev: Input/output error"). Without it
# the child still makes the pty its controlling terminal, by opening it after
# setsid(); only the check (and a pty retry nobody needs on devpts) goes.
case " $VR_APPS " in
  *" xterm "*) xterm -geometry 100x30+40+40 -fa 'DejaVu Sans Mono' -fs 11 \
    -xrm 'XTerm*ptyHandshake: false' & ;;
esac
case " $VR_APPS " in
  *" chromium "*)
    # DevTools on a pipe only, relayed to the runtime agent's socket when the
    # gateway mounted the shared folder (gateway/backends/devtools.py).
    # (VR_CDP_DIR: the swarm pod's folder in its /tmp, container/pod.sh.)
    CDP_DIR="${VR_CDP_DIR:-/run/vr-cdp}"
    if [ -d "$CDP_DIR" ] && [ -w "$CDP_DIR" ]; then
      # shellcheck disable=SC2086 # the flags are a word list
      python3 /opt/visual-runtime/cdp-relay.py --socket "$CDP_DIR/cdp.sock" \
        --peer-uid "${VR_AGENT_UID:-10002}" -- chromium --remote-debugging-pipe \
        $VR_CHROMIUM_FLAGS "$VR_START_URL" >"$HOME/.chromium.log" 2>&1 &
    else
      # shellcheck disable=SC2086 # the flags are a word list
      chromium $VR_CHROMIUM_FLAGS "$VR_START_URL" >"$HOME/.chromium.log" 2>&1 &
    fi ;;
esac
wait $XVFB
echo "Xvfb exited with $?" >&2
