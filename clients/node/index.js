'use strict';
/**
 * A small Node.js client for Tandem's public gRPC API, `tandem.v1.Generation`
 * (proto/tandem/v1/generation.proto): one `Generate` call streams the
 * completion of one prompt as chunks of text and token ids; the last chunk
 * carries the finish reason and the token counts.
 *
 *     const { TandemClient } = require('@tandem/client');
 *     const client = new TandemClient('127.0.0.1:50051', { timeoutMs: 60000 });
 *     for await (const chunk of client.generate({ prompt: 'ROMEO:', maxTokens: 32, temperature: 0 })) {
 *       process.stdout.write(chunk.text);
 *     }
 *     client.close();
 *
 * The .proto file is loaded at runtime with @grpc/proto-loader (no generated
 * code): see {@link findProtoDir} for where it is looked up.
 *
 * @module @tandem/client
 */

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_FILE = path.join('tandem', 'v1', 'generation.proto');

// ----------------------------------------------------------------- protos

/**
 * Finds the directory holding `tandem/v1/generation.proto`, the first of:
 * `explicitDir` (the `protoDir` client option), `$TANDEM_PROTO_DIR`, the
 * repository's `proto/` when this package sits in a Tandem checkout
 * (`clients/node/../../proto`), and the package's own `proto/` (copied there
 * by `npm run copy-protos`, and by `npm pack`).
 *
 * @param {string} [explicitDir]
 * @returns {string} an absolute directory
 * @throws {Error} when none of them holds the proto
 */
function findProtoDir(explicitDir) {
  const has = (dir) => fs.existsSync(path.join(dir, PROTO_FILE));
  // An explicit choice that does not hold the proto is an error, not a fallback.
  for (const [what, dir] of [['the protoDir option', explicitDir], ['$TANDEM_PROTO_DIR', process.env.TANDEM_PROTO_DIR]]) {
    if (!dir) continue;
    if (has(dir)) return path.resolve(dir);
    throw new Error(`@tandem/client: ${PROTO_FILE} not found in ${what} (${path.resolve(dir)})`);
  }
  const candidates = [path.join(__dirname, '..', '..', 'proto'), path.join(__dirname, 'proto')];
  for (const dir of candidates) {
    if (has(dir)) return path.resolve(dir);
  }
  throw new Error(`@tandem/client: ${PROTO_FILE} not found in ${candidates.map((d) => path.resolve(d)).join(' or ')}; ` +
                  'pass protoDir, set TANDEM_PROTO_DIR to the repository\'s proto/ folder, or run `npm run copy-protos`');
}

const loaded = new Map();

/**
 * Loads the Generation service definition from `protoDir` (cached per
 * directory). Field names keep the proto's snake_case; 64-bit integers are
 * strings; enums are their names.
 *
 * @param {string} [protoDir] see {@link findProtoDir}
 * @returns {{Generation: Function, GenerateRequest: object, protoDir: string}}
 */
function loadProto(protoDir) {
  const dir = findProtoDir(protoDir);
  if (!loaded.has(dir)) {
    const def = protoLoader.loadSync(PROTO_FILE, {
      includeDirs: [dir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(def).tandem.v1;
    loaded.set(dir, { Generation: pkg.Generation, GenerateRequest: pkg.GenerateRequest, protoDir: dir });
  }
  return loaded.get(dir);
}

// ----------------------------------------------------------------- errors

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, n]) => [n, name]));

/**
 * A failed call. `code` is the gRPC status code name ("INVALID_ARGUMENT",
 * "DEADLINE_EXCEEDED", "CANCELLED", "UNAVAILABLE", "RESOURCE_EXHAUSTED",
 * "UNAUTHENTICATED", ...), `grpcCode` its number, `details` the server's
 * message (for INVALID_ARGUMENT it names the field, e.g.
 * "sampling.temperature: -1 must be >= 0"), `metadata` the trailing metadata
 * (RESOURCE_EXHAUSTED carries `grpc-retry-pushback-ms`).
 */
