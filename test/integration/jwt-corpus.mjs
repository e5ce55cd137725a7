// test/integration/jwt-corpus.mjs — the corpus of tokens that
// 16-jwt-corpus.sh runs through both verifiers (auth.verify_token and
// isa-httpd), each with the verdict both must give.  Tokens are made by
// Node's crypto (not isa's C) with fixed keys, so the corpus is the same at
// every run but for the times and the session it is given.
//
//   node jwt-corpus.mjs keys                → the fixed keys, one "name value" a line
//   node jwt-corpus.mjs tokens NOW SUB SID  → "MODE<TAB>VERDICT<TAB>CASE<TAB>TOKEN" lines
//
// MODE is the configured algorithm (EdDSA or HS256), VERDICT accept or the
// reason of the refusal (auth's words, extension/auth/jwt_verify.c).
import crypto from "node:crypto";

const seed = (label) => crypto.createHash("sha256").update(label).digest();   // 32 fixed bytes
const ED_SEED = seed("isa jwt corpus: the Ed25519 key");
const OTHER_SEED = seed("isa jwt corpus: a key isa does not know");
const ED_KID = "it16-corpus-ed25519";
const HS_SECRET = "it16-corpus-hs256-secret-0123456789-abcdefghijklmnop";
const HS_PREVIOUS = "it16-corpus-hs256-previous-0123456789-abcdefghijklmn";

const PKCS8 = Buffer.from("302e020100300506032b657004220420", "hex");
const edKey = (seed) => crypto.createPrivateKey({ key: Buffer.concat([PKCS8, seed]), format: "der", type: "pkcs8" });
const edPublic = (seed) => crypto.createPublicKey(edKey(seed)).export({ format: "der", type: "spki" }).subarray(-32);
const hsKid = (secret) => crypto.createHmac("sha256", secret).update("isa-jwt-kid").digest("hex").slice(0, 16);
const b64 = (b) => Buffer.from(b).toString("base64url");

const [cmd, nowArg, sub, sid] = process.argv.slice(2);
if (cmd === "keys") {
  const pub = edPublic(ED_SEED);
  console.log(`ed_kid ${ED_KID}`);
  console.log(`ed_public ${pub.toString("hex")}`);
  console.log(`ed_private ${Buffer.concat([ED_SEED, pub]).toString("hex")}`);
  console.log(`hs_secret ${HS_SECRET}`);
  console.log(`hs_previous ${HS_PREVIOUS}`);
  process.exit(0);
}
if (cmd !== "tokens" || !sid) {
  console.error("usage: jwt-corpus.mjs keys | tokens NOW SUB SID");
  process.exit(2);
}
const now = Number(nowArg);

// sign ALG KEY HEADER-TEXT CLAIMS-TEXT: a JWS over exactly these texts
function sign(alg, key, header, claims) {
  const input = b64(header) + "." + b64(claims);
  let sig = "";
  if (alg === "EdDSA") sig = b64(crypto.sign(null, Buffer.from(input), edKey(key)));
  else if (alg === "HS256") sig = b64(crypto.createHmac("sha256", key).update(input).digest());
  return input + "." + sig;
}
const base = () => ({ iss: "isa", aud: "isa", sub, sid, typ: "access", iat: now, nbf: now, exp: now + 300, jti: "it16" });
const claims = (change = (c) => c) => JSON.stringify(change(base()));
const edHeader = (extra = {}) => JSON.stringify({ alg: "EdDSA", typ: "JWT", kid: ED_KID, ...extra });
const hsHeader = (secret = HS_SECRET, extra = {}) => JSON.stringify({ alg: "HS256", typ: "JWT", kid: hsKid(secret), ...extra });
const ed = (c, h = edHeader()) => sign("EdDSA", ED_SEED, h, c);
const hs = (c, h = hsHeader(), secret = HS_SECRET) => sign("HS256", secret, h, c);
const valid = ed(claims());
const [vh, vp, vs] = valid.split(".");

const out = [];
const add = (mode, verdict, name, token) => out.push([mode, verdict, name, token].join("\t"));

