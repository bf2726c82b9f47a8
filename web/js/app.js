// The viewer page: wiring of API, transport chain, input, control and panels.
// Exposed as `window.vrViewer` for tests and the latency benchmark.

import { SessionApi } from "./api.js";
import { ORDER, TransportChain } from "./chain.js";
import { EmbedBridge, embedMode } from "./embed.js";
import { InputCapture } from "./input.js";

const $ = (id) => document.getElementById(id);

export class ViewerApp extends EventTarget {
    constructor() {
        super();
        const params = new URLSearchParams(location.search);
        const parts = location.pathname.split("/").filter(Boolean);   // sessions/{id}
        this.sessionId = decodeURIComponent(parts[1] || "");
        this.api = new SessionApi(this.sessionId, params.get("token") || "");
        this.forced = ORDER.includes(params.get("transport")) ? params.get("transport") : null;
        this.mode = params.get("mode") === "1:1" ? "1:1" : "fit";
        this.embed = embedMode(params.get("embed"));
        if (this.embed) document.body.dataset.embed = this.embed;
        this.bridge = null;
        this.stage = $("stage");
        this.transport = null;
        this.state = "connecting";
        this.stateDetail = "";
        this.controller = "agent";
        this.holdsControl = false;
        this.info = null;
        this.reconnectTimer = null;
        this.input = new InputCapture(this.stage, () => this.inputTarget(),
            (m) => (this.transport && !this.transport.ownInput ? this.transport.send(m) : false));
    }

    async run() {
        this.bindUi();
        try {
            this.info = await this.api.info();
        } catch (e) {
            this.setState("error", `cannot open this session: ${e.message}`);
            return;
        }
        this.size = { width: this.info.width, height: this.info.height };
        this.api.iceServers = this.info.ice_servers || [];
        if (this.embed) {
            this.bridge = new EmbedBridge(this, this.info.embed_origins || []);
            this.bridge.start();
        }
        this.applyInfo(this.info);
        if (this.info.status === "starting") {
            this.setState("connecting", "waiting for the session to start");
            try { await this.api.waitRunning(); } catch { /* connect() reports it */ }
        }
        this.followEvents();
        this.statsTimer = setInterval(() => this.updateStats(), 1000);
        await this.connect();
    }

    // ---------------------------------------------------------------- connect
    async connect() {
        clearTimeout(this.reconnectTimer);
        if (this.transport) {
            const old = this.transport;
            this.transport = null;
            old.close("reconnect");
        }
        const chain = new TransportChain(this.api, this.stage, this.size);
        chain.addEventListener("trying", (e) => this.setState("connecting", `trying ${e.detail.name}…`));
        let transport;
        try {
            transport = await chain.connect(this.forced);
        } catch (e) {
            this.setState("error", e.message);
            this.scheduleReconnect(5000);
            return;
        }
        this.transport = transport;
        this.attempts = chain.attempts;
        transport.setMode(this.mode);
        transport.addEventListener("control", () => this.refreshControl());
        transport.addEventListener("message", (e) => this.onServerMessage(e.detail.message));
        transport.addEventListener("closed", (e) => {
            if (this.transport !== transport) return;
            this.transport = null;
            this.input.setEnabled(false);
            this.setState("disconnected", e.detail.reason);
            this.scheduleReconnect(1000);
        });
        this.stage.dataset.transport = transport.name;
        $("transport-name").textContent = transport.name;
        this.setState("connected", `live via ${transport.name}`);
        this.applyControl();
        this.dispatchEvent(new CustomEvent("connected", { detail: { transport: transport.name } }));
    }

    scheduleReconnect(ms) {
        if (this.ended) return;
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = setTimeout(() => this.connect(), ms);
    }

    inputTarget() {
        const t = this.transport;
        if (!t || !t.element) return null;
        return { element: t.element, width: t.remoteWidth, height: t.remoteHeight };
    }

    // ---------------------------------------------------------------- control
    applyInfo(info) {
        this.controller = info.controller;
        this.holdsControl = info.holds_control;
        document.body.dataset.tokenKind = info.token_kind;
        $("btn-control").hidden = !info.may_control;
        $("btn-recording").hidden = !info.enable_recording;
        $("btn-files").hidden = !info.enable_file_transfer;
        this.applyControl();
    }

    applyControl() {
        const mine = this.controller === "human" && this.holdsControl;
        this.input.setEnabled(mine && !!this.transport && !this.transport.ownInput);
        if (this.transport) this.transport.setInputEnabled(mine);
        const who = this.controller === "agent" ? "agent" : mine ? "you" : "another viewer";
        $("controller").textContent = who;
        $("controller").dataset.who = who;
        document.body.dataset.control = mine ? "mine" : this.controller;
        const btn = $("btn-control");
        btn.textContent = mine ? "Release control" : "Take control";
        btn.disabled = this.controller === "human" && !mine;
        if (mine) this.stage.focus({ preventScroll: true });
        this.dispatchEvent(new CustomEvent("control", { detail: { controller: this.controller, mine } }));
    }

    async refreshControl() {
        try {
            this.applyInfo(await this.api.info());
        } catch (e) {
            console.warn("control refresh failed", e);
        }
    }

    async toggleControl() {
        const mine = this.controller === "human" && this.holdsControl;
        $("btn-control").disabled = true;
        try {
            await this.requestControl(mine ? "release" : "take");
        } catch (e) {
            this.flash(`control: ${e.message}`);
        }
    }

    /** Take or release control ("take" | "release"); throws the API's error. */
    async requestControl(action) {
        try {
            await this.api.setControl(action);
        } finally {
            await this.refreshControl();
        }
    }

