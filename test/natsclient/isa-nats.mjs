#!/usr/bin/env node
// test/natsclient/isa-nats.mjs — an independent NATS JetStream client for isa's
// tests (nats.js v2; shares no code with the bridge).  Every command prints
// machine-readable output (one JSON line, JSON lines, or numbers) and exits 0
// only if it did what was asked.  Usage: isa-nats.mjs help
import { connect, credsAuthenticator } from "nats";
import { readFileSync, writeFileSync } from "node:fs";
import { randomUUID, randomBytes } from "node:crypto";
import { parseArgs } from "node:util";

const USAGE = `usage: isa-nats.mjs COMMAND [ARGS] [--server URL[,URL…]] [--timeout-ms T]
  (server list from --server or $ISA_NATS_URL, comma-separated; credentials from --creds FILE
  or $ISA_NATS_CREDS, a NATS creds file; the inbox prefix from --inbox-prefix, else the one
  the credential may subscribe to (its _INBOX.<party>.> permission), else _INBOX)

  pub SUBJECT [--id MSGID] [--file PATH | --data STRING] [--count N] [--inflight W]
      JetStream publish, waiting for every PubAck.  With --count N > 1 and --id X
      the ids are X-1 … X-N.  Prints {"published","duplicates","stream","first_seq","last_seq"}.
  pub-raw SUBJECT --file PATH [--id MSGID]
      publish the file's bytes unchanged (not JSON, large …); prints the same JSON.
  pub-events EVENT_TYPE [--count N] [--data-template JSON] [--source external]
      [--version 1.0.0] [--correlation-id ID] [--uuid v7|v4] [--ids-file PATH] [--inflight W]
      [--rate R]
      publish N valid isa envelopes to <source>.<EVENT_TYPE>, Nats-Msg-Id = id.
      "{{i}}" in the template is replaced by the message number (1…N).
      --rate paces the publishing at R events/s (default: as fast as PubAcks come).
      --values-file PATH: "{{v}}" in the template is replaced by line ((i-1) mod n) + 1 of PATH.
      Prints the number of published (acknowledged, not duplicate) events.
  sub FILTER [--count N] [--timeout-ms T] [--stream S] [--consumer NAME]
      ordered consumer from the start of the stream; one JSON line per message
      {"seq","subject","headers","data","raw_len"}; exit 1 if fewer than N arrived in T ms.
      --consumer NAME: instead, the durable pull consumer NAME, made again from the start
      of the stream (deleted first if it exists), each message acked: what a read-only
      subscriber credential does with the consumers it owns.
  count FILTER [--stream S] [--timeout-ms T]
      prints "TOTAL UNIQUE": messages matching FILTER and distinct Nats-Msg-Id among them
      (read through a durable consumer of the stream's replicas, deleted afterwards).
  stream-info [--stream S]           JSON of the stream's config, state and cluster
  stream-create NAME --subjects A,B [--replicas R] [--storage file|memory]
      [--duplicate-window-ms MS] [--max-msg-size BYTES]   add (or update) a stream; prints its info
  stream-delete NAME                 delete a stream; prints {"deleted":true}
  consumer-info STREAM DURABLE       JSON of the consumer's info (num_pending, num_ack_pending, …)
  consumer-delete STREAM DURABLE     delete a consumer; prints {"deleted":true}
  may-pub SUBJECT | may-sub SUBJECT  whether the server lets this credential publish (an empty
      core message) or subscribe there: prints {"op","subject","allowed","error"}, exit 0 either way
  help

  --stream defaults to ISA_EVENTS.  --timeout-ms (default 10000) is the PubAck wait of the
  pub commands, the total wait of sub, and the longest silence count accepts.`;

const { values: opt, positionals: pos } = parseArgs({
  allowPositionals: true,
  options: {
    server: { type: "string" },
    stream: { type: "string", default: "ISA_EVENTS" },
    "timeout-ms": { type: "string", default: "10000" },
    id: { type: "string" },
    file: { type: "string" },
    data: { type: "string" },
    count: { type: "string" },
    inflight: { type: "string", default: "256" },
    "data-template": { type: "string", default: "{}" },
    source: { type: "string", default: "external" },
    version: { type: "string", default: "1.0.0" },
    "correlation-id": { type: "string" },
    uuid: { type: "string", default: "v7" },
    "ids-file": { type: "string" },
    subjects: { type: "string" },
    replicas: { type: "string", default: "1" },
    storage: { type: "string", default: "file" },
    "duplicate-window-ms": { type: "string" },
    "max-msg-size": { type: "string" },
    rate: { type: "string" },
    "values-file": { type: "string" },
    creds: { type: "string" },
    "inbox-prefix": { type: "string" },
    consumer: { type: "string" },
  },
});

