#!/usr/bin/env node
// bench/relay_node/relay.mjs — benchmark baseline: an application-level outbox
// relay of the kind teams write (node-postgres + nats.js), to compare with the
// bridge.  Loop: BEGIN; take up to 500 unpublished rows of isa.outbox (FOR
// UPDATE SKIP LOCKED); publish them to JetStream with Promise.all on the
// batch; mark them published; COMMIT — until no row is left.  Prints one line:
//   relay_node events=N seconds=S rate=R/s
// Connection: PGHOST, PGPORT, PGUSER, PGDATABASE (…) and ISA_NATS_URL
// (comma-separated list allowed), with the creds file $ISA_NATS_CREDS if set.  The stream that captures <source>.<event_type>
// must exist.  ISA_RELAY_BATCH overrides the batch size.  Exits 1 on any error.
import pg from "pg";
import { connect, credsAuthenticator } from "nats";
import { readFileSync } from "node:fs";

const BATCH = Number(process.env.ISA_RELAY_BATCH ?? 500);
const servers = (process.env.ISA_NATS_URL ?? "").split(",").filter(Boolean);
if (!servers.length) {
  console.error("relay_node: set ISA_NATS_URL");
  process.exit(2);
}

const db = new pg.Client(); // PG* environment
await db.connect();
const creds = process.env.ISA_NATS_CREDS;
const nc = await connect({ servers, ...(creds ? { authenticator: credsAuthenticator(readFileSync(creds)) } : {}) });
const js = nc.jetstream();

let events = 0;
const t0 = performance.now();
try {
  for (;;) {
    await db.query("BEGIN");
    const { rows } = await db.query(
      `SELECT id, source, event_type, version, occurred_at, data, metadata
         FROM isa.outbox WHERE published_at IS NULL
        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, [BATCH]);
    if (rows.length === 0) {
      await db.query("COMMIT");
      break;
    }
    await Promise.all(rows.map((r) => js.publish(
      `${r.source}.${r.event_type}`,
      JSON.stringify({
        id: r.id, event_type: r.event_type, source: r.source, version: r.version,
        timestamp: r.occurred_at.toISOString(), data: r.data, metadata: r.metadata,
      }),
      { msgID: r.id })));
    await db.query("UPDATE isa.outbox SET published_at = now() WHERE id = ANY($1)",
      [rows.map((r) => r.id)]);
    await db.query("COMMIT");
    events += rows.length;
  }
} catch (e) {
  await db.query("ROLLBACK").catch(() => {});
  console.error(`relay_node: ${e.message}`);
  process.exitCode = 1;
}
const seconds = (performance.now() - t0) / 1000;
await nc.drain();
await db.end();
if (!process.exitCode) {
  console.log(`relay_node events=${events} seconds=${seconds.toFixed(3)} rate=${Math.round(events / seconds)}/s`);
}
