'use strict';
// End-to-end test of the Node client against `tandem serve` (the bundled
// model), with Node's built-in test runner:
//
//   TANDEM_BIN=build/bin/tandem node --test clients/node/test/serve.test.js
//
// CTest runs it as node_client_e2e (label e2e) through
// tests/e2e/node_client_test.sh, which first runs `npm ci` here. Every server
// is started on 127.0.0.1 with --port 0 (the kernel picks a free port, which
// the server prints) and stopped by its PID at the end, also on failure.
//
// TANDEM_BIN: the tandem binary (default: ../../build/bin/tandem; the tests
// are skipped when there is none). TANDEM_TEST_WORK: where logs and
// certificates go (default: a fresh temporary directory).

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { setTimeout: sleep } = require('node:timers/promises');

const { TandemClient, TandemError, buildRequest } = require('..');

const TANDEM = path.resolve(process.env.TANDEM_BIN || path.join(__dirname, '..', '..', '..', 'build', 'bin', 'tandem'));
const HAVE_TANDEM = fs.existsSync(TANDEM);
const WORK = process.env.TANDEM_TEST_WORK || fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-node-client-'));
fs.mkdirSync(WORK, { recursive: true });

const PROMPT = 'ROMEO:';
const MAX_TOKENS = 16;
const KEY = 'sk-node-e2e-0001';

// ------------------------------------------------------------ helpers

// Every server this file starts, so that an exit of any kind (a failure, an
// uncaught error, Ctrl-C, CTest's timeout) kills it by its PID.
const servers = new Set();
function killServers() {
  for (const s of servers) {
    try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}
process.on('exit', killServers);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killServers(); process.exit(128 + os.constants.signals[sig]); });
}

/**
 * `tandem serve --host 127.0.0.1 --port 0 ...extra`; resolves once it prints
 * its port and answers health SERVING.
 */
async function startServe(name, extra = [], clientOptions = {}) {
  const logPath = path.join(WORK, `${name}.log`);
  const log = fs.openSync(logPath, 'w');
  const proc = spawn(TANDEM, ['serve', '--host', '127.0.0.1', '--port', '0', ...extra],
                     { stdio: ['ignore', 'pipe', log] });
  fs.closeSync(log);
  const srv = { pid: proc.pid, proc, logPath, stdout: [], exited: null };
  servers.add(srv);
  srv.exit = new Promise((resolve) => proc.on('exit', (code, signal) => {
    srv.exited = { code, signal };
    servers.delete(srv);
    resolve(srv.exited);
  }));
  const lines = readline.createInterface({ input: proc.stdout });
  srv.port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no "listening" line in 60 s; log: ${tail(srv)}`)), 60000);
    lines.on('line', (line) => {
      srv.stdout.push(line);
      const m = /^tandem serve: listening on 127\.0\.0\.1:(\d+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    srv.exit.then((st) => { clearTimeout(timer); reject(new Error(`${name} exited early (${JSON.stringify(st)}): ${tail(srv)}`)); });
  });
  srv.addr = `127.0.0.1:${srv.port}`;
  const client = new TandemClient(srv.addr, { timeoutMs: 60000, ...clientOptions });
  await client.waitForReady(30000);
  const deadline = Date.now() + 30000;
  let status;
  while (Date.now() < deadline && (status = await client.health().catch((e) => e.message)) !== 'SERVING') {
    await sleep(100);
  }
  assert.equal(status, 'SERVING', `${name}: health`);
  srv.client = client;
  return srv;
}

/** SIGTERM by PID, SIGKILL after 20 s; resolves to how it exited. */
async function stopServe(srv) {
  if (!srv) return null;
  if (srv.client) srv.client.close();
  if (srv.exited) return srv.exited;
  process.kill(srv.pid, 'SIGTERM');
  const timer = setTimeout(() => { try { process.kill(srv.pid, 'SIGKILL'); } catch { /* gone */ } }, 20000);
  const st = await srv.exit;
  clearTimeout(timer);
  return st;
}

function tail(srv) {
  try { return fs.readFileSync(srv.logPath, 'utf8').slice(-2000); } catch { return ''; }
}

/** `tandem generate` on the same model, no --dtype/--kv-cache-dtype (as the server). */
function reference(maxTokens) {
  const p = spawnSync(TANDEM, ['generate', '--prompt', PROMPT, '--temperature', '0', '--ignore-eos',
                               '--max-tokens', String(maxTokens), '--json'], { encoding: 'utf8', timeout: 300000 });
  assert.equal(p.status, 0, `tandem generate failed: ${p.stderr}`);
  return JSON.parse(p.stdout.split('\n')[0]);
}

// Greedy sampling options; greedy() is a whole generate() request, sampling() the options of generateText().
const sampling = (extra = {}) => ({ temperature: 0, ignoreEos: true, maxTokens: MAX_TOKENS, ...extra });
const greedy = (extra = {}) => ({ prompt: PROMPT, ...sampling(extra) });

/** Awaits `fn()` and returns the TandemError it throws (fails if it does not). */
async function failure(fn) {
  try {
    const r = await fn();
    assert.fail(`expected an error, got ${JSON.stringify(r)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(e instanceof TandemError, `not a TandemError: ${e && e.stack}`);
    assert.ok(e instanceof Error);
    return e;
  }
}

