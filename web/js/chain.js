// The transport chain: WebRTC -> WebSocket + WebCodecs -> noVNC, each given a
// few seconds; the first that shows a frame wins and is remembered
// (localStorage) so the next visit starts with it. `?transport=` or the
// page's selector forces one.

import { WebCodecsTransport } from "./wscodecs.js";
import { VncTransport } from "./vnc.js";
import { WebRtcTransport } from "./webrtc.js";
import { withTimeout } from "./transport.js";

export const TRANSPORTS = {
    webrtc: WebRtcTransport,
    ws: WebCodecsTransport,
    vnc: VncTransport,
};
export const ORDER = ["webrtc", "ws", "vnc"];
const STORAGE_KEY = "visual-runtime.transport";
const START_TIMEOUT_MS = 6000;

export function rememberedTransport() {
    try {
        const name = localStorage.getItem(STORAGE_KEY);
        return name in TRANSPORTS ? name : null;
    } catch { return null; }
}

function remember(name) {
    try { localStorage.setItem(STORAGE_KEY, name); } catch { /* storage disabled */ }
}

export class TransportChain extends EventTarget {
    constructor(api, stage, size) {
        super();
        this.api = api;
        this.stage = stage;
        this.size = size;
        this.attempts = [];
    }

    /** Names to try, in order, for a forced transport or "auto". */
    order(forced) {
        if (forced && forced in TRANSPORTS) return [forced];
        const first = rememberedTransport();
        return first ? [first, ...ORDER.filter((n) => n !== first)] : [...ORDER];
    }

    /** Connect the first transport that works; rejects when all failed. */
    async connect(forced) {
        this.attempts = [];
        for (const name of this.order(forced)) {
            const transport = new TRANSPORTS[name](this.api, this.stage, this.size);
            this.dispatchEvent(new CustomEvent("trying", { detail: { name } }));
            const t0 = performance.now();
            try {
                await withTimeout(transport.start(), START_TIMEOUT_MS, name);
                this.attempts.push({ name, ok: true, ms: Math.round(performance.now() - t0) });
                if (!forced) remember(name);
                return transport;
            } catch (e) {
                console.warn(`transport ${name} failed:`, e);
                this.attempts.push({ name, ok: false, error: String(e.message || e) });
                transport.close("failed");
            }
        }
        const summary = this.attempts.map((a) => `${a.name}: ${a.error}`).join("; ");
        throw new Error(`no transport worked (${summary})`);
    }
}
