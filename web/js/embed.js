// Embed mode (`?embed=1`, or `?embed=bare` without any toolbar): the viewer
// talks to the web app that frames it with postMessage, and only to it.
//
// The parent's origin must be one of the gateway's --allowed-origins (the page
// reads them from /sessions/{id}/info as `embed_origins`) or the gateway's own.
// It is learnt from location.ancestorOrigins (Chromium, WebKit) or
// document.referrer; when neither says and exactly one origin is allowed, that
// one is used (the browser delivers a message only to a parent of that origin).
// Messages never go to "*".
//
// Viewer -> parent (targetOrigin: the parent's origin):
//   {type: "visual-runtime:state", version, session_id, state, detail, transport,
//    controller, holds_control, may_control}
//       on every change; state is connecting | connected | disconnected | error | ended,
//       transport webrtc | ws | vnc | null, controller agent | human,
//       holds_control whether this page's token holds control.
//   {type: "visual-runtime:result", version, id, command, ok, error?}
//       the answer to a command (id echoed).
// Parent -> viewer (accepted from window.parent at that origin only; everything
// else is counted in `ignored` and dropped):
//   {type: "visual-runtime:command", command, id?}
//       command: take-control | release-control | get-state

export const PROTOCOL_VERSION = 1;
export const STATE = "visual-runtime:state";
export const RESULT = "visual-runtime:result";
export const COMMAND = "visual-runtime:command";
const CONTROL_ACTIONS = { "take-control": "take", "release-control": "release" };

/** "minimal" (`?embed=1`), "bare" (`?embed=bare`) or null (not embedded). */
export function embedMode(value) {
    if (value === null || value === "" || value === "0" || value === "false") return null;
    return value === "bare" ? "bare" : "minimal";
}

/** The origin to post to: the parent's, if it is allowed; else null. */
export function parentOrigin(allowed, own = location.origin) {
    if (window.parent === window) return null;
    const known = new Set([...allowed, own]);
    let seen = null;
    if (location.ancestorOrigins && location.ancestorOrigins.length) {
        seen = location.ancestorOrigins[0];
    } else if (document.referrer) {
        try { seen = new URL(document.referrer).origin; } catch { seen = "null"; }
    }
    if (seen !== null) return known.has(seen) ? seen : null;
    return allowed.length === 1 ? allowed[0] : null;
}

export class EmbedBridge extends EventTarget {
    /** @param {import('./app.js').ViewerApp} app @param {string[]} allowedOrigins */
    constructor(app, allowedOrigins) {
        super();
        this.app = app;
        this.target = parentOrigin(allowedOrigins);
        this.ignored = 0;
        this.commands = 0;
        this.last = null;
        this.onMessage = this.onMessage.bind(this);
    }

    /** Start posting and listening; false when the parent is not an allowed origin. */
    start() {
        if (this.target === null) {
            console.warn("embed mode: the parent is not an allowed origin; no messages");
            return false;
        }
        window.addEventListener("message", this.onMessage);
        for (const type of ["state", "control"]) {
            this.app.addEventListener(type, () => this.postState());
        }
        this.postState();
        return true;
    }

    snapshot() {
        const app = this.app;
        return {
            type: STATE, version: PROTOCOL_VERSION, session_id: app.sessionId,
            state: app.state, detail: app.stateDetail || "",
            transport: app.transport ? app.transport.name : null,
            controller: app.controller,
            holds_control: app.controller === "human" && app.holdsControl,
            may_control: !!(app.info && app.info.may_control),
        };
    }

    /** Post the state if it changed (or always, with force). */
    postState(force = false) {
        const state = this.snapshot();
        const key = JSON.stringify(state);
        if (!force && key === this.last) return;
        this.last = key;
        this.post(state);
    }

    post(message) {
        window.parent.postMessage(message, this.target);
    }

    async onMessage(event) {
        const msg = event.data;
        if (event.source !== window.parent || event.origin !== this.target ||
            !msg || typeof msg !== "object" || msg.type !== COMMAND) {
            this.ignored++;
            return;
        }
        this.commands++;
        const id = msg.id ?? null;
        const reply = (ok, error) => this.post({
            type: RESULT, version: PROTOCOL_VERSION, id, command: msg.command, ok,
            ...(error ? { error } : {}),
        });
        if (msg.command === "get-state") {
            this.postState(true);
            reply(true);
            return;
        }
        const action = CONTROL_ACTIONS[msg.command];
        if (!action) {
            reply(false, `unknown command ${JSON.stringify(String(msg.command))}`);
            return;
        }
        try {
            await this.app.requestControl(action);
            reply(true);
        } catch (e) {
            reply(false, String(e.message || e));
        }
    }
}
