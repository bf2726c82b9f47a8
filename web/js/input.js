// Page-side input: pointer, wheel, keyboard and paste -> API.md input messages.
//
// Every pointer position goes through clientToRemote() (coords.js). Keys are
// sent by DOM `key` name; a release always names the key used for the press
// (tracked by `code`), and everything still held is released on blur, on
// visibility loss and when control ends, so no key or button stays stuck.

import { clientToRemote } from "./coords.js";

const BUTTONS = ["left", "middle", "right"];
const WHEEL_STEP_PX = 100;

export class InputCapture extends EventTarget {
    /**
     * @param {HTMLElement} stage element receiving the events (focusable)
     * @param {() => ({element: Element, width: number, height: number} | null)} target
     * @param {(message: object) => boolean} send
     */
    constructor(stage, target, send) {
        super();
        this.stage = stage;
        this.target = target;
        this.send = send;
        this.enabled = false;
        this.keys = new Map();      // code -> key sent on press
        this.buttons = new Set();
        this.last = null;
        this.wheel = { x: 0, y: 0 };
        this.composing = false;
        const on = (el, type, fn, opts) => el.addEventListener(type, fn.bind(this), opts);
        on(stage, "pointermove", this.onPointerMove);
        on(stage, "pointerdown", this.onPointerDown);
        on(stage, "pointerup", this.onPointerUp);
        on(stage, "wheel", this.onWheel, { passive: false });
        on(stage, "contextmenu", (e) => { if (this.enabled) e.preventDefault(); });
        on(stage, "keydown", this.onKeyDown);
        on(stage, "keyup", this.onKeyUp);
        on(stage, "paste", this.onPaste);
        on(stage, "compositionstart", () => { this.composing = true; });
        on(stage, "compositionend", (e) => {
            this.composing = false;
            if (e.data) this.emitInput({ type: "text", text: e.data });
        });
        on(stage, "blur", () => this.releaseAll());
        on(window, "blur", () => this.releaseAll());
        on(document, "visibilitychange", () => { if (document.hidden) this.releaseAll(); });
    }

    setEnabled(enabled) {
        if (this.enabled && !enabled) this.releaseAll();
        this.enabled = enabled;
    }

    emitInput(message) {
        if (!this.enabled) return false;
        return this.send(message);
    }

    map(e) {
        const t = this.target();
        if (!t || !t.element) return null;
        return clientToRemote(e.clientX, e.clientY, t.element.getBoundingClientRect(), t.width, t.height);
    }

    moveTo(p) {
        if (this.last && this.last.x === p.x && this.last.y === p.y) return;
        if (this.emitInput({ type: "mouse_move", x: p.x, y: p.y })) this.last = { x: p.x, y: p.y };
    }

    onPointerMove(e) {
        if (!this.enabled) return;
        const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
        const p = this.map(events.length ? events[events.length - 1] : e);
        if (p) this.moveTo(p);
    }

    onPointerDown(e) {
        this.stage.focus({ preventScroll: true });
        if (!this.enabled) return;
        const p = this.map(e);
        const button = BUTTONS[e.button];
        if (!p || !button) return;
        e.preventDefault();
        this.stage.setPointerCapture?.(e.pointerId);
        this.moveTo(p);
        if (this.emitInput({ type: "mouse_down", button })) this.buttons.add(button);
    }

    onPointerUp(e) {
        if (!this.enabled) return;
        const button = BUTTONS[e.button];
        const p = this.map(e);
        if (p) this.moveTo(p);
        if (button && this.buttons.has(button)) {
            this.buttons.delete(button);
            this.emitInput({ type: "mouse_up", button });
        }
    }

    onWheel(e) {
        if (!this.enabled) return;
        e.preventDefault();
        const p = this.map(e);
        if (!p) return;
        const unit = e.deltaMode === 1 ? WHEEL_STEP_PX / 3 : e.deltaMode === 2 ? WHEEL_STEP_PX * 3 : 1;
        this.wheel.x += e.deltaX * unit;
        this.wheel.y += e.deltaY * unit;
        const dx = Math.trunc(this.wheel.x / WHEEL_STEP_PX);
        const dy = Math.trunc(this.wheel.y / WHEEL_STEP_PX);
        if (!dx && !dy) return;
        this.wheel.x -= dx * WHEEL_STEP_PX;
        this.wheel.y -= dy * WHEEL_STEP_PX;
        this.emitInput({ type: "scroll", x: p.x, y: p.y, dx, dy });
    }

    onKeyDown(e) {
        if (!this.enabled || this.composing || e.isComposing || e.key === "Process") return;
        // Ctrl/Cmd+V: let the browser fire "paste" and send the clipboard as text.
        if ((e.ctrlKey || e.metaKey) && !e.altKey && (e.key === "v" || e.key === "V")) return;
        if (e.key === "Dead" || e.key === "Unidentified") return;
        e.preventDefault();
        const code = e.code || e.key;
        const key = this.keys.get(code) ?? e.key;
        this.keys.set(code, key);
        this.emitInput({ type: "key_down", key });
    }

    onKeyUp(e) {
        if (!this.enabled) return;
        const code = e.code || e.key;
        const key = this.keys.get(code);
        if (key === undefined) return;
        e.preventDefault();
        this.keys.delete(code);
        this.emitInput({ type: "key_up", key });
    }

    onPaste(e) {
        if (!this.enabled) return;
        const text = e.clipboardData ? e.clipboardData.getData("text/plain") : "";
        if (!text) return;
        e.preventDefault();
        this.emitInput({ type: "text", text });
    }

    /** Release every key and button this page pressed (blur, control lost). */
    releaseAll() {
        for (const key of this.keys.values()) this.send({ type: "key_up", key });
        this.keys.clear();
        for (const button of this.buttons) this.send({ type: "mouse_up", button });
        this.buttons.clear();
    }
}