    onServerMessage(message) {
        if (message.type === "error" && message.code === "not_in_control") this.refreshControl();
    }

    followEvents() {
        const url = `${this.api.base}/events?token=${encodeURIComponent(this.api.token)}`;
        const source = new EventSource(url);
        this.events = source;
        source.addEventListener("control", () => this.refreshControl());
        source.addEventListener("status", (e) => {
            const data = JSON.parse(e.data);
            if (["stopped", "expired", "failed"].includes(data.status)) {
                this.ended = true;
                source.close();
                this.setState("ended", `session ${data.status}`);
            }
        });
    }

    // --------------------------------------------------------------------- ui
    bindUi() {
        $("btn-control").addEventListener("click", () => this.toggleControl());
        $("btn-reconnect").addEventListener("click", () => this.connect());
        $("btn-fit").addEventListener("click", () => this.setMode("fit"));
        $("btn-one").addEventListener("click", () => this.setMode("1:1"));
        $("btn-full").addEventListener("click", () => this.stage.requestFullscreen?.());
        $("btn-stats").addEventListener("click", () => { $("stats").hidden = !$("stats").hidden; });
        $("btn-paste").addEventListener("click", () => this.pasteText());
        $("btn-recording").addEventListener("click", () =>
            this.api.download(`${this.api.base}/recording`, `${this.sessionId}.mp4`)
                .catch((e) => this.flash(`recording: ${e.message}`)));
        $("btn-files").addEventListener("click", () => this.toggleFiles());
        $("file-upload").addEventListener("change", (e) => this.upload(e.target.files));
        $("btn-vnc").href = `/sessions/${encodeURIComponent(this.sessionId)}/vnc/?token=` +
            encodeURIComponent(this.api.token);
        const select = $("transport-select");
        select.value = this.forced || "auto";
        select.addEventListener("change", () => {
            this.forced = select.value === "auto" ? null : select.value;
            const url = new URL(location.href);
            if (this.forced) url.searchParams.set("transport", this.forced);
            else url.searchParams.delete("transport");
            history.replaceState(null, "", url);
            this.connect();
        });
        this.setMode(this.mode);
    }

    setMode(mode) {
        this.mode = mode;
        this.stage.dataset.mode = mode;
        $("btn-fit").classList.toggle("active", mode === "fit");
        $("btn-one").classList.toggle("active", mode === "1:1");
        if (this.transport) this.transport.setMode(mode);
        if (this.size) {
            this.stage.style.setProperty("--remote-w", `${this.size.width}px`);
            this.stage.style.setProperty("--remote-h", `${this.size.height}px`);
        }
    }

    setState(state, detail = "") {
        this.state = state;
        this.stateDetail = detail;
        document.body.dataset.state = state;
        $("state").textContent = state;
        $("state").title = detail;
        $("state-detail").textContent = detail;
        this.dispatchEvent(new CustomEvent("state", { detail: { state, detail } }));
    }

    async updateStats() {
        const t = this.transport;
        if (!t) return;
        const s = await t.stats();
        const fmt = (v, unit, digits = 0) => (v === null || v === undefined ? "–" : `${v.toFixed(digits)} ${unit}`);
        $("stat-transport").textContent = t.name;
        $("stat-fps").textContent = fmt(s.fps, "fps", 1);
        $("stat-bitrate").textContent = s.bitrateKbps === null || s.bitrateKbps === undefined ? "–"
            : s.bitrateKbps >= 1000 ? `${(s.bitrateKbps / 1000).toFixed(2)} Mbit/s` : `${s.bitrateKbps.toFixed(0)} kbit/s`;
        $("stat-rtt").textContent = fmt(s.rttMs, "ms", 1);
        $("stat-size").textContent = `${t.remoteWidth}×${t.remoteHeight}`;
        this.lastStats = s;
    }

    async pasteText() {
        const text = prompt("Text to type into the session:");
        if (!text) return;
        if (!this.input.emitInput({ type: "text", text })) this.flash("take control to type");
    }

    async toggleFiles() {
        const panel = $("files");
        panel.hidden = !panel.hidden;
        if (!panel.hidden) await this.listFiles();
    }

    async listFiles() {
        const list = $("file-list");
        list.replaceChildren();
        try {
            const { files } = await this.api.listFiles();
            if (!files.length) list.append(Object.assign(document.createElement("li"), { textContent: "(empty)" }));
            for (const f of files) {
                const li = document.createElement("li");
                const a = document.createElement("a");
                a.href = "#";
                a.textContent = f.path;
                a.addEventListener("click", (e) => {
                    e.preventDefault();
                    this.api.download(this.api.fileUrl(f.path), f.path.split("/").pop())
                        .catch((err) => this.flash(`download: ${err.message}`));
                });
                li.append(a, ` ${formatBytes(f.size)}`);
                list.append(li);
            }
        } catch (e) {
            list.append(Object.assign(document.createElement("li"), { textContent: `cannot list files: ${e.message}` }));
        }
    }

    async upload(files) {
        for (const file of files) {
            try {
                await this.api.uploadFile(file);
                this.flash(`uploaded ${file.name}`);
            } catch (e) {
                this.flash(`upload ${file.name}: ${e.message}`);
            }
        }
        $("file-upload").value = "";
        await this.listFiles();
    }

    flash(text) {
        const el = $("flash");
        el.textContent = text;
        el.hidden = false;
        clearTimeout(this.flashTimer);
        this.flashTimer = setTimeout(() => { el.hidden = true; }, 4000);
    }
}

function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

const app = new ViewerApp();
window.vrViewer = app;
app.run();
