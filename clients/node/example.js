#!/usr/bin/env node
'use strict';
// Streams one generation from a Tandem server to stdout.
//
//   node clients/node/example.js --addr 127.0.0.1:50051 --prompt "ROMEO:"
//
// Prints the prompt, then the text as it arrives, then the finish reason and
// token counts on stderr. Ctrl-C cancels the request on the server.

const { parseArgs } = require('node:util');
const { TandemClient, TandemError } = require('./index.js');

const USAGE = `usage: example.js --prompt TEXT [--addr HOST:PORT] [--max-tokens N] [--temperature T]
                  [--seed S] [--stop STR]... [--timeout SECONDS] [--api-key KEY] [--tls-ca CA.pem]`;

async function main() {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        addr: { type: 'string', default: '127.0.0.1:50051' },
        prompt: { type: 'string' },
        'max-tokens': { type: 'string', default: '64' },
        temperature: { type: 'string' },  // 0 = greedy (default: the model's)
        seed: { type: 'string' },
        stop: { type: 'string', multiple: true },  // stop string (repeatable)
        timeout: { type: 'string', default: '60' },  // deadline of the call in seconds
        'api-key': { type: 'string' },  // default: $TANDEM_API_KEY
        'tls-ca': { type: 'string' },  // PEM CA: connect with TLS
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    console.error(`${e.message}\n${USAGE}`);
    return 2;
  }
  if (args.help || args.prompt === undefined) {
    console.error(USAGE);
    return args.help ? 0 : 2;
  }

  const client = new TandemClient(args.addr, {
    timeoutMs: Number(args.timeout) * 1000, apiKey: args['api-key'], tlsCa: args['tls-ca'],
  });
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());  // cancels the request on the server
  process.stdout.write(args.prompt);
  try {
    const stream = client.generate({
      prompt: args.prompt,
      maxTokens: Number(args['max-tokens']),
      temperature: args.temperature !== undefined ? Number(args.temperature) : undefined,
      seed: args.seed,
      stop: args.stop,
      signal: abort.signal,
    });
    for await (const chunk of stream) {
      process.stdout.write(chunk.text);
      if (chunk.finishReason) {
        process.stdout.write('\n');
        console.error(`[finish: ${chunk.finishReason}, prompt tokens: ${chunk.usage.promptTokens}, ` +
                      `completion tokens: ${chunk.usage.completionTokens}]`);
      }
    }
  } catch (e) {
    if (abort.signal.aborted && e instanceof TandemError && e.code === 'CANCELLED') {
      console.error('\n[cancelled]');
      return 130;
    }
    console.error(`\nerror: ${e.message}`);
    return 1;
  } finally {
    client.close();
  }
  return 0;
}

main().then((code) => { process.exitCode = code; });
