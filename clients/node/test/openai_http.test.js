'use strict';
// End-to-end test of Tandem's OpenAI-compatible HTTP API with the official
// `openai` Node SDK (npm, a devDependency of this package), against a real
// cluster: `tandem up --port 0 --http-port 0` (router, one prefill and one
// decode worker, the bundled model). The gRPC client of this package asks
// the same questions on the router's gRPC port: both APIs must give the same
// text.
//
//   TANDEM_BIN=build/bin/tandem node --test clients/node/test/openai_http.test.js
//
// CTest runs it with the other tests here as node_client_e2e. The cluster
// listens on 127.0.0.1 only and is stopped by its PID, also on failure.

const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const OpenAI = require('openai');
const { TandemClient } = require('..');

const TANDEM = path.resolve(process.env.TANDEM_BIN || path.join(__dirname, '..', '..', '..', 'build', 'bin', 'tandem'));
const HAVE_TANDEM = fs.existsSync(TANDEM);
const WORK = process.env.TANDEM_TEST_WORK || fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-openai-'));
fs.mkdirSync(WORK, { recursive: true });
const MODEL = 'tandem-shakespeare';  // the bundled model's directory name
const PROMPT = 'ROMEO:';
const MAX_TOKENS = 16;

let cluster = null;
process.on('exit', () => { if (cluster && !cluster.exited) { try { process.kill(cluster.pid, 'SIGKILL'); } catch { /* gone */ } } });

