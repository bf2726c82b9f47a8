// WebRTC through WHEP, with the receiver's playout delay minimised.

import { RateMeter, Transport } from "./transport.js";

export class WebRtcTransport extends Transport {
    get name() { return "webrtc"; }

    async start() {
        if (typeof RTCPeerConnection === "undefined") throw new Error("WebRTC is not available");
        const video = document.createElement("video");
        video.className = "remote";
        video.muted = true;
        video.autoplay = true;
        video.playsInline = true;
        video.disablePictureInPicture = true;
        this.element = video;
        this.stage.prepend(video);
        this.meter = new RateMeter();

        // STUN/TURN from the gateway's --ice-server (GET /sessions/{id}/info), else none
        const pc = new RTCPeerConnection({ iceServers: this.api.iceServers || [] });
        this.pc = pc;
        const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
        preferH264(transceiver);
        this.channel = pc.createDataChannel("input", { ordered: true });
        this.channel.onmessage = (e) => this.handleServerText(e.data);

        const firstFrame = new Promise((resolve, reject) => {
            pc.ontrack = (e) => {
                // Lowest delay: no jitter-buffer target, no playout delay.
                try { e.receiver.jitterBufferTarget = 0; } catch { /* older browsers */ }
                try { e.receiver.playoutDelayHint = 0; } catch { /* not Chromium */ }
                video.srcObject = e.streams[0] || new MediaStream([e.track]);
                video.play().catch(() => {});
            };
            const count = () => {
                if (this.closed) return;
                this.framesShown++;
                if (this.framesShown === 1) resolve();
                video.requestVideoFrameCallback(count);
            };
            video.requestVideoFrameCallback(count);
            pc.onconnectionstatechange = () => {
                const state = pc.connectionState;
                if (state === "failed" || state === "closed") {
                    reject(new Error(`WebRTC connection ${state}`));
                    this.close(`WebRTC connection ${state}`);
                } else if (state === "disconnected") {
                    this.disconnectTimer = setTimeout(() => {
                        if (pc.connectionState === "disconnected") this.close("WebRTC disconnected");
                    }, 3000);
                }
            };
        });

        await pc.setLocalDescription(await pc.createOffer());
        await iceGatheringDone(pc, 2000);
        const resp = await this.api.request("POST", `${this.api.base}/whep`, {
            body: pc.localDescription.sdp, headers: { "Content-Type": "application/sdp" },
        });
        this.location = resp.headers.get("Location");
        await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
        await firstFrame;
        this.started = true;
    }

    send(message) {
        if (!this.channel || this.channel.readyState !== "open") return false;
        this.channel.send(JSON.stringify(message));
        return true;
    }

    async stats() {
        const out = { fps: null, bitrateKbps: null, rttMs: null };
        if (!this.pc) return out;
        let bytes = null;
        const report = await this.pc.getStats();
        report.forEach((s) => {
            if (s.type === "inbound-rtp" && s.kind === "video") bytes = s.bytesReceived;
            if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" &&
                s.currentRoundTripTime !== undefined) out.rttMs = s.currentRoundTripTime * 1000;
        });
        return { ...out, ...this.meter.sample(this.framesShown, bytes) };
    }

    teardown() {
        clearTimeout(this.disconnectTimer);
        if (this.location) {
            this.api.request("DELETE", this.location).catch(() => {});
        }
        if (this.pc) this.pc.close();
    }
}

function preferH264(transceiver) {
    if (!RTCRtpReceiver.getCapabilities || !transceiver.setCodecPreferences) return;
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
    const rank = (c) => {
        const mime = c.mimeType.toLowerCase();
        if (mime === "video/h264" && /packetization-mode=1/.test(c.sdpFmtpLine || "")) {
            return /profile-level-id=42e0/.test(c.sdpFmtpLine) ? 0 : 1;
        }
        if (mime === "video/vp8") return 2;
        return 3;
    };
    transceiver.setCodecPreferences([...codecs].sort((a, b) => rank(a) - rank(b)));
}

function iceGatheringDone(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        pc.addEventListener("icegatheringstatechange", () => {
            if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
        });
    });
}