// ------------------------------------------------------------ no server

test('buildRequest: camelCase and snake_case options, unknown ones are a TypeError', () => {
  const req = buildRequest({ prompt: 'x', maxTokens: 4, top_p: 0.5, stop: '\n', seed: 7n, signal: undefined });
  assert.deepEqual(req, { prompt: 'x', sampling: { max_tokens: 4, top_p: 0.5, stop: ['\n'], seed: '7' } });
  assert.throws(() => buildRequest({ prompt: 'x', maxTokenz: 4 }), TypeError);
  assert.throws(() => buildRequest({ prompt: 'x', promptTokenIds: [1] }), TypeError);
});

// ------------------------------------------------------------ tandem serve

describe('tandem serve', { skip: HAVE_TANDEM ? false : `no tandem binary at ${TANDEM}` }, () => {
  let srv;
  let want;

  before(async () => {
    want = reference(MAX_TOKENS);
    srv = await startServe('serve');
  }, { timeout: 400000 });

  after(async () => {
    const st = await stopServe(srv);
    assert.deepEqual(st, { code: 0, signal: null }, `serve did not exit 0 on SIGTERM; log: ${srv && tail(srv)}`);
  }, { timeout: 60000 });

  test('greedy stream equals tandem generate (token ids and text), incrementally', { timeout: 120000 }, async () => {
    const chunks = [];
    const arrivals = [];
    for await (const c of srv.client.generate(greedy())) {
      chunks.push(c);
      arrivals.push(process.hrtime.bigint());
    }
    const ids = chunks.flatMap((c) => c.tokenIds);
    assert.deepEqual(ids, want.token_ids);
    assert.equal(chunks.map((c) => c.text).join(''), want.text);
    assert.ok(chunks.length > 1, `one chunk only: ${JSON.stringify(chunks)}`);
    assert.ok(arrivals[0] < arrivals[arrivals.length - 1], 'chunks did not arrive over time');
    assert.ok(chunks.slice(0, -1).every((c) => c.finishReason === null && c.usage === null));
    const last = chunks[chunks.length - 1];
    assert.equal(last.finishReason, want.finish_reason);
    assert.deepEqual(last.usage, { promptTokens: want.prompt_token_ids.length, completionTokens: MAX_TOKENS });
  });

  test('generateText collects the same completion; token-id prompts work', { timeout: 120000 }, async () => {
    const done = await srv.client.generateText(PROMPT, sampling());
    assert.deepEqual(done.tokenIds, want.token_ids);
    assert.equal(done.text, want.text);
    assert.equal(done.finishReason, 'length');
    const byIds = await srv.client.generateText(want.prompt_token_ids, sampling({ logprobs: 2 }));
    assert.deepEqual(byIds.tokenIds, want.token_ids);
    assert.equal(byIds.logprobs.length, MAX_TOKENS);
    assert.equal(byIds.logprobs[0].topLogprobs.length, 2);
  });

  test('AbortSignal after the first chunk: CANCELLED, and the server stays healthy', { timeout: 120000 }, async () => {
    const ac = new AbortController();
    let received = 0;
    const err = await failure(async () => {
      for await (const c of srv.client.generate(greedy({ maxTokens: 200, signal: ac.signal }))) {
        received += c.tokenIds.length;
        ac.abort();
      }
    });
    assert.equal(err.code, 'CANCELLED', err.message);
    assert.equal(err.grpcCode, 1);
    assert.ok(received >= 1 && received < 200, `received ${received} tokens`);
    assert.equal(await srv.client.health(), 'SERVING');
    assert.deepEqual((await srv.client.generateText(PROMPT, sampling())).tokenIds, want.token_ids);
  });

  test('an already aborted signal fails CANCELLED; breaking out of the loop cancels quietly', { timeout: 120000 }, async () => {
    const ac = new AbortController();
    ac.abort();
    assert.equal((await failure(() => srv.client.generateText(PROMPT, sampling({ signal: ac.signal })))).code, 'CANCELLED');
    let n = 0;
    for await (const c of srv.client.generate(greedy({ maxTokens: 200 }))) {
      n += c.tokenIds.length;
      break;
    }
    assert.equal(n, 1);
    assert.deepEqual((await srv.client.generateText(PROMPT, sampling())).tokenIds, want.token_ids);
  });

  test('invalid requests: INVALID_ARGUMENT naming the field', { timeout: 120000 }, async () => {
    let err = await failure(() => srv.client.generateText(PROMPT, sampling({ temperature: -1 })));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.details, /temperature/);
    assert.match(err.message, /^INVALID_ARGUMENT: .*temperature/);
    err = await failure(() => srv.client.generateText(PROMPT, { topP: 0 }));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.details, /top_p/);
    err = await failure(() => srv.client.generateText('', {}));
    assert.equal(err.code, 'INVALID_ARGUMENT', err.message);
  });

  test('deadlines: too short, and passing mid-stream, give DEADLINE_EXCEEDED', { timeout: 120000 }, async () => {
    let err = await failure(() => srv.client.generateText(PROMPT, sampling({ maxTokens: 64, timeoutMs: 1 })));
    assert.equal(err.code, 'DEADLINE_EXCEEDED', err.message);
    // A deadline passing mid-stream while the client reads slowly: 200 chunks
    // are far more than grpc-js buffers, so the final status cannot reach the
    // client before the deadline, however fast the server generates them.
    let n = 0;
    err = await failure(async () => {
      for await (const c of srv.client.generate(greedy({ maxTokens: 200, timeoutMs: 300 }))) {
        n += c.tokenIds.length;
        await sleep(50);
      }
    });
    assert.equal(err.code, 'DEADLINE_EXCEEDED', err.message);
    assert.ok(n < 200, `${n} tokens`);
    assert.deepEqual((await srv.client.generateText(PROMPT, sampling())).tokenIds, want.token_ids);
  });

  test('an unreachable address: UNAVAILABLE', { timeout: 60000 }, async () => {
    const c = new TandemClient('127.0.0.1:1', { timeoutMs: 5000 });
    try {
      assert.equal((await failure(() => c.generateText(PROMPT, sampling()))).code, 'UNAVAILABLE');
    } finally {
      c.close();
    }
  });
});

