// test/integration/fleet.mjs — a fleet of devices over HTTP (66): each device
// of a list calls one route of isa-httpd with its own device token, many at
// once, and one line of JSON per device says what it got.
//
//   node fleet.mjs URL METHOD PATH [BODY_JSON] < DEVICES
//
// DEVICES: one device a line, "DEVICE_ID TOKEN".  BODY_JSON may name the
// device as {device_id}.  Prints, in the input's order, {"id", "status",
// "body"} (body parsed when JSON, else the text).  FLEET_CONCURRENCY: how many
// requests at once (16).
import { readFileSync } from "node:fs";

const [url, method, path, body] = process.argv.slice(2);
if (!url || !method || !path) {
  console.error("usage: node fleet.mjs URL METHOD PATH [BODY_JSON] < DEVICES");
  process.exit(2);
}
const devices = readFileSync(0, "utf8").split("\n").filter((l) => l.trim())
  .map((l) => { const [id, token] = l.trim().split(/\s+/); return { id, token }; });
const results = new Array(devices.length);
let next = 0;

async function worker() {
  while (next < devices.length) {
    const i = next++;
    const d = devices[i];
    const init = { method, headers: { Authorization: `Bearer ${d.token}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = body.replaceAll("{device_id}", d.id);
    }
    let status = 0, text = "";
    try {
      const r = await fetch(url + path, init);
      status = r.status;
      text = await r.text();
    } catch (e) {
      text = String(e);
    }
    let parsed = text;
    try { parsed = text === "" ? null : JSON.parse(text); } catch { /* not JSON: the text */ }
    results[i] = { id: d.id, status, body: parsed };
  }
}
await Promise.all(Array.from({ length: Number(process.env.FLEET_CONCURRENCY || 16) }, worker));
process.stdout.write(results.map((r) => JSON.stringify(r)).join("\n") + (results.length ? "\n" : ""));
