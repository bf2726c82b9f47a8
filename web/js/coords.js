// The ONE client -> remote coordinate function of the viewer.
//
// Every transport shows the remote screen in an element laid out with
// `object-fit: contain` (a <video>, a <canvas> or noVNC's canvas), so the
// picture is scaled uniformly and centred (letterboxed) inside the element's
// box. That holds for "fit" (element = stage size) and "1:1" (element =
// remote size) alike; only the rectangle changes.

/**
 * Map a point in CSS client pixels to remote screen pixels.
 * @param {number} clientX
 * @param {number} clientY
 * @param {{left:number, top:number, width:number, height:number}} rect element's client rect
 * @param {number} remoteWidth
 * @param {number} remoteHeight
 * @returns {{x:number, y:number, inside:boolean}} clamped remote pixel, and
 *   whether the point was on the picture (not in the letterbox)
 */
export function clientToRemote(clientX, clientY, rect, remoteWidth, remoteHeight) {
    const scale = Math.min(rect.width / remoteWidth, rect.height / remoteHeight);
    const offsetX = (rect.width - remoteWidth * scale) / 2;
    const offsetY = (rect.height - remoteHeight * scale) / 2;
    const fx = (clientX - rect.left - offsetX) / scale;
    const fy = (clientY - rect.top - offsetY) / scale;
    const inside = fx >= 0 && fy >= 0 && fx < remoteWidth && fy < remoteHeight;
    const x = Math.min(remoteWidth - 1, Math.max(0, Math.floor(fx)));
    const y = Math.min(remoteHeight - 1, Math.max(0, Math.floor(fy)));
    return { x, y, inside };
}

/** The inverse, for tests and overlays: centre of remote pixel (x, y) in client pixels. */
export function remoteToClient(x, y, rect, remoteWidth, remoteHeight) {
    const scale = Math.min(rect.width / remoteWidth, rect.height / remoteHeight);
    const offsetX = (rect.width - remoteWidth * scale) / 2;
    const offsetY = (rect.height - remoteHeight * scale) / 2;
    return { x: rect.left + offsetX + (x + 0.5) * scale, y: rect.top + offsetY + (y + 0.5) * scale };
}
