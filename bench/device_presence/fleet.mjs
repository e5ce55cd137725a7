#!/usr/bin/env node
// bench/device_presence/fleet.mjs — a fleet of MQTT devices in one process
// (mqtt.js, MQTT 3.1.1), driven by bench/device_presence/run over stdin: one
// command a line, one answer line on stdout each.  A device connects to the
// stack's MQTT listener with its NATS JWT as password (docs/services/device.md,
// "MQTT"), subscribes to isa/devices/<id>/commands (QoS BENCH_SUB_QOS, 0),
// answers every command on isa/devices/<id>/acks (QoS BENCH_ACK_QOS, 1;
// message_id "ack-<command_id>", "bench-baseline" for the baseline's) and
// records when it first received it; heartbeats are QoS 0 on
// isa/devices/<id>/heartbeat.  Times are epoch milliseconds (the clock
// PostgreSQL's clock_timestamp() reads).
//
//   connect FILE            devices from FILE (device_id TAB jwt a line):
//                           "connected N failed F seconds S"
//   beat RATE COUNT         COUNT heartbeats at RATE/s, round robin over the
//                           devices: "beat sent N seconds S" when done;
//                           COUNT 0: until "stop" ("ok" at once)
//   stop                    ends an endless beat: "beat sent N seconds S"
//   receipts FILE           writes command_id TAB first-receipt-time of the
//                           commands received so far and forgets them:
//                           "receipts N duplicates D"
//   baseline RATE SECONDS   the same round trip without the database: a NATS
//                           client (ISA_NATS_URL, ISA_NATS_CREDS) publishes a
//                           command on isa.devices.<id>.commands as the bridge
//                           does and takes the device's ack from
//                           isa.devices.*.acks: "baseline sent N received M
//                           p50 MS p99 MS"
//   stats                   "stats connected N lost L"
//   quit                    closes every connection and exits
import mqtt from "mqtt";
import { connect as natsConnect, credsAuthenticator, StringCodec } from "nats";
import { readFileSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { randomUUID } from "node:crypto";

const url = `mqtt://127.0.0.1:${process.env.ISA_MQTT_PORT}`;
const CONNECTING = Number(process.env.BENCH_CONNECT_CONCURRENCY ?? 200);
const SUB_QOS = Number(process.env.BENCH_SUB_QOS ?? 0);
const ACK_QOS = Number(process.env.BENCH_ACK_QOS ?? 1);
const clock = () => performance.timeOrigin + performance.now();
const say = (line) => process.stdout.write(line + "\n");

let devices = []; // { id, client }
let lost = 0;
const receipts = new Map(); // command_id -> first receipt time
let duplicates = 0;
const baselineSent = new Map(); // command_id -> publish time
const baselineRtt = [];

function onCommand(dev, payload) {
  const t = clock();
  let msg;
  try {
    msg = JSON.parse(payload);
  } catch {
    return;
  }
  if (typeof msg.command_id !== "string") return;
  if (!msg.baseline) {
    if (receipts.has(msg.command_id)) duplicates++;
    else receipts.set(msg.command_id, t);
  }
  // a re-sent command is answered again (the service ignores a repeated answer)
  const mid = msg.baseline ? "bench-baseline" : "ack-" + msg.command_id;
  dev.client.publish(`isa/devices/${dev.id}/acks`,
    JSON.stringify({ command_id: msg.command_id, ok: true, message_id: mid }), { qos: ACK_QOS });
}

function connectOne(id, jwt) {
  return new Promise((resolve) => {
    const client = mqtt.connect(url, {
      clientId: id, username: id, password: jwt, protocolVersion: 4, clean: true,
      keepalive: 60, reconnectPeriod: 0, connectTimeout: 60000,
    });
    const dev = { id, client };
    let up = false;
    client.once("connect", () => {
      client.subscribe(`isa/devices/${id}/commands`, { qos: SUB_QOS }, (err, granted) => {
        if (err || !granted?.length || granted[0].qos !== SUB_QOS) {
          client.end(true);
          resolve(null);
          return;
        }
        up = true;
        resolve(dev);
      });
    });
    client.on("message", (_topic, payload) => onCommand(dev, payload));
    client.on("error", () => {});
    client.on("close", () => {
      if (up) { up = false; lost++; } else resolve(null);
    });
  });
}

async function connectAll(file) {
  const lines = readFileSync(file, "utf8").split("\n").filter(Boolean);
  const t0 = clock();
  let next = 0, failed = 0;
  const worker = async () => {
    while (next < lines.length) {
      const [id, jwt] = lines[next++].split("\t");
      const dev = await connectOne(id, jwt);
      if (dev) devices.push(dev); else failed++;
    }
  };
  await Promise.all(Array.from({ length: CONNECTING }, worker));
  return `connected ${devices.length} failed ${failed} seconds ${((clock() - t0) / 1000).toFixed(2)}`;
}

// heartbeats: every 5 ms, as many as the rate says are due by now
let beat = null;
function startBeat(rate, count, done) {
  const t0 = clock();
  let sent = 0, k = 0;
  const payload = "{}";
  const timer = setInterval(() => {
    const due = Math.min(Math.floor(((clock() - t0) / 1000) * rate), count || Infinity);
    for (; sent < due; sent++) {
      const dev = devices[k++ % devices.length];
      dev.client.publish(`isa/devices/${dev.id}/heartbeat`, payload, { qos: 0 });
    }
    if (count && sent >= count) finish();
  }, 5);
  const finish = () => {
    clearInterval(timer);
    beat = null;
    done(`beat sent ${sent} seconds ${((clock() - t0) / 1000).toFixed(2)}`);
  };
  beat = { finish };
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}

async function baseline(rate, seconds) {
  const creds = process.env.ISA_NATS_CREDS;
  const nc = await natsConnect({
    servers: process.env.ISA_NATS_URL,
    ...(creds ? { authenticator: credsAuthenticator(readFileSync(creds)) } : {}),
  });
  const sc = StringCodec();
  baselineSent.clear();
  baselineRtt.length = 0;
  const sub = nc.subscribe("isa.devices.*.acks", {
    callback: (_err, m) => {
      const t = clock();
      try {
        const { command_id } = JSON.parse(sc.decode(m.data));
        const t0 = baselineSent.get(command_id);
        if (t0 !== undefined) { baselineRtt.push(t - t0); baselineSent.delete(command_id); }
      } catch { /* not ours */ }
    },
  });
  await nc.flush();
  const total = Math.round(rate * seconds);
  const t0 = clock();
  let sent = 0, k = 0;
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(Math.floor(((clock() - t0) / 1000) * rate), total);
      for (; sent < due; sent++) {
        const dev = devices[(k++ * 7919) % devices.length];
        const command_id = randomUUID();
        baselineSent.set(command_id, clock());
        nc.publish(`isa.devices.${dev.id}.commands`, sc.encode(JSON.stringify(
          { command_id, command: "bench.baseline", args: {}, expires_at: null, attempt: 1, baseline: true })));
      }
      if (sent >= total) { clearInterval(timer); resolve(); }
    }, 5);
  });
  const deadline = clock() + 10000;
  while (baselineRtt.length < sent && clock() < deadline) await new Promise((r) => setTimeout(r, 20));
  sub.unsubscribe();
  await nc.close();
  const s = [...baselineRtt].sort((a, b) => a - b);
  return `baseline sent ${sent} received ${s.length} p50 ${percentile(s, 0.5).toFixed(2)} p99 ${percentile(s, 0.99).toFixed(2)}`;
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const [cmd, ...args] = line.trim().split(/\s+/);
  try {
    switch (cmd) {
      case "connect":
        say(await connectAll(args[0]));
        break;
      case "beat": {
        const rate = Number(args[0]), count = Number(args[1]);
        if (beat) { say("error a beat is running"); break; }
        if (count > 0) await new Promise((resolve) => startBeat(rate, count, (r) => { say(r); resolve(); }));
        else { startBeat(rate, 0, say); say("ok"); }
        break;
      }
      case "stop":
        if (beat) beat.finish(); else say("error no beat is running");
        break;
      case "receipts": {
        writeFileSync(args[0], [...receipts].map(([c, t]) => `${c}\t${t.toFixed(3)}\n`).join(""));
        say(`receipts ${receipts.size} duplicates ${duplicates}`);
        receipts.clear();
        duplicates = 0;
        break;
      }
      case "baseline":
        say(await baseline(Number(args[0]), Number(args[1])));
        break;
      case "stats":
        say(`stats connected ${devices.length - lost} lost ${lost}`);
        break;
      case "quit":
        if (beat) beat.finish = () => {};
        await Promise.all(devices.map((d) => d.client.endAsync(true).catch(() => {})));
        process.exit(0);
        break;
      default:
        say(`error unknown command ${cmd}`);
    }
  } catch (e) {
    say(`error ${String(e.message ?? e).replace(/\s+/g, " ")}`);
  }
}
process.exit(0);