class TandemError extends Error {
  /**
   * @param {string} code status code name
   * @param {string} details the message
   * @param {{grpcCode?: number, metadata?: import('@grpc/grpc-js').Metadata, cause?: Error}} [extra]
   */
  constructor(code, details, extra = {}) {
    super(`${code}: ${details}`, extra.cause ? { cause: extra.cause } : undefined);
    this.name = 'TandemError';
    /** @type {string} */
    this.code = code;
    /** @type {number} */
    this.grpcCode = extra.grpcCode !== undefined ? extra.grpcCode : grpc.status[code];
    /** @type {string} */
    this.details = details;
    /** @type {import('@grpc/grpc-js').Metadata|undefined} */
    this.metadata = extra.metadata;
  }

  /**
   * Wraps a grpc-js error (or anything thrown) as a TandemError.
   * @param {any} err
   * @returns {TandemError}
   */
  static from(err) {
    if (err instanceof TandemError) return err;
    if (err && typeof err.code === 'number' && CODE_NAMES[err.code] !== undefined) {
      return new TandemError(CODE_NAMES[err.code], err.details !== undefined ? err.details : err.message,
                             { grpcCode: err.code, metadata: err.metadata, cause: err });
    }
    return new TandemError('UNKNOWN', err && err.message ? err.message : String(err), { cause: err });
  }
}

// ----------------------------------------------------------------- requests

/** The SamplingParams fields, by their camelCase option names. */
const SAMPLING_FIELDS = {
  temperature: 'temperature', topP: 'top_p', topK: 'top_k', minP: 'min_p',
  repetitionPenalty: 'repetition_penalty', frequencyPenalty: 'frequency_penalty',
  presencePenalty: 'presence_penalty', maxTokens: 'max_tokens', seed: 'seed', stop: 'stop',
  stopTokenIds: 'stop_token_ids', ignoreEos: 'ignore_eos', logprobs: 'logprobs',
};
/** The other request fields. */
const REQUEST_FIELDS = { prompt: 'prompt', promptTokenIds: 'prompt_token_ids', requestId: 'request_id',
                         priority: 'priority' };
/** Per-call options that are not part of the request. */
const CALL_OPTIONS = new Set(['signal', 'timeoutMs', 'metadata']);

const camel = (k) => k.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

/**
 * @typedef {object} GenerateRequest
 * Options of {@link TandemClient#generate}; snake_case spellings of the same
 * names (`max_tokens`, `prompt_token_ids`, ...) are accepted too. Unset
 * sampling fields take the model's generation_config.json defaults (or the
 * neutral value). A misspelled name is a TypeError.
 * @property {string} [prompt] the prompt text
 * @property {number[]} [promptTokenIds] the prompt as token ids (instead of `prompt`)
 * @property {string} [requestId] the caller's id for logs (the server makes one when empty)
 * @property {number} [priority] lower runs first under the priority policy
 * @property {number} [temperature] 0 = greedy
 * @property {number} [topP] in (0, 1]
 * @property {number} [topK] 0 or -1 = off
 * @property {number} [minP] in [0, 1]
 * @property {number} [repetitionPenalty] > 0; 1 = off
 * @property {number} [frequencyPenalty] in [-2, 2]
 * @property {number} [presencePenalty] in [-2, 2]
 * @property {number} [maxTokens] >= 1 (0 means 16)
 * @property {number|string|bigint} [seed] the request's own random stream
 * @property {string|string[]} [stop] stop strings (not returned)
 * @property {number[]} [stopTokenIds] token ids that end generation
 * @property {boolean} [ignoreEos] keep going past end-of-sequence
 * @property {number} [logprobs] also return the top-N logprobs per token, N in [0, 20]
 * @property {AbortSignal} [signal] aborting it cancels the call (the stream then fails with CANCELLED)
 * @property {number} [timeoutMs] deadline of the whole stream in ms (default: the client's)
 * @property {Record<string, string>|import('@grpc/grpc-js').Metadata} [metadata] extra request metadata
 */