class UsageError extends Error {}
const die = (msg) => { throw new UsageError(msg); };
const int = (name, v) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) die(`--${name} must be a non-negative integer, not '${v}'`);
  return n;
};
const timeoutMs = int("timeout-ms", opt["timeout-ms"]);
const ns = (ms) => ms * 1e6;

// ---------------------------------------------------------------- helpers
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const attemptMs = Math.min(timeoutMs, 5000) || 1;

// Calls fn until it succeeds or timeoutMs has passed.  Retried: 503 (no
// responders: no stream leader during an election, node restarting) always,
// a timeout only when the call is idempotent (a publish with a Nats-Msg-Id is).
async function retry(fn, idempotent = true) {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    try { return await fn(); } catch (e) {
      const again = e.code === "503" || (idempotent && e.code === "TIMEOUT");
      if (!again || Date.now() + delay >= deadline) throw e;
      await sleep(delay);
    }
  }
}

function uuidV7() {
  const b = randomBytes(16);
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i++) b[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  b[6] = (b[6] & 0x0f) | 0x70; // version 7
  b[8] = (b[8] & 0x3f) | 0x80; // variant 10
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// RFC 3339, UTC, six fractional digits (isa's wire form: 2026-11-27T08:39:20.586600Z)
function nowRfc3339Micro() {
  const us = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
  const iso = new Date(Number(us / 1000n)).toISOString(); // …SS.mmmZ
  return `${iso.slice(0, 19)}.${String(us % 1000000n).padStart(6, "0")}Z`;
}

function headersObject(h) {
  if (!h) return {};
  const o = {};
  for (const [k, v] of h) o[k] = v.length === 1 ? v[0] : v;
  return o;
}

function parseJson(bytes) {
  try { return JSON.parse(Buffer.from(bytes).toString("utf8")); } catch { return null; }
}

const jsmOf = (nc) => retry(() => nc.jetstreamManager({ timeout: attemptMs }));

async function ensureStream(jsm, stream) {
  try { return await retry(() => jsm.streams.info(stream)); } catch (e) {
    throw new Error(`stream ${stream}: ${e.message}`);
  }
}

// Publishes items (async generator of {subject, data, id}) keeping at most
// `window` PubAcks outstanding.  Returns counts; throws on the first failure.
async function publishAll(js, items, window) {
  const res = { published: 0, duplicates: 0, stream: null, first_seq: null, last_seq: null };
  const pending = new Set();
  let failure = null;
  const note = (ack) => {
    if (ack.duplicate) res.duplicates++; else res.published++;
    res.stream = ack.stream;
    if (!ack.duplicate) {
      if (res.first_seq === null || ack.seq < res.first_seq) res.first_seq = ack.seq;
      if (res.last_seq === null || ack.seq > res.last_seq) res.last_seq = ack.seq;
    }
  };
  for await (const it of items) {
    if (failure) break;
    const o = { timeout: attemptMs };
    if (it.id !== undefined) o.msgID = it.id;
    const p = retry(() => js.publish(it.subject, it.data, o), it.id !== undefined)
      .then(note, (e) => {
        const why = e.code === "503" ? "503 no responders (no stream captures this subject?)" : e.message;
        failure ??= new Error(`publish to ${it.subject}${it.id ? ` (id ${it.id})` : ""}: ${why}`);
      })
      .finally(() => pending.delete(p));
    pending.add(p);
    if (pending.size >= window) await Promise.race(pending);
  }
  await Promise.all(pending);
  if (failure) throw failure;
  return res;
}

// Ordered consumer (replicated: a durable one of the stream's replicas, deleted
// afterwards) over FILTER from the first message; calls onMsg(m) until it
// returns false.  Resolves when onMsg asked to stop, when the stream has no more
// matching messages (stopWhenDrained), or rejects after `idleMs` without messages.
async function readOrdered(js, jsm, stream, filter, onMsg, { stopWhenDrained, idleMs, totalMs, replicated }) {
  await ensureStream(jsm, stream);
  if (stopWhenDrained) {
    // Nothing matches: an ordered consumer would just wait.
    const withSubjects = await retry(() => jsm.streams.info(stream, { subjects_filter: filter }));
    const n = Object.values(withSubjects.state.subjects ?? {}).reduce((a, b) => a + b, 0);
    if (n === 0) return;
  }
  let c, durable = null;
  if (replicated) {
    // A durable consumer has the stream's replicas: on a cluster with a dead
    // node it lives on the nodes left, where an ephemeral R1 consumer could
    // be placed on the dead one and never answer (63-fault-cluster).
    durable = `isa_read_${randomBytes(6).toString("hex")}`;
    await retry(() => jsm.consumers.add(stream, { durable_name: durable, filter_subject: filter,
      ack_policy: "none", deliver_policy: "all", inactive_threshold: ns(120000) }));
    c = await js.consumers.get(stream, durable);
  } else {
    // (an ordered consumer starts at stream sequence 1 by default: deliver all)
    c = await js.consumers.get(stream, { filterSubjects: filter });
  }
  const iter = await c.consume({ max_messages: 2000 });
  let idleTimer = null, totalTimer = null, outcome = null;
  const finish = (err) => { if (!outcome) { outcome = err ?? "ok"; iter.stop(); } };
  const arm = () => {
    if (!idleMs) return;
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => finish(new Error(`no message for ${idleMs} ms`)), idleMs);
  };
  if (totalMs) totalTimer = setTimeout(() => finish("timeout"), totalMs);
  arm();
  try {
    for await (const m of iter) {
      arm();
      if (onMsg(m) === false) { finish(); break; }
      if (stopWhenDrained && m.info.pending === 0) { finish(); break; }
    }
  } finally {
    clearTimeout(idleTimer);
    clearTimeout(totalTimer);
    if (durable) await jsm.consumers.delete(stream, durable).catch(() => {});
  }
  if (outcome instanceof Error) throw outcome;
  return outcome;
}