/** `tandem up` on free ports; resolves with its gRPC and HTTP addresses once it says ready. */
async function startCluster() {
  const logPath = path.join(WORK, 'up.log');
  const log = fs.openSync(logPath, 'w');
  const proc = spawn(TANDEM, ['up', '--port', '0', '--http-port', '0', '--insecure-cluster'],
                     { stdio: ['ignore', 'pipe', log] });
  fs.closeSync(log);
  const c = { pid: proc.pid, logPath, exited: null };
  cluster = c;
  c.exit = new Promise((resolve) => proc.on('exit', (code, signal) => { c.exited = { code, signal }; resolve(c.exited); }));
  const tail = () => { try { return fs.readFileSync(logPath, 'utf8').slice(-3000); } catch { return ''; } };
  const lines = readline.createInterface({ input: proc.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tandem up: not ready in 240 s; log: ${tail()}`)), 240000);
    lines.on('line', (line) => {
      let m;
      if ((m = /^tandem up: ready on (\S+)/.exec(line))) c.grpc = m[1];
      if ((m = /^tandem up: OpenAI HTTP API on (http:\/\/\S+\/v1);/.exec(line))) c.baseURL = m[1];
      if (c.grpc && c.baseURL) { clearTimeout(timer); resolve(); }
    });
    c.exit.then((st) => { clearTimeout(timer); reject(new Error(`tandem up exited (${JSON.stringify(st)}): ${tail()}`)); });
  });
  c.tail = tail;
  return c;
}

async function stopCluster(c) {
  if (!c || c.exited) return c && c.exited;
  process.kill(c.pid, 'SIGTERM');
  const timer = setTimeout(() => { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }, 30000);
  const st = await c.exit;
  clearTimeout(timer);
  return st;
}

describe('OpenAI HTTP API (tandem up --http-port)', { skip: HAVE_TANDEM ? false : `no tandem binary at ${TANDEM}` }, () => {
  let c;
  let openai;
  let grpc;
  let want;  // the gRPC API's greedy completion of PROMPT

  before(async () => {
    c = await startCluster();
    openai = new OpenAI({ baseURL: c.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
    grpc = new TandemClient(c.grpc, { timeoutMs: 120000 });
    await grpc.waitForReady(30000);
    want = await grpc.generateText(PROMPT, { temperature: 0, ignoreEos: true, maxTokens: MAX_TOKENS });
    assert.equal(want.tokenIds.length, MAX_TOKENS);
  }, { timeout: 400000 });

  after(async () => {
    if (grpc) grpc.close();
    const st = await stopCluster(c);
    assert.deepEqual(st, { code: 0, signal: null }, `tandem up did not exit 0 on SIGTERM; log: ${c && c.tail()}`);
  }, { timeout: 60000 });

  test('models.list names the served model', async () => {
    const ids = [];
    for await (const m of openai.models.list()) ids.push(m.id);
    assert.deepEqual(ids, [MODEL]);
    const m = await openai.models.retrieve(MODEL);
    assert.equal(m.object, 'model');
  });

  test('a greedy completion equals the gRPC API\'s, whole and streamed', { timeout: 120000 }, async () => {
    const params = { model: MODEL, prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0, ignore_eos: true };
    const whole = await openai.completions.create(params);
    assert.equal(whole.object, 'text_completion');
    assert.equal(whole.choices.length, 1);
    assert.equal(whole.choices[0].text, want.text);
    assert.equal(whole.choices[0].finish_reason, 'length');
    assert.equal(whole.usage.completion_tokens, MAX_TOKENS);
    assert.equal(whole.usage.prompt_tokens, want.usage.promptTokens);

    const stream = await openai.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let chunks = 0;
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.text;
        chunks += 1;
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    assert.equal(text, want.text);
    assert.ok(chunks > 1, `streamed in ${chunks} chunk(s)`);
    assert.equal(finish, 'length');
    assert.deepEqual(usage, whole.usage);
  });

  test('an invalid parameter is a 400 naming it; an unknown model a 404', { timeout: 60000 }, async () => {
    await assert.rejects(openai.completions.create({ model: MODEL, prompt: PROMPT, top_p: 5 }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `${e}`);
      assert.equal(e.status, 400);
      assert.equal(e.param, 'top_p');
      assert.match(e.message, /top_p: 5 must be in \(0, 1\]/);
      return true;
    });
    await assert.rejects(openai.completions.create({ model: 'gpt-4o', prompt: PROMPT }), (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, `${e}`);
      return true;
    });
  });

  test('a chat completion with the model\'s template, whole and streamed alike', { timeout: 120000 }, async () => {
    const params = { model: MODEL, messages: [{ role: 'user', content: 'Who art thou?' }], max_tokens: 12,
                     temperature: 0, ignore_eos: true };
    const whole = await openai.chat.completions.create(params);
    assert.equal(whole.object, 'chat.completion');
    const msg = whole.choices[0].message;
    assert.equal(msg.role, 'assistant');
    assert.ok(typeof msg.content === 'string' && msg.content.length > 0, JSON.stringify(msg));
    assert.equal(whole.usage.completion_tokens, 12);
    let text = '';
    let role = null;
    for await (const chunk of await openai.chat.completions.create({ ...params, stream: true })) {
      const d = chunk.choices[0].delta;
      if (d.role) role = d.role;
      if (d.content) text += d.content;
    }
    assert.equal(role, 'assistant');
    assert.equal(text, msg.content);
  });

  test('aborting a stream ends it early; the API keeps serving', { timeout: 120000 }, async () => {
    const ac = new AbortController();
    const stream = await openai.completions.create(
      { model: MODEL, prompt: PROMPT, max_tokens: 250, temperature: 0, ignore_eos: true, stream: true },
      { signal: ac.signal });
    // The SDK ends the iteration quietly on its own abort.
    let got = 0;
    let finish = null;
    for await (const chunk of stream) {
      got += chunk.choices.length;
      if (chunk.choices.length && chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
      if (got >= 2) ac.abort();
    }
    assert.ok(got >= 2 && got < 250, `got ${got} chunks`);
    assert.equal(finish, null);
    const again = await openai.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: MAX_TOKENS,
                                                     temperature: 0, ignore_eos: true });
    assert.equal(again.choices[0].text, want.text);
  });
});