/**
 * Builds the GenerateRequest message (a plain object in the proto's
 * snake_case) that {@link TandemClient#generate} sends for `options`.
 *
 * @param {GenerateRequest} options
 * @returns {object}
 * @throws {TypeError} on an unknown option, or both prompt and promptTokenIds
 */
function buildRequest(options = {}) {
  const req = { sampling: {} };
  const unknown = [];
  for (const [key, value] of Object.entries(options)) {
    const k = camel(key);
    if (CALL_OPTIONS.has(k)) continue;
    if (value === undefined || value === null) continue;
    if (k in SAMPLING_FIELDS) {
      let v = value;
      if (k === 'stop' && typeof v === 'string') v = [v];
      if (k === 'seed' && typeof v === 'bigint') v = v.toString();
      req.sampling[SAMPLING_FIELDS[k]] = v;
    } else if (k in REQUEST_FIELDS) {
      req[REQUEST_FIELDS[k]] = value;
    } else {
      unknown.push(key);
    }
  }
  if (unknown.length) {
    throw new TypeError(`unknown generate option(s): ${unknown.join(', ')} (known: ` +
                        `${[...Object.keys(REQUEST_FIELDS), ...Object.keys(SAMPLING_FIELDS), ...CALL_OPTIONS].join(', ')})`);
  }
  if (req.prompt !== undefined && req.prompt_token_ids !== undefined) {
    throw new TypeError('give prompt or promptTokenIds, not both');
  }
  return req;
}

// ----------------------------------------------------------------- results

const FINISH = { FINISH_REASON_UNSPECIFIED: null, FINISH_REASON_LENGTH: 'length', FINISH_REASON_STOP: 'stop' };

/**
 * @typedef {object} Usage
 * @property {number} promptTokens tokens in the prompt (BOS included)
 * @property {number} completionTokens tokens generated
 */
/**
 * @typedef {object} Logprob
 * @property {number} tokenId the chosen token
 * @property {number} logprob its natural-log probability
 * @property {{tokenId: number, logprob: number}[]} topLogprobs the most likely tokens, best first
 */
/**
 * @typedef {object} Chunk
 * One streamed chunk.
 * @property {string} text new complete UTF-8 text (may be "" while tokenIds is not: held back)
 * @property {number[]} tokenIds the new token ids
 * @property {?('length'|'stop')} finishReason null until the last chunk
 * @property {?Usage} usage set on the last chunk only
 * @property {Logprob[]} logprobs one per token when `logprobs` was asked for, else []
 * @property {string} requestId the server's id of the request
 */
/**
 * @typedef {object} Completion
 * A whole generation, as {@link TandemClient#generateText} returns it.
 * @property {string} text
 * @property {number[]} tokenIds
 * @property {?('length'|'stop')} finishReason
 * @property {?Usage} usage
 * @property {Logprob[]} logprobs
 * @property {string} requestId
 * @property {number} chunks how many chunks the stream had
 */

function toChunk(r) {
  return {
    text: r.text,
    tokenIds: r.token_ids.slice(),
    finishReason: r.finish_reason in FINISH ? FINISH[r.finish_reason] : r.finish_reason,
    usage: r.usage ? { promptTokens: r.usage.prompt_tokens, completionTokens: r.usage.completion_tokens } : null,
    logprobs: r.logprobs.map((l) => ({
      tokenId: l.token_id, logprob: l.logprob,
      topLogprobs: l.top_logprobs.map((t) => ({ tokenId: t.token_id, logprob: t.logprob })),
    })),
    requestId: r.request_id,
  };
}

// ----------------------------------------------------------------- client