// ---------------------------------------------------------------- commands
async function cmdPub(nc, raw) {
  const subject = pos[1] ?? die("pub: SUBJECT is required");
  if (opt.file && opt.data !== undefined) die("pub: --file and --data exclude each other");
  if (raw && !opt.file) die("pub-raw: --file PATH is required");
  const data = opt.file ? readFileSync(opt.file) : Buffer.from(opt.data ?? "");
  const n = raw ? 1 : int("count", opt.count ?? "1");
  const js = nc.jetstream({ timeout: attemptMs });
  async function* items() {
    for (let i = 1; i <= n; i++) {
      const id = opt.id === undefined ? undefined : n === 1 ? opt.id : `${opt.id}-${i}`;
      yield { subject, data, id };
    }
  }
  const res = await publishAll(js, items(), Math.max(1, int("inflight", opt.inflight)));
  console.log(JSON.stringify(res));
}

async function cmdPubEvents(nc) {
  const eventType = pos[1] ?? die("pub-events: EVENT_TYPE is required");
  const n = int("count", opt.count ?? "1");
  const tmpl = opt["data-template"];
  if (!["v4", "v7"].includes(opt.uuid)) die("--uuid must be v4 or v7");
  const newId = opt.uuid === "v4" ? randomUUID : uuidV7;
  const subject = `${opt.source}.${eventType}`;
  const ids = [];
  const rate = opt.rate === undefined ? 0 : int("rate", opt.rate);
  const values = opt["values-file"] ? readFileSync(opt["values-file"], "utf8").split("\n").filter((l) => l !== "") : [];
  if (opt["values-file"] && values.length === 0) die("--values-file is empty");
  const started = Date.now();
  async function* items() {
    for (let i = 1; i <= n; i++) {
      if (rate > 0) {
        const due = started + ((i - 1) * 1000) / rate;
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
      }
      let data;
      let text = tmpl.replaceAll("{{i}}", String(i));
      if (values.length) text = text.replaceAll("{{v}}", values[(i - 1) % values.length]);
      try { data = JSON.parse(text); } catch (e) {
        die(`--data-template is not JSON after substitution: ${e.message}`);
      }
      const id = newId();
      const env = {
        id, event_type: eventType, source: opt.source, version: opt.version,
        timestamp: nowRfc3339Micro(), data,
        metadata: { correlation_id: opt["correlation-id"] ?? id },
      };
      ids.push(id);
      yield { subject, data: Buffer.from(JSON.stringify(env)), id };
    }
  }
  const res = await publishAll(nc.jetstream({ timeout: attemptMs }), items(), Math.max(1, int("inflight", opt.inflight)));
  if (opt["ids-file"]) writeFileSync(opt["ids-file"], ids.length ? ids.join("\n") + "\n" : "");
  console.log(res.published);
  if (res.published !== n) {
    console.error(`pub-events: ${n} sent, ${res.published} stored, ${res.duplicates} duplicates`);
    process.exitCode = 1;
  }
}

