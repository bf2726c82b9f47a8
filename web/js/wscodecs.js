// WebSocket + WebCodecs: the agent's H.264 packets over the gateway's port,
// decoded by VideoDecoder and drawn on a canvas as soon as each frame is out.
// Wire format: agent_side/wsstream.py (12-byte header + Annex-B access unit).

import { RateMeter, Transport } from "./transport.js";

const KIND_VIDEO = 1;
const FLAG_KEYFRAME = 1;
const MAX_DECODE_QUEUE = 6;

export class WebCodecsTransport extends Transport {
    get name() { return "ws"; }

    async start() {
        if (typeof VideoDecoder === "undefined") {
            throw new Error("WebCodecs is not available (needs HTTPS or localhost)");
        }
        const canvas = document.createElement("canvas");
        canvas.className = "remote";
        canvas.width = this.remoteWidth;
        canvas.height = this.remoteHeight;
        this.element = canvas;
        this.stage.prepend(canvas);
        this.ctx = canvas.getContext("2d", { alpha: false, desynchronized: true });
        this.meter = new RateMeter();
        this.bytes = 0;
        this.decoder = null;
        this.codec = null;
        this.waitKey = true;

        const ws = new WebSocket(this.api.wsUrl("stream"));
        ws.binaryType = "arraybuffer";
        this.ws = ws;
        await new Promise((resolve, reject) => {
            this.firstFrame = { resolve, reject };
            ws.onmessage = (e) => this.onMessage(e.data);
            ws.onerror = () => reject(new Error("the stream WebSocket failed"));
            ws.onclose = (e) => {
                reject(new Error(`the stream WebSocket closed (${e.code})`));
                this.close(`WebSocket closed (${e.code})`);
            };
        });
        this.started = true;
    }

    onMessage(data) {
        if (typeof data === "string") {
            const message = JSON.parse(data);
            if (message.type === "hello") {
                this.remoteWidth = message.width;
                this.remoteHeight = message.height;
                this.element.width = message.width;
                this.element.height = message.height;
                return;
            }
            this.handleServerText(data);
            return;
        }
        this.bytes += data.byteLength;
        const view = new DataView(data);
        if (data.byteLength < 12 || view.getUint8(0) !== KIND_VIDEO) return;
        const key = (view.getUint8(1) & FLAG_KEYFRAME) !== 0;
        const pts = Number(view.getBigUint64(4));
        const payload = new Uint8Array(data, 12);
        if (key) this.ensureDecoder(payload);
        if (!this.decoder || this.decoder.state !== "configured") return;
        if (!key && (this.waitKey || this.decoder.decodeQueueSize > MAX_DECODE_QUEUE)) {
            // Behind or out of sync: skip to the next keyframe rather than add delay.
            if (!this.waitKey) this.requestKeyframe();
            this.waitKey = true;
            return;
        }
        this.waitKey = false;
        try {
            this.decoder.decode(new EncodedVideoChunk({
                type: key ? "key" : "delta", timestamp: Math.round(pts * 1e6 / 90000), data: payload,
            }));
        } catch (e) {
            this.resetDecoder(e);
        }
    }

    ensureDecoder(payload) {
        const codec = codecFromAnnexB(payload) || "avc1.42e01f";
        if (this.decoder && this.decoder.state === "configured" && codec === this.codec) return;
        if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
        this.codec = codec;
        this.decoder = new VideoDecoder({
            output: (frame) => this.draw(frame),
            error: (e) => this.resetDecoder(e),
        });
        this.decoder.configure({ codec, optimizeForLatency: true, hardwareAcceleration: "no-preference" });
    }

    draw(frame) {
        if (this.closed) { frame.close(); return; }
        if (frame.displayWidth !== this.element.width || frame.displayHeight !== this.element.height) {
            this.element.width = frame.displayWidth;
            this.element.height = frame.displayHeight;
        }
        this.ctx.drawImage(frame, 0, 0);
        frame.close();
        this.framesShown++;
        if (this.framesShown === 1 && this.firstFrame) this.firstFrame.resolve();
    }

    resetDecoder(error) {
        console.warn("decoder error, waiting for a keyframe:", error);
        if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
        this.decoder = null;
        this.waitKey = true;
        this.requestKeyframe();
    }

    requestKeyframe() {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send('{"type":"keyframe"}');
    }

    send(message) {
        if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
        this.ws.send(JSON.stringify(message));
        return true;
    }

    async stats() {
        return { rttMs: null, ...this.meter.sample(this.framesShown, this.bytes) };
    }

    teardown() {
        if (this.ws) { this.ws.onclose = null; this.ws.close(); }
        if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    }
}

/** "avc1.PPCCLL" from the SPS of an Annex-B access unit, or null. */
export function codecFromAnnexB(bytes) {
    for (let i = 0; i + 7 < bytes.length; i++) {
        const start3 = bytes[i] === 0 && bytes[i + 1] === 0 && bytes[i + 2] === 1;
        if (!start3) continue;
        const nal = bytes[i + 3];
        if ((nal & 0x1f) === 7) {
            const hex = (b) => b.toString(16).padStart(2, "0");
            return `avc1.${hex(bytes[i + 4])}${hex(bytes[i + 5])}${hex(bytes[i + 6])}`;
        }
    }
    return null;
}
