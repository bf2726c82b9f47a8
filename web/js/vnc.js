// noVNC as the last transport: RFB over the gateway's WebSocket proxy.
// noVNC draws and maps input itself; the server drops input unless this
// viewer's token holds control (agent_side/vnc.py), and the page keeps
// noVNC view-only until it does.

import { Transport } from "./transport.js";

const RFB_URL = "/viewer/vendor/novnc/core/rfb.js";

export class VncTransport extends Transport {
    constructor(api, stage, size) {
        super(api, stage, size);
        this.ownInput = true;
        this.inputEnabled = false;
        this.mode = "fit";
    }

    get name() { return "vnc"; }

    async start() {
        const { default: RFB } = await import(RFB_URL);
        const box = document.createElement("div");
        box.className = "remote vnc";
        this.element = box;
        this.stage.prepend(box);
        const rfb = new RFB(box, this.api.wsUrl("vnc/websockify"), {
            shared: true, wsProtocols: ["binary"],
        });
        this.rfb = rfb;
        rfb.viewOnly = !this.inputEnabled;
        rfb.focusOnClick = true;
        this.setMode(this.mode);
        await new Promise((resolve, reject) => {
            rfb.addEventListener("connect", () => resolve());
            rfb.addEventListener("disconnect", (e) => {
                reject(new Error("the VNC connection closed"));
                this.close(e.detail && e.detail.clean ? "VNC closed" : "VNC connection lost");
            });
            rfb.addEventListener("securityfailure", () => reject(new Error("VNC security failure")));
        });
        this.started = true;
        this.framesShown = 1;
    }

    /** noVNC's canvas, for the page's overlay and tests. */
    get canvas() { return this.element ? this.element.querySelector("canvas") : null; }

    setInputEnabled(enabled) {
        this.inputEnabled = enabled;
        if (this.rfb) this.rfb.viewOnly = !enabled;
    }

    setMode(mode) {
        this.mode = mode;
        if (this.rfb) {
            this.rfb.scaleViewport = mode === "fit";
            this.rfb.clipViewport = false;
        }
    }

    teardown() {
        if (this.rfb) {
            try { this.rfb.disconnect(); } catch { /* already closed */ }
        }
    }
}