// The durable pull consumer NAME over FILTER from the first message, made
// again (a read-only subscriber may create, use and delete only consumers of
// the names its credential grants; the ordered consumer's are random).
async function readOwned(js, jsm, stream, name, filter, onMsg, totalMs) {
  try { await jsm.consumers.delete(stream, name); } catch (e) {
    if (!/not found/i.test(e.message)) throw e;
  }
  await jsm.consumers.add(stream, { durable_name: name, filter_subject: filter, ack_policy: "explicit",
    deliver_policy: "all" });
  const c = await js.consumers.get(stream, name);
  const iter = await c.consume({ max_messages: 256 });
  const timer = setTimeout(() => iter.stop(), totalMs);
  try {
    for await (const m of iter) {
      m.ack();
      if (onMsg(m) === false) break;
    }
  } finally {
    clearTimeout(timer);
    iter.stop();
  }
}

async function cmdSub(nc) {
  const filter = pos[1] ?? die("sub: FILTER is required");
  const want = int("count", opt.count ?? "1");
  let got = 0;
  if (want > 0 && opt.consumer) {
    await readOwned(nc.jetstream({ timeout: attemptMs }), await jsmOf(nc), opt.stream, opt.consumer, filter, (m) => {
      process.stdout.write(JSON.stringify({
        seq: m.info.streamSequence, subject: m.subject, headers: headersObject(m.headers),
        data: parseJson(m.data), raw_len: m.data.length,
      }) + "\n");
      return ++got < want;
    }, timeoutMs);
  } else if (want > 0) {
    await readOrdered(nc.jetstream({ timeout: attemptMs }), await jsmOf(nc), opt.stream, filter, (m) => {
      process.stdout.write(JSON.stringify({
        seq: m.info.streamSequence, subject: m.subject, headers: headersObject(m.headers),
        data: parseJson(m.data), raw_len: m.data.length,
      }) + "\n");
      return ++got < want;
    }, { stopWhenDrained: false, totalMs: timeoutMs });
  }
  if (got < want) {
    console.error(`sub: ${got} of ${want} messages on ${filter} within ${timeoutMs} ms`);
    process.exitCode = 1;
  }
}

async function cmdCount(nc) {
  const filter = pos[1] ?? die("count: FILTER is required");
  let total = 0;
  const ids = new Set();
  await readOrdered(nc.jetstream({ timeout: attemptMs }), await jsmOf(nc), opt.stream, filter, (m) => {
    total++;
    const id = m.headers?.get("Nats-Msg-Id");
    if (id) ids.add(id);
  }, { stopWhenDrained: true, idleMs: timeoutMs, replicated: true });
  console.log(`${total} ${ids.size}`);
}

async function cmdStreamInfo(nc) {
  const jsm = await jsmOf(nc);
  console.log(JSON.stringify(await ensureStream(jsm, pos[1] ?? opt.stream)));
}

async function cmdStreamCreate(nc) {
  const name = pos[1] ?? die("stream-create: NAME is required");
  const subjects = (opt.subjects ?? die("stream-create: --subjects is required")).split(",");
  const cfg = { name, subjects, num_replicas: int("replicas", opt.replicas), storage: opt.storage };
  if (opt["duplicate-window-ms"]) cfg.duplicate_window = ns(int("duplicate-window-ms", opt["duplicate-window-ms"]));
  if (opt["max-msg-size"]) cfg.max_msg_size = int("max-msg-size", opt["max-msg-size"]);
  const jsm = await jsmOf(nc);
  let si;
  try { si = await jsm.streams.add(cfg); } catch (e) {
    if (!/already in use/.test(e.message)) throw e;
    si = await jsm.streams.update(name, cfg);
  }
  console.log(JSON.stringify(si));
}

