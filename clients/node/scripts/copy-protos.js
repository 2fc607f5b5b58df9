#!/usr/bin/env node
'use strict';
// Copies the public API's .proto from the repository (../../proto, or
// $TANDEM_PROTO_DIR) into this package's proto/ folder, so the package works
// outside the checkout (npm pack runs this as `prepack`).
//
//   npm run copy-protos
const fs = require('node:fs');
const path = require('node:path');

const rel = path.join('tandem', 'v1', 'generation.proto');
const src = path.resolve(process.env.TANDEM_PROTO_DIR || path.join(__dirname, '..', '..', '..', 'proto'));
const dst = path.join(__dirname, '..', 'proto');
if (!fs.existsSync(path.join(src, rel))) {
  console.error(`copy-protos: ${path.join(src, rel)} not found (set TANDEM_PROTO_DIR to the repository's proto/)`);
  process.exit(1);
}
fs.mkdirSync(path.join(dst, path.dirname(rel)), { recursive: true });
fs.copyFileSync(path.join(src, rel), path.join(dst, rel));
console.log(`copy-protos: ${path.join(src, rel)} -> ${path.join(dst, rel)}`);