// ------------------------------------------------------------ API key + TLS

describe('tandem serve with --api-key-file and TLS', { skip: HAVE_TANDEM ? false : `no tandem binary at ${TANDEM}` }, () => {
  let srv;
  let certs;
  let want;

  before(async () => {
    want = reference(8);
    certs = path.join(WORK, 'certs');
    fs.rmSync(certs, { recursive: true, force: true });
    const p = spawnSync(TANDEM, ['certs', '--out', certs, '--ip', '127.0.0.1', '--dns', 'localhost'], { encoding: 'utf8' });
    assert.equal(p.status, 0, `tandem certs: ${p.stderr}`);
    const keys = path.join(WORK, 'keys.txt');
    fs.writeFileSync(keys, `${KEY} name=node\n`);
    srv = await startServe('serve_tls', ['--api-key-file', keys, '--public-tls-cert', path.join(certs, 'router.crt'),
                                         '--public-tls-key', path.join(certs, 'router.key')],
                           { tlsCa: path.join(certs, 'ca.crt'), apiKey: KEY });
  }, { timeout: 400000 });

  after(async () => {
    const st = await stopServe(srv);
    assert.deepEqual(st, { code: 0, signal: null }, `serve did not exit 0 on SIGTERM; log: ${srv && tail(srv)}`);
  }, { timeout: 60000 });

  test('tlsCa + apiKey stream the reference tokens', { timeout: 120000 }, async () => {
    const done = await srv.client.generateText(PROMPT, sampling({ maxTokens: 8 }));
    assert.deepEqual(done.tokenIds, want.token_ids);
  });

  test('no key, or a wrong one: UNAUTHENTICATED', { timeout: 120000 }, async () => {
    for (const apiKey of ['', 'sk-wrong']) {
      const c = new TandemClient(srv.addr, { tlsCa: path.join(certs, 'ca.crt'), apiKey, timeoutMs: 30000 });
      try {
        const err = await failure(() => c.generateText(PROMPT, sampling({ maxTokens: 8 })));
        assert.equal(err.code, 'UNAUTHENTICATED', err.message);
      } finally {
        c.close();
      }
    }
  });

  test('a plaintext client does not get through', { timeout: 120000 }, async () => {
    const c = new TandemClient(srv.addr, { apiKey: KEY, timeoutMs: 10000 });
    try {
      const err = await failure(() => c.generateText(PROMPT, sampling({ maxTokens: 8 })));
      assert.equal(err.code, 'UNAVAILABLE', err.message);
    } finally {
      c.close();
    }
  });
});