async function cmdStreamDelete(nc) {
  const name = pos[1] ?? die("stream-delete: NAME is required");
  const jsm = await jsmOf(nc);
  console.log(JSON.stringify({ deleted: await jsm.streams.delete(name) }));
}

async function cmdConsumerInfo(nc) {
  const stream = pos[1] ?? die("consumer-info: STREAM is required");
  const durable = pos[2] ?? die("consumer-info: DURABLE is required");
  const jsm = await jsmOf(nc);
  console.log(JSON.stringify(await retry(() => jsm.consumers.info(stream, durable))));
}

async function cmdConsumerDelete(nc) {
  const stream = pos[1] ?? die("consumer-delete: STREAM is required");
  const durable = pos[2] ?? die("consumer-delete: DURABLE is required");
  const jsm = await jsmOf(nc);
  console.log(JSON.stringify({ deleted: await jsm.consumers.delete(stream, durable) }));
}

// The server refuses a publish or a subscription it does not permit with an
// asynchronous -ERR 'Permissions Violation …': wait for it after a flush.
async function cmdMay(nc, op) {
  const subject = pos[1] ?? die(`may-${op}: SUBJECT is required`);
  let error = null;
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === "error" && /permissions[ _]violation/i.test(String(s.data))) error ??= String(s.data);
    }
  })().catch(() => {});
  if (op === "pub") nc.publish(subject);
  else {
    const sub = nc.subscribe(subject);
    sub.closed.then(() => {}, (e) => { error ??= e.message; });
  }
  await nc.flush();
  await sleep(Math.min(timeoutMs, 500));
  console.log(JSON.stringify({ op, subject, allowed: error === null, error }));
}

const COMMANDS = {
  pub: (nc) => cmdPub(nc, false), "pub-raw": (nc) => cmdPub(nc, true),
  "pub-events": cmdPubEvents, sub: cmdSub, count: cmdCount,
  "stream-info": cmdStreamInfo, "stream-create": cmdStreamCreate,
  "stream-delete": cmdStreamDelete, "consumer-info": cmdConsumerInfo,
  "consumer-delete": cmdConsumerDelete,
  "may-pub": (nc) => cmdMay(nc, "pub"), "may-sub": (nc) => cmdMay(nc, "sub"),
};

// The inbox prefix a credential may subscribe to: the first _INBOX.<party>.>
// of its JWT's sub.allow (isa's stacks give each credential one).
function inboxPrefixOf(creds) {
  const jwt = creds.toString("utf8").match(/-----BEGIN NATS USER JWT-----\s*(\S+)/)?.[1];
  const claims = jwt ? parseJson(Buffer.from(jwt.split(".")[1] ?? "", "base64url")) : null;
  const allow = claims?.nats?.sub?.allow ?? [];
  const own = allow.find((s) => /^_INBOX\.[^.*>]+\.>$/.test(s));
  return own ? own.slice(0, -2) : undefined;
}

async function main() {
  const cmd = pos[0];
  if (!cmd || cmd === "help" || cmd === "--help") { console.log(USAGE); return; }
  const run = COMMANDS[cmd] ?? die(`unknown command '${cmd}'`);
  const servers = (opt.server ?? process.env.ISA_NATS_URL ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  if (!servers.length) die("no server: give --server URL or set ISA_NATS_URL");
  const credsFile = opt.creds ?? process.env.ISA_NATS_CREDS;
  const creds = credsFile ? readFileSync(credsFile) : null;
  const inboxPrefix = opt["inbox-prefix"] ?? (creds ? inboxPrefixOf(creds) : undefined);
  const nc = await connect({ servers, name: "isa-nats", timeout: Math.min(timeoutMs, 5000) || 5000,
    maxReconnectAttempts: -1, reconnectTimeWait: 250,
    ...(creds ? { authenticator: credsAuthenticator(creds) } : {}),
    ...(inboxPrefix ? { inboxPrefix } : {}) });
  try { await run(nc); } finally { await nc.drain().catch(() => nc.close()); }
}

main().catch((e) => {
  console.error(`isa-nats: ${e.message}`);
  if (e instanceof UsageError) console.error("usage: isa-nats.mjs help");
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
