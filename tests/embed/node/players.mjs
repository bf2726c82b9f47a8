// The two WHEP players under test, bundled for the browser by tests/cdp/npm.py
// (esbuild, pinned): @eyevinn/webrtc-player and whip-whep (the WHEP draft
// author's client), exposed as window.WebRTCPlayer and window.WHEPClient.
import { WebRTCPlayer } from '@eyevinn/webrtc-player';
import { WHEPClient } from 'whip-whep/whep.js';

window.WebRTCPlayer = WebRTCPlayer;
window.WHEPClient = WHEPClient;
