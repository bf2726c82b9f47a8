// Thin client of the gateway API for the viewer page (token in a Bearer header).

export class ApiError extends Error {
    constructor(status, problem) {
        super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
        this.status = status;
        this.problem = problem;
    }
}

export class SessionApi {
    constructor(sessionId, token) {
        this.sessionId = sessionId;
        this.token = token;
        this.base = `/api/visual-sessions/${encodeURIComponent(sessionId)}`;
        /** RTCIceServer entries for WebRTC (set from /info's ice_servers). */
        this.iceServers = [];
    }

    headers(extra = {}) {
        return { Authorization: `Bearer ${this.token}`, ...extra };
    }

    async request(method, url, { json, body, headers, signal } = {}) {
        const init = { method, headers: this.headers(headers), signal, cache: "no-store" };
        if (json !== undefined) {
            init.body = JSON.stringify(json);
            init.headers["Content-Type"] = "application/json";
        } else if (body !== undefined) {
            init.body = body;
        }
        const resp = await fetch(url, init);
        if (!resp.ok) {
            let problem = null;
            try { problem = await resp.json(); } catch { /* not JSON */ }
            throw new ApiError(resp.status, problem);
        }
        return resp;
    }

    async info() {
        const url = `/sessions/${encodeURIComponent(this.sessionId)}/info`;
        return (await this.request("GET", url)).json();
    }

    async waitRunning() {
        return (await this.request("GET", `${this.base}?wait=running`)).json();
    }

    async control() {
        return (await this.request("GET", `${this.base}/control`)).json();
    }

    async setControl(action) {
        return (await this.request("POST", `${this.base}/control`, { json: { action } })).json();
    }

    async listFiles() {
        return (await this.request("GET", `${this.base}/files`)).json();
    }

    fileUrl(path) {
        return `${this.base}/files/${path.split("/").map(encodeURIComponent).join("/")}`;
    }

    async uploadFile(file) {
        await this.request("PUT", this.fileUrl(file.name), {
            body: file, headers: { "Content-Type": "application/octet-stream" },
        });
    }

    async download(url, filename) {
        // A plain <a href> cannot carry the Bearer header: fetch, then save the blob.
        const resp = await this.request("GET", url);
        const blob = await resp.blob();
        const a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = filename;
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }

    wsUrl(path) {
        const proto = location.protocol === "https:" ? "wss:" : "ws:";
        return `${proto}//${location.host}/sessions/${encodeURIComponent(this.sessionId)}/${path}` +
            `?token=${encodeURIComponent(this.token)}`;
    }
}
