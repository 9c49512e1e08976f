// Drives a running keysd with Stack Auth's own SDK, @stackframe/js, in each version that
// package.json pins: its server interface (StackServerInterface up to 2.8.102,
// HexclaveServerInterface from 2.8.108, which sends x-hexclave-* headers) and its
// StackServerApp, with no request written by hand. Each version runs the same 24 steps (18 of
// user keys and the user, then 6 of team keys through the server interface's team_id forms);
// every step prints one JSON line {"version", "step", "ok", "error"?} and the process exits 1
// if any step failed.
//
// Usage: KEYS_BASE_URL=http://127.0.0.1:8080 KEYS_PROJECT_ID=... KEYS_SERVER_KEY=... node run.cjs [version...]
"use strict";

const { createRequire } = require("node:module");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");

const versions = process.argv.length > 2 ? process.argv.slice(2) : ["2.8.102", "2.8.108"];
const baseUrl = need("KEYS_BASE_URL");
const projectId = need("KEYS_PROJECT_ID");
const secretServerKey = need("KEYS_SERVER_KEY");

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`run.cjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

// sdk loads one version of @stackframe/js (installed under the npm alias stack-<version>)
// and the @stackframe/stack-shared that this very version depends on.
function sdk(version) {
  const alias = "stack-" + version.replaceAll(".", "-");
  const js = require(alias);
  const shared = createRequire(require.resolve(alias))("@stackframe/stack-shared");
  const ServerInterface = shared.HexclaveServerInterface ?? shared.StackServerInterface;
  const ServerApp = js.HexclaveServerApp ?? js.StackServerApp;
  if (!ServerInterface || !ServerApp || !shared.KnownErrors) {
    throw new Error(`${alias}: no server interface or server app exported`);
  }
  const installed = JSON.parse(
    require("node:fs").readFileSync(require("node:path").join(__dirname, "node_modules", alias, "package.json"), "utf8"),
  ).version;
  if (installed !== version) throw new Error(`${alias} is @stackframe/js ${installed}, not ${version}`);
  return {
    KnownErrors: shared.KnownErrors,
    interfaceName: ServerInterface.name,
    newInterface: () =>
      new ServerInterface({
        getBaseUrl: () => baseUrl,
        getApiUrls: () => [baseUrl],
        projectId,
        clientVersion: `keyledger-sdktest@${version}`,
        secretServerKey,
      }),
    newApp: () => new ServerApp({ baseUrl, projectId, secretServerKey, tokenStore: "memory" }),
  };
}

const near = (ms, what) => {
  assert.equal(typeof ms, "number", `${what} is not a number: ${ms}`);
  assert.ok(Number.isInteger(ms), `${what} is not an integer: ${ms}`);
  assert.ok(Math.abs(ms - Date.now()) < 5 * 60 * 1000, `${what} = ${ms} is not about now`);
};
const validDate = (d, what) => {
  assert.ok(d instanceof Date && !Number.isNaN(d.getTime()), `${what} is not a valid Date: ${d}`);
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// steps returns the 24 steps of one version; they share state in order.
function steps(s) {
  const api = s.newInterface();
  const app = s.newApp();
  const userId = crypto.randomUUID();
  const teamId = crypto.randomUUID();
  const st = {};
  return [
    ["interface: create a key", async () => {
      const k = await api.createProjectApiKey({ user_id: userId, description: "first", expires_at_millis: null }, null, "server");
      assert.match(k.value, /^sk_/);
      assert.equal(k.user_id, userId);
      assert.equal(k.type, "user");
      assert.equal(k.is_public, false);
      near(k.created_at_millis, "created_at_millis");
      assert.equal(k.expires_at_millis ?? null, null);
      assert.equal(k.manually_revoked_at_millis ?? null, null);
      st.first = k;
    }],
    ["interface: create a public key that expires", async () => {
      const expires = Date.now() + 3600 * 1000;
      const k = await api.createProjectApiKey({ user_id: userId, description: "public", expires_at_millis: expires, is_public: true }, null, "server");
      assert.match(k.value, /^pk_/);
      assert.equal(k.is_public, true);
      assert.equal(k.expires_at_millis, expires);
      st.public = k;
    }],
    ["interface: list a user's keys, newest first", async () => {
      const items = await api.listProjectApiKeys({ user_id: userId }, null, "server");
      assert.deepEqual(items.map((k) => k.id), [st.public.id, st.first.id]);
      for (const k of items) {
        assert.equal(typeof k.value?.last_four, "string");
        assert.equal(k.value.last_four, (k.id === st.first.id ? st.first : st.public).value.slice(-4));
      }
    }],
    ["interface: get a key", async () => {
      const k = await api.getProjectApiKey({ user_id: userId }, st.first.id, null, "server");
      assert.equal(k.id, st.first.id);
      assert.equal(k.description, "first");
      assert.equal(k.created_at_millis, st.first.created_at_millis);
    }],
    ["interface: rename a key", async () => {
      const k = await api.updateProjectApiKey({ user_id: userId }, st.first.id, { description: "renamed" }, null, "server");
      assert.equal(k.description, "renamed");
      const again = await api.getProjectApiKey({ user_id: userId }, st.first.id, null, "server");
      assert.equal(again.description, "renamed");
    }],
    ["interface: check a valid key", async () => {
      const k = await api.checkProjectApiKey("user", st.first.value, null, "server");
      assert.ok(k, "a valid key checked as invalid");
      assert.equal(k.id, st.first.id);
      assert.equal(k.description, "renamed");
    }],
    ["interface: revoke a key", async () => {
      const k = await api.updateProjectApiKey({ user_id: userId }, st.first.id, { revoked: true }, null, "server");
      near(k.manually_revoked_at_millis, "manually_revoked_at_millis");
      st.revokedAt = k.manually_revoked_at_millis;
      const twice = await api.updateProjectApiKey({ user_id: userId }, st.first.id, { revoked: true }, null, "server");
      assert.equal(twice.manually_revoked_at_millis, st.revokedAt, "a second revoke moved the timestamp");
    }],
    ["interface: check a revoked key", async () => {
      assert.equal(await api.checkProjectApiKey("user", st.first.value, null, "server"), null);
    }],
    ["interface: check a garbage key", async () => {
      assert.equal(await api.checkProjectApiKey("user", "sk_this_is_a_fake_api_key_123456789", null, "server"), null);
      assert.equal(await api.checkProjectApiKey("user", st.first.value.slice(0, -1) + "0", null, "server"), null);
    }],
    ["interface: get the user of the keys", async () => {
      const res = await api.getServerUserById(userId);
      assert.equal(res.status, "ok", `getServerUserById: ${res.error}`);
      assert.equal(res.data.id, userId);
      assert.equal(res.data.risk_scores.sign_up.bot, 0);
    }],
    ["interface: get a user without keys", async () => {
      const res = await api.getServerUserById(crypto.randomUUID());
      assert.equal(res.status, "error");
      assert.ok(s.KnownErrors.UserNotFound.isInstance(res.error), `not USER_NOT_FOUND: ${res.error}`);
    }],
    ["app: getUser(id)", async () => {
      const user = await app.getUser(userId);
      assert.ok(user, "no user");
      assert.equal(user.id, userId);
      assert.equal(user.riskScores.signUp.bot, 0);
      assert.equal(user.riskScores.signUp.freeTrialAbuse, 0);
      validDate(user.signedUpAt, "signedUpAt");
      st.user = user;
    }],
    ["app: user.createApiKey", async () => {
      const expiresAt = new Date(Date.now() + 3600 * 1000);
      const k = await st.user.createApiKey({ description: "from the app", expiresAt });
      assert.match(k.value, /^sk_/);
      assert.equal(k.userId, userId);
      assert.equal(k.expiresAt.getTime(), expiresAt.getTime());
      validDate(k.createdAt, "createdAt");
      assert.equal(k.manuallyRevokedAt, null);
      assert.equal(k.isValid(), true);
      st.appKey = k;
    }],
    ["app: user.listApiKeys", async () => {
      const keys = await st.user.listApiKeys();
      assert.deepEqual(keys.map((k) => k.id), [st.appKey.id, st.public.id, st.first.id]);
      for (const k of keys) validDate(k.createdAt, "createdAt");
      const revoked = keys.find((k) => k.id === st.first.id);
      assert.equal(revoked.manuallyRevokedAt.getTime(), st.revokedAt);
      assert.equal(revoked.isValid(), false);
      assert.equal(revoked.whyInvalid(), "manually-revoked");
      assert.equal(keys.find((k) => k.id === st.appKey.id).whyInvalid(), null);
    }],
    ["app: getUser({apiKey})", async () => {
      const user = await app.getUser({ apiKey: st.appKey.value });
      assert.ok(user, "a valid key found no user");
      assert.equal(user.id, userId);
      assert.equal(await s.newApp().getUser({ apiKey: st.first.value }), null, "a revoked key found a user");
      assert.equal(await s.newApp().getUser({ apiKey: "sk_garbage" }), null, "a garbage key found a user");
    }],
    ["app: apiKey.update", async () => {
      const [k] = await st.user.listApiKeys();
      await k.update({ description: "renamed by the app" });
      const [again] = await s.newApp().getUser(userId).then((u) => u.listApiKeys());
      assert.equal(again.id, st.appKey.id);
      assert.equal(again.description, "renamed by the app");
    }],
    ["app: apiKey.revoke", async () => {
      const [k] = await st.user.listApiKeys();
      await k.revoke();
      const fresh = s.newApp();
      const [again] = await (await fresh.getUser(userId)).listApiKeys();
      assert.equal(again.whyInvalid(), "manually-revoked");
      assert.equal(await fresh.getUser({ apiKey: st.appKey.value }), null, "a revoked key found a user");
      assert.equal(await api.checkProjectApiKey("user", st.appKey.value, null, "server"), null);
    }],
    ["expiry", async () => {
      const past = await st.user.createApiKey({ description: "expired", expiresAt: new Date(Date.now() - 1000) });
      assert.equal(past.whyInvalid(), "expired");
      assert.equal(await api.checkProjectApiKey("user", past.value, null, "server"), null);
      const soon = await st.user.createApiKey({ description: "expires soon", expiresAt: new Date(Date.now() + 1500) });
      assert.ok(await api.checkProjectApiKey("user", soon.value, null, "server"), "a key not yet expired checked as invalid");
      await sleep(Math.max(0, soon.expiresAt.getTime() - Date.now()) + 100);
      assert.equal(await api.checkProjectApiKey("user", soon.value, null, "server"), null);
      assert.equal(await s.newApp().getUser({ apiKey: soon.value }), null, "an expired key found a user");
      const listed = (await (await s.newApp().getUser(userId)).listApiKeys()).find((k) => k.id === soon.id);
      assert.equal(listed.whyInvalid(), "expired");
    }],
    // Team keys: the server interface sends team_id where it sends user_id for user keys.
    ["interface: create team keys", async () => {
      const k = await api.createProjectApiKey({ team_id: teamId, description: "team first", expires_at_millis: null }, null, "server");
      assert.match(k.value, /^sk_/);
      assert.equal(k.team_id, teamId);
      assert.equal(k.type, "team");
      assert.equal(k.user_id, undefined);
      near(k.created_at_millis, "created_at_millis");
      st.team = k;
      const expires = Date.now() + 3600 * 1000;
      st.teamPublic = await api.createProjectApiKey({ team_id: teamId, description: "team public", expires_at_millis: expires, is_public: true }, null, "server");
      assert.match(st.teamPublic.value, /^pk_/);
      assert.equal(st.teamPublic.expires_at_millis, expires);
    }],
    ["interface: list a team's keys, newest first", async () => {
      const items = await api.listProjectApiKeys({ team_id: teamId }, null, "server");
      assert.deepEqual(items.map((k) => k.id), [st.teamPublic.id, st.team.id]);
      for (const k of items) assert.equal(k.type, "team");
      assert.deepEqual(await api.listProjectApiKeys({ team_id: crypto.randomUUID() }, null, "server"), []);
    }],
    ["interface: get and rename a team key", async () => {
      const k = await api.getProjectApiKey({ team_id: teamId }, st.team.id, null, "server");
      assert.equal(k.id, st.team.id);
      assert.equal(k.team_id, teamId);
      const renamed = await api.updateProjectApiKey({ team_id: teamId }, st.team.id, { description: "team renamed" }, null, "server");
      assert.equal(renamed.description, "team renamed");
    }],
    ["interface: check a team key", async () => {
      const k = await api.checkProjectApiKey("team", st.team.value, null, "server");
      assert.ok(k, "a valid team key checked as invalid");
      assert.equal(k.id, st.team.id);
      assert.equal(k.type, "team");
    }],
    ["interface: a key of the other type is WRONG_API_KEY_TYPE", async () => {
      assert.equal(await api.checkProjectApiKey("user", st.team.value, null, "server"), null);
      assert.equal(await api.checkProjectApiKey("team", st.appKey.value, null, "server"), null);
      for (const [endpoint, secret, expected, actual] of [["user", st.team.value, "user", "team"], ["team", st.public.value, "team", "user"]]) {
        const res = await api.sendServerRequestAndCatchKnownError(`/${endpoint}-api-keys/check`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ api_key: secret }),
        }, null, [s.KnownErrors.WrongApiKeyType]);
        assert.equal(res.status, "error", `a ${actual} key at the ${endpoint} check was accepted`);
        assert.ok(s.KnownErrors.WrongApiKeyType.isInstance(res.error), `not WRONG_API_KEY_TYPE: ${res.error}`);
        assert.deepEqual(res.error.constructorArgs, [expected, actual]);
      }
    }],
    ["interface: revoke a team key", async () => {
      const k = await api.updateProjectApiKey({ team_id: teamId }, st.team.id, { revoked: true }, null, "server");
      near(k.manually_revoked_at_millis, "manually_revoked_at_millis");
      assert.equal(await api.checkProjectApiKey("team", st.team.value, null, "server"), null);
      assert.ok(await api.checkProjectApiKey("team", st.teamPublic.value, null, "server"), "the other team key stopped working");
    }],
  ];
}

async function main() {
  let failed = 0;
  for (const version of versions) {
    let s;
    try {
      s = sdk(version);
    } catch (e) {
      console.log(JSON.stringify({ version, step: "load", ok: false, error: String(e?.stack ?? e) }));
      failed++;
      continue;
    }
    for (const [name, run] of steps(s)) {
      try {
        await run();
        console.log(JSON.stringify({ version, interface: s.interfaceName, step: name, ok: true }));
      } catch (e) {
        failed++;
        console.log(JSON.stringify({ version, interface: s.interfaceName, step: name, ok: false, error: String(e?.stack ?? e) }));
      }
    }
  }
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
