// Base class of the viewer's transports (WebRTC, WebSocket + WebCodecs, noVNC).
//
// Events (CustomEvent, `detail` in brackets):
//   "control" {controller}   the server says control changed
//   "message" {message}      any other JSON message from the server (errors)
//   "closed"  {reason}       the transport ended after it had started

export class Transport extends EventTarget {
    /** @param {import('./api.js').SessionApi} api @param {HTMLElement} stage */
    constructor(api, stage, size) {
        super();
        this.api = api;
        this.stage = stage;
        this.remoteWidth = size.width;
        this.remoteHeight = size.height;
        /** The element showing the picture (object-fit: contain). */
        this.element = null;
        this.framesShown = 0;
        this.closed = false;
        this.started = false;
        /** Whether page-side input goes through send() (noVNC handles its own). */
        this.ownInput = false;
    }

    get name() { return "none"; }

    /** Resolve once the first frame is on screen; reject on failure. */
    async start() { throw new Error("not implemented"); }

    /** Send one input message (API.md data-channel JSON); false if it cannot be sent now. */
    send(_message) { return false; }

    /** Tell the transport whether this viewer holds control (noVNC's viewOnly). */
    setInputEnabled(_enabled) {}

    /** Display mode: "fit" or "1:1". */
    setMode(_mode) {}

    /** {fps, bitrateKbps, rttMs} (null where unknown). */
    async stats() { return { fps: null, bitrateKbps: null, rttMs: null }; }

    close(reason = "closed") {
        if (this.closed) return;
        this.closed = true;
        this.teardown();
        if (this.element) this.element.remove();
        if (this.started) this.emit("closed", { reason });
    }

    teardown() {}

    emit(type, detail = {}) {
        this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    handleServerText(text) {
        let message;
        try { message = JSON.parse(text); } catch { return; }
        if (message && message.type === "control") this.emit("control", { controller: message.controller });
        else this.emit("message", { message });
    }
}

/** Frames per second from a frame counter sampled at each stats() call. */
export class RateMeter {
    constructor() { this.lastT = performance.now(); this.lastFrames = 0; this.lastBytes = 0; }

    sample(frames, bytes) {
        const now = performance.now();
        const dt = (now - this.lastT) / 1000;
        const result = dt > 0 ? {
            fps: (frames - this.lastFrames) / dt,
            bitrateKbps: bytes === null ? null : ((bytes - this.lastBytes) * 8) / dt / 1000,
        } : { fps: null, bitrateKbps: null };
        this.lastT = now; this.lastFrames = frames; this.lastBytes = bytes ?? 0;
        return result;
    }
}

export function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