/**
 * @typedef {object} ClientOptions
 * @property {string} [apiKey] sent as `authorization: Bearer KEY` on every
 *   generation (default: $TANDEM_API_KEY; servers started with --api-key-file need it)
 * @property {string|Buffer} [tlsCa] PEM CA certificate(s), a file path or the
 *   bytes: the connection is TLS, trusting these
 * @property {boolean} [tls] TLS with the system's roots (implied by tlsCa)
 * @property {string} [tlsServerName] the name to check the server's certificate
 *   against, when it differs from the address's host
 * @property {import('@grpc/grpc-js').ChannelCredentials} [credentials] any
 *   grpc-js channel credentials (overrides tls/tlsCa)
 * @property {number} [timeoutMs] default deadline of each call in ms (default: none)
 * @property {string} [protoDir] where `tandem/v1/generation.proto` is (see {@link findProtoDir})
 * @property {object} [channelOptions] extra grpc-js channel options
 */

/**
 * A connection to a Tandem endpoint: a cluster's router or `tandem serve`.
 * One client serves many concurrent calls; close() it when done.
 */
class TandemClient {
  /**
   * @param {string} [address] "host:port" (default 127.0.0.1:50051)
   * @param {ClientOptions} [options]
   */
  constructor(address = '127.0.0.1:50051', options = {}) {
    const { Generation } = loadProto(options.protoDir);
    /** @type {string} */
    this.address = address;
    /** @type {number|undefined} */
    this.timeoutMs = options.timeoutMs;
    const key = options.apiKey !== undefined ? options.apiKey : process.env.TANDEM_API_KEY;
    this._apiKey = key || '';
    let creds = options.credentials;
    if (!creds) {
      if (options.tlsCa || options.tls) {
        let ca = null;
        if (options.tlsCa) ca = Buffer.isBuffer(options.tlsCa) ? options.tlsCa : fs.readFileSync(options.tlsCa);
        creds = grpc.credentials.createSsl(ca);
      } else {
        creds = grpc.credentials.createInsecure();
      }
    }
    const channelOptions = { ...(options.channelOptions || {}) };
    if (options.tlsServerName) channelOptions['grpc.ssl_target_name_override'] = options.tlsServerName;
    this._stub = new Generation(address, creds, channelOptions);
  }

  /** Closes the channel; calls still running are cancelled. */
  close() {
    this._stub.close();
  }

  _metadata(extra) {
    const md = new grpc.Metadata();
    if (this._apiKey) md.set('authorization', `Bearer ${this._apiKey}`);
    if (extra instanceof grpc.Metadata) {
      md.merge(extra);
    } else if (extra) {
      for (const [k, v] of Object.entries(extra)) md.set(k, v);
    }
    return md;
  }

  _deadline(timeoutMs) {
    const ms = timeoutMs !== undefined ? timeoutMs : this.timeoutMs;
    return ms === undefined || ms === null ? Infinity : new Date(Date.now() + ms);
  }

