// The bundle directory of the default model, for `Engine.load(bundlePath)`: the CommonJS twin of index.js.
'use strict';
const path = require('node:path');

const bundlePath = path.join(__dirname, 'bundle') + path.sep;
const name = 'vikdf-mini';
module.exports = { bundlePath, name, default: { bundlePath, name } };