// ---- EdDSA: the configured algorithm, the fixed key under its kid
add("EdDSA", "accept", "valid", valid);
add("EdDSA", "accept", "aud a list that holds isa", ed(claims((c) => ({ ...c, aud: ["other", "isa"] }))));
add("EdDSA", "accept", "expired 10 s ago, within the clock skew", ed(claims((c) => ({ ...c, exp: now - 10 }))));
add("EdDSA", "accept", "exp a fraction", ed(claims((c) => ({ ...c, exp: now + 300.5 }))));
add("EdDSA", "accept", "unknown claims, nested, unicode", ed(claims((c) => ({ ...c, x: { y: [1, "é€😀", null, true] } }))));
add("EdDSA", "accept", "large but under 8192 characters", ed(claims((c) => ({ ...c, pad: "p".repeat(5500) }))));
add("EdDSA", "expired", "expired 120 s ago", ed(claims((c) => ({ ...c, exp: now - 120 }))));
add("EdDSA", "no exp claim", "no exp", ed(claims((c) => ({ ...c, exp: undefined }))));
add("EdDSA", "the exp claim is not a number", "exp a string", ed(claims((c) => ({ ...c, exp: String(now + 300) }))));
add("EdDSA", "not valid yet (nbf)", "nbf 120 s in the future", ed(claims((c) => ({ ...c, nbf: now + 120 }))));
add("EdDSA", "issued in the future (iat)", "iat 120 s in the future", ed(claims((c) => ({ ...c, iat: now + 120 }))));
add("EdDSA", "wrong issuer", "another iss", ed(claims((c) => ({ ...c, iss: "evil" }))));
add("EdDSA", "wrong issuer", "no iss", ed(claims((c) => ({ ...c, iss: undefined }))));
add("EdDSA", "wrong audience", "another aud", ed(claims((c) => ({ ...c, aud: "other" }))));
add("EdDSA", "wrong audience", "an aud list without isa", ed(claims((c) => ({ ...c, aud: ["other"] }))));
add("EdDSA", "no subject", "no sub", ed(claims((c) => ({ ...c, sub: undefined }))));
add("EdDSA", "no subject", "sub empty", ed(claims((c) => ({ ...c, sub: "" }))));
add("EdDSA", "no subject", "sub a number", ed(claims((c) => ({ ...c, sub: 42 }))));
add("EdDSA", "algorithm \"none\" is not accepted", "alg none, no signature", sign("none", null, '{"alg":"none","typ":"JWT"}', claims()));
add("EdDSA", "algorithm \"none\" is not accepted", "alg none naming the kid", sign("none", null, `{"alg":"none","kid":"${ED_KID}"}`, claims()));
add("EdDSA", "algorithm \"HS256\" is not accepted", "alg switched to HS256, keyed with the public key",
  sign("HS256", edPublic(ED_SEED), JSON.stringify({ alg: "HS256", typ: "JWT", kid: ED_KID }), claims()));