  /**
   * Waits until the channel is connected.
   * @param {number} [timeoutMs=10000]
   * @returns {Promise<void>}
   * @throws {TandemError} UNAVAILABLE when not reachable in time
   */
  waitForReady(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      this._stub.waitForReady(new Date(Date.now() + timeoutMs), (err) => {
        if (err) reject(new TandemError('UNAVAILABLE', `${this.address} not reachable within ${timeoutMs} ms`));
        else resolve();
      });
    });
  }

  /**
   * grpc.health.v1 Check (the server answers without an API key).
   * @param {string} [service] "" = the whole server
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<'SERVING'|'NOT_SERVING'|'UNKNOWN'|'SERVICE_UNKNOWN'|string>}
   * @throws {TandemError}
   */
  health(service = '', { timeoutMs = 5000 } = {}) {
    // HealthCheckRequest { string service = 1; } / HealthCheckResponse { enum status = 1; }
    // encoded by hand: the health proto is not in this repository.
    const svc = Buffer.from(service, 'utf8');
    const req = svc.length ? Buffer.concat([Buffer.from([0x0a]), varint(svc.length), svc]) : Buffer.alloc(0);
    return new Promise((resolve, reject) => {
      this._stub.makeUnaryRequest('/grpc.health.v1.Health/Check', (b) => b, (b) => b, req,
        this._metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (err, resp) => {
          if (err) return reject(TandemError.from(err));
          let status = 0;
          if (resp.length && resp[0] === 0x08) status = readVarint(resp, 1);
          resolve({ 0: 'UNKNOWN', 1: 'SERVING', 2: 'NOT_SERVING', 3: 'SERVICE_UNKNOWN' }[status] || String(status));
        });
    });
  }

  /**
   * Starts a generation: an async iterator of {@link Chunk}s, the last one
   * with `finishReason` set. Errors (TandemError) are thrown while iterating.
   * Aborting `signal` cancels the call on the server (iteration then throws
   * a CANCELLED TandemError); leaving a `for await` loop early (break,
   * return, throw) cancels it too, silently.
   *
   * @param {GenerateRequest} request the prompt, sampling fields and call options
   * @returns {AsyncGenerator<Chunk, void, undefined>}
   * @throws {TypeError} (at once) on an unknown option
   */
  generate(request = {}) {
    const req = buildRequest(request);
    const { signal, timeoutMs, metadata } = request;
    const stub = this._stub;
    const md = this._metadata(metadata);
    const deadline = this._deadline(timeoutMs);
    return (async function* stream() {
      if (signal && signal.aborted) {
        throw new TandemError('CANCELLED', 'aborted before the call started', { cause: signal.reason });
      }
      const call = stub.Generate(req, md, { deadline });
      let finished = false;
      const onAbort = () => call.cancel();
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      try {
        for await (const msg of call) yield toChunk(msg);
        finished = true;
      } catch (err) {
        finished = true;
        const e = TandemError.from(err);
        if (signal && signal.aborted && e.code === 'CANCELLED' && signal.reason !== undefined) {
          e.reason = signal.reason;
        }
        throw e;
      } finally {
        if (signal) signal.removeEventListener('abort', onAbort);
        if (!finished) call.cancel();  // the consumer stopped early
      }
    })();
  }

  /**
   * Runs a generation to the end and returns it whole.
   *
   * @param {string|number[]} prompt the prompt text, or its token ids
   * @param {Omit<GenerateRequest, 'prompt'|'promptTokenIds'>} [options]
   * @returns {Promise<Completion>}
   * @throws {TandemError}
   */
  async generateText(prompt, options = {}) {
    const request = { ...options };
    if (Array.isArray(prompt)) request.promptTokenIds = prompt;
    else if (prompt !== undefined && prompt !== null) request.prompt = prompt;
    const done = { text: '', tokenIds: [], finishReason: null, usage: null, logprobs: [], requestId: '', chunks: 0 };
    const parts = [];
    for await (const c of this.generate(request)) {
      parts.push(c.text);
      done.tokenIds.push(...c.tokenIds);
      done.logprobs.push(...c.logprobs);
      done.requestId = c.requestId || done.requestId;
      done.chunks += 1;
      if (c.finishReason !== null) {
        done.finishReason = c.finishReason;
        done.usage = c.usage;
      }
    }
    done.text = parts.join('');
    return done;
  }
}

function varint(n) {
  const out = [];
  for (;;) {
    const b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n) out.push(b | 0x80);
    else { out.push(b); return Buffer.from(out); }
  }
}

function readVarint(buf, pos) {
  let result = 0;
  let mul = 1;
  for (; pos < buf.length; pos++) {
    result += (buf[pos] & 0x7f) * mul;
    if (!(buf[pos] & 0x80)) break;
    mul *= 128;
  }
  return result;
}

module.exports = { TandemClient, TandemError, buildRequest, findProtoDir, loadProto, SAMPLING_FIELDS, grpc };