add("EdDSA", "algorithm \"HS256\" is not accepted", "an HS256 token of the HS256 secret", hs(claims()));
add("EdDSA", "algorithm \"eddsa\" is not accepted", "alg eddsa", ed(claims(), edHeader({ alg: "eddsa" })));
add("EdDSA", "no algorithm in the header", "no alg", ed(claims(), JSON.stringify({ typ: "JWT", kid: ED_KID })));
add("EdDSA", "unsupported critical header parameters", "crit", ed(claims(), edHeader({ crit: ["exp"] })));
add("EdDSA", "typ is not JWT", "typ at+jwt", ed(claims(), edHeader({ typ: "at+jwt" })));
add("EdDSA", "no valid kid in the header", "no kid", ed(claims(), '{"alg":"EdDSA","typ":"JWT"}'));
add("EdDSA", "no valid kid in the header", "kid with a space", ed(claims(), edHeader({ kid: "a b" })));
add("EdDSA", "unknown signing key", "another key under an unknown kid", sign("EdDSA", OTHER_SEED, edHeader({ kid: "it16-unknown" }), claims()));
add("EdDSA", "bad signature", "another key under the kid", sign("EdDSA", OTHER_SEED, edHeader(), claims()));
add("EdDSA", "bad signature", "payload changed under the signature", [vh, b64(claims((c) => ({ ...c, sub: "someone-else" }))), vs].join("."));
add("EdDSA", "bad signature", "one character of the signature changed", `${vh}.${vp}.${vs[0] === "A" ? "B" : "A"}${vs.slice(1)}`);
add("EdDSA", "bad signature", "signature of HS256 length", `${vh}.${vp}.${b64(Buffer.alloc(32, 7))}`);
add("EdDSA", "malformed signature", "empty signature", `${vh}.${vp}.`);
add("EdDSA", "malformed signature", "signature not base64url", `${vh}.${vp}.${vs.slice(0, -2)}+/`);
add("EdDSA", "malformed signature", "signature with padding", `${vh}.${vp}.${vs}==`);
add("EdDSA", "malformed header", "header not base64url", `%%%.${vp}.${vs}`);
add("EdDSA", "malformed header", "header with padding", `${vh}=.${vp}.${vs}`);
add("EdDSA", "malformed header", "header not a JSON object", ed(claims(), "[1]"));
add("EdDSA", "malformed header", "header with alg twice (none, then EdDSA)", ed(claims(), `{"alg":"none","alg":"EdDSA","kid":"${ED_KID}"}`));
add("EdDSA", "malformed header", "header with kid twice, escaped", ed(claims(), `{"alg":"EdDSA","kid":"x","\\u006bid":"${ED_KID}"}`));
add("EdDSA", "malformed header", "alg not a string", ed(claims(), `{"alg":["EdDSA"],"kid":"${ED_KID}"}`));
add("EdDSA", "malformed header", "header with trailing garbage", ed(claims(), edHeader() + "x"));
add("EdDSA", "malformed claims", "claims with sub twice, the second escaped", ed(claims().replace(/^\{/, '{"sub":"someone-else",').replace('"sub":"' + sub, '"s\\u0075b":"' + sub)));
add("EdDSA", "malformed claims", "claims with trailing garbage", ed(claims() + " x"));
add("EdDSA", "malformed claims", "claims not an object", ed("[1,2]"));
add("EdDSA", "malformed claims", "claims with \\u0000", ed(claims((c) => ({ ...c, x: "a\u0000b" }))));
add("EdDSA", "malformed claims", "claims with a lone surrogate", ed(claims().replace(/\}$/, ',"x":"\\ud800"}')));
add("EdDSA", "malformed claims", "claims not UTF-8", sign("EdDSA", ED_SEED, edHeader(), Buffer.concat([Buffer.from(claims().slice(0, -1) + ',"x":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')])));
add("EdDSA", "malformed claims", "claims nested 100 deep", ed(claims().replace(/\}$/, ',"x":' + "[".repeat(100) + "]".repeat(100) + "}")));
add("EdDSA", "malformed claims", "an integer beyond 64 bits", ed(claims().replace(/\}$/, ',"x":123456789012345678901234567890}')));
add("EdDSA", "malformed claims", "a number beyond a double", ed(claims().replace(/\}$/, ',"x":1e400}')));
add("EdDSA", "malformed", "garbage", "not-a-jwt");
add("EdDSA", "malformed", "two segments", `${vh}.${vp}`);
add("EdDSA", "malformed", "four segments", `${valid}.x`);
add("EdDSA", "malformed", "empty payload", `${vh}..${vs}`);
add("EdDSA", "too long", "over 8192 characters", ed(claims((c) => ({ ...c, pad: "p".repeat(6400) }))));

// ---- HS256: the fixed secret (and a previous one), each under its derived kid
add("HS256", "accept", "valid", hs(claims()));
add("HS256", "accept", "the previous secret under its kid", hs(claims(), hsHeader(HS_PREVIOUS), HS_PREVIOUS));
add("HS256", "no valid kid in the header", "no kid", hs(claims(), '{"alg":"HS256","typ":"JWT"}'));
add("HS256", "unknown signing key", "a kid of no secret", hs(claims(), hsHeader(HS_SECRET, { kid: "0123456789abcdef" })));
add("HS256", "bad signature", "another secret under the kid", hs(claims(), hsHeader(), HS_SECRET + "-not"));
add("HS256", "bad signature", "the previous secret under the current kid", hs(claims(), hsHeader(), HS_PREVIOUS));
add("HS256", "algorithm \"EdDSA\" is not accepted", "alg switched to EdDSA", valid);
add("HS256", "algorithm \"none\" is not accepted", "alg none", sign("none", null, `{"alg":"none","kid":"${hsKid(HS_SECRET)}"}`, claims()));
add("HS256", "expired", "expired", hs(claims((c) => ({ ...c, exp: now - 120 }))));
add("HS256", "no subject", "no sub", hs(claims((c) => ({ ...c, sub: undefined }))));
add("HS256", "wrong audience", "another aud", hs(claims((c) => ({ ...c, aud: "other" }))));

console.log(out.join("\n"));
