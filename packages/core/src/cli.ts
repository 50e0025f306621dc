#!/usr/bin/env node
/**
 * `vikdf`: chat with, generate from and inspect VIKDF bundles; without a bundle, the default model
 * (`@vikdf/model-mini`, as `Engine.load()`).
 *
 *   vikdf chat [bundle] [options]                 interactive streaming chat (/reset, /quit)
 *   vikdf generate [bundle] --context TEXT ...    one reply to a context (each --context is a turn)
 *   vikdf inspect [bundle]                        manifest, sizes, execution providers
 *   vikdf serve [bundle]                          the WebSocket chat server and page (@vikdf/websocket)
 *
 * `vikdf <command> --help` prints that command's usage. Exit codes: 0 ok, 1 runtime failure (a bundle that is
 * missing or does not verify, a failed generation), 2 bad usage.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';
import { Engine, type EngineOptions } from './engine.js';
import type { GenerationOptions } from './generation/options.js';
import { serveUntilStopped } from './cli-serve.js';
import { describeProvider, type Device, type Precision } from './runtime.js';

const MODEL_OPTIONS = `  --device cuda|webgpu|cpu   execution providers to try, in order (repeatable)
  --variant NAME             weights variant (fp16, int8)
  --precision fast|exact     int8 activations (fast, the default) or float ones (exact)
  --verbose                  the execution-provider probe's details on stderr (as VIKDF_DEBUG=1)`;
const GENERATION_OPTIONS = `  --max-new-tokens N  --beams N  --greedy  --sample  --temperature T  --top-k K  --top-p P
  --min-p P  --seed S  --repetition-penalty R  --stop TEXT (repeatable)  --system TEXT`;
const EXIT_CODES = `exit codes: 0 ok, 1 runtime failure (missing or corrupt bundle, failed generation), 2 bad usage`;
const BUNDLE = `[bundle]: a bundle directory; without one, the default model @vikdf/model-mini`;

const COMMAND_USAGE: Record<string, string> = {
  chat: `usage: vikdf chat [bundle] [options]
Interactive streaming chat on stdin/stdout; /reset clears the history, /quit (or end of input) leaves,
Ctrl+C stops a reply.
${BUNDLE}
options:
${MODEL_OPTIONS}
${GENERATION_OPTIONS}
${EXIT_CODES}`,
  generate: `usage: vikdf generate [bundle] --context TEXT [--context TEXT ...] [options]
One reply to a dialogue context (each --context is a turn, the last one the user's), streamed to stdout.
${BUNDLE}
options:
${MODEL_OPTIONS}
${GENERATION_OPTIONS}
  --json                     print the whole result (text, token ids, finish reason, usage, timings) as JSON
${EXIT_CODES}`,
  inspect: `usage: vikdf inspect [bundle] [options]
Verifies and loads the bundle; prints its manifest, size and the execution provider (with why others were skipped).
${BUNDLE}
options:
${MODEL_OPTIONS}
  --json                     one line of JSON
${EXIT_CODES}`,
  serve: `usage: vikdf serve [bundle] [options]
The WebSocket chat server and its web page (needs the package @vikdf/websocket): prints the page's URL, runs
until Ctrl+C or SIGTERM, then lets replies in progress finish (5 s). Protocol: docs/websocket-protocol.md.
${BUNDLE}
options:
  --port N                   the port (default 8787; 0 picks a free one)
  --host H                   the address to listen on (default 127.0.0.1)
  --token T                  require this bearer token from clients
${MODEL_OPTIONS}
${EXIT_CODES}`,
};

const USAGE = `usage:
  vikdf chat [bundle] [options]
  vikdf generate [bundle] --context TEXT [--context TEXT ...] [options]
  vikdf inspect [bundle] [options]
  vikdf serve [bundle] [--port N] [--host H] [--token T] [options]
  vikdf <command> --help      that command's usage and options
${BUNDLE}
${EXIT_CODES}`;

/** Bad usage: exit code 2, with the usage of the command. */
class UsageError extends Error {}

const OPTIONS = {
  context: { type: 'string', multiple: true },
  device: { type: 'string', multiple: true },
  variant: { type: 'string' },
  precision: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  token: { type: 'string' },
  'max-new-tokens': { type: 'string' },
  beams: { type: 'string' },
  greedy: { type: 'boolean' },
  sample: { type: 'boolean' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  seed: { type: 'string' },
  'repetition-penalty': { type: 'string' },
  stop: { type: 'string', multiple: true },
  system: { type: 'string' },
  json: { type: 'boolean' },
  verbose: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

function number(values: Values, key: keyof Values): number | undefined {
  const raw = values[key];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new UsageError(`--${key} must be a number, got "${String(raw)}"`);
  return n;
}

function generationOptions(values: Values): GenerationOptions {
  const o: GenerationOptions = {};
  const set = <K extends keyof GenerationOptions>(k: K, v: GenerationOptions[K] | undefined) => {
    if (v !== undefined) o[k] = v;
  };
  set('maxNewTokens', number(values, 'max-new-tokens'));
  set('numBeams', values.greedy || values.sample ? 1 : number(values, 'beams'));
  if (values.sample) o.doSample = true;
  if (values.greedy) o.doSample = false;
  set('temperature', number(values, 'temperature'));
  set('topK', number(values, 'top-k'));
  set('topP', number(values, 'top-p'));
  set('minP', number(values, 'min-p'));
  set('seed', number(values, 'seed'));
  set('repetitionPenalty', number(values, 'repetition-penalty'));
  if (values.stop) o.stopStrings = values.stop;
  return o;
}

function engineOptions(values: Values): EngineOptions {
  if (values.verbose) process.env.VIKDF_DEBUG = '1'; // the provider probe's details on stderr
  const devices = values.device as Device[] | undefined;
  return {
    ...(devices ? { devices } : {}),
    ...(values.variant ? { variant: values.variant } : {}),
    ...(values.precision ? { precision: values.precision as Precision } : {}),
  };
}

async function load(bundle: string | undefined, values: Values): Promise<Engine> {
  const engine = await Engine.load(bundle, engineOptions(values));
  process.stderr.write(`[vikdf] ${describeProvider(engine.manifest.name, engine.provider)}\n`);
  return engine;
}

async function serve(bundle: string | undefined, values: Values): Promise<void> {
  const port = values.port === undefined ? 8787 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be a port number (0-65535), got "${values.port}"`);
  await serveUntilStopped({ bundle, host: values.host ?? '127.0.0.1', port, token: values.token, engineOptions: engineOptions(values) });
}

async function generate(bundle: string | undefined, values: Values): Promise<void> {
  if (!values.context?.length) throw new UsageError('needs at least one --context TEXT');
  const engine = await load(bundle, values);
  try {
    const handle = engine.generate({ context: values.context, options: generationOptions(values), ...(values.system ? { system: values.system } : {}) });
    if (!values.json) for await (const chunk of handle) process.stdout.write(chunk);
    const result = await handle.result;
    process.stdout.write(values.json ? `${JSON.stringify(result)}\n` : '\n');
  } finally {
    await engine.close();
  }
}

async function chat(bundle: string | undefined, values: Values): Promise<void> {
  const engine = await load(bundle, values);
  const conversation = engine.conversation(values.system ? { system: values.system } : {});
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  const options = generationOptions(values);
  process.stdout.write('Type a message; /reset clears the history, /quit leaves.\n');
  let current: AbortController | undefined;
  rl.on('SIGINT', () => (current ? current.abort() : rl.close()));
  // The line iterator buffers input that arrives while a reply is being generated (piped input, fast typing).
  const lines = rl[Symbol.asyncIterator]();
  try {
    for (;;) {
      process.stdout.write('you> ');
      const next = await lines.next();
      if (next.done) break;
      const text = String(next.value).trim();
      if (text === '/quit') break;
      if (text === '/reset') {
        conversation.reset();
        process.stdout.write('(history cleared)\n');
        continue;
      }
      if (!text) continue;
      current = new AbortController();
      process.stdout.write('bot> ');
      const handle = conversation.send(text, { options, signal: current.signal });
      try {
        for await (const chunk of handle) process.stdout.write(chunk);
        const result = await handle.result;
        process.stdout.write(result.finishReason === 'aborted' ? ' [stopped]\n' : '\n');
      } catch (err) {
        process.stdout.write(`\n[error] ${(err as Error).message}\n`);
      }
      current = undefined;
    }
  } finally {
    rl.close();
    await engine.close('cancel');
  }
}

async function inspect(bundle: string | undefined, values: Values): Promise<void> {
  const engine = await load(bundle, values); // verifies every file
  const manifest = engine.manifest;
  let bytes = 0;
  for (const file of Object.keys(manifest.files)) bytes += (await stat(path.join(engine.dir, file))).size;
  const report = {
    name: manifest.name,
    bundle: engine.dir,
    source: manifest.source,
    created_by: manifest.created_by,
    model: manifest.model,
    generation: manifest.generation,
    limits: { text_encoder_tokens: manifest.text_encoder_input.max_length, prompt_tokens: manifest.prompt.max_length },
    variants: Object.keys(manifest.variants ?? {}),
    files: Object.keys(manifest.files).length,
    size_mb: Math.round((bytes / 1e6) * 100) / 100,
    provider: engine.provider,
  };
  await engine.close();
  process.stdout.write(values.json ? `${JSON.stringify(report)}\n` : `${JSON.stringify(report, null, 2)}\n`);
}

export async function main(argv = process.argv.slice(2)): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (err) {
    const command = argv.find((a) => !a.startsWith('-'));
    process.stderr.write(`vikdf: ${(err as Error).message}\n${(command && COMMAND_USAGE[command]) || USAGE}\n`);
    return 2;
  }
  const [command, ...rest] = parsed.positionals;
  if (!command) {
    process[parsed.values.help ? 'stdout' : 'stderr'].write(`${USAGE}\n`);
    return parsed.values.help ? 0 : 2;
  }
  if (command === 'help') {
    // `vikdf help generate` as `vikdf generate --help`.
    const usage = rest[0] === undefined ? USAGE : COMMAND_USAGE[rest[0]];
    if (usage === undefined) {
      process.stderr.write(`vikdf help: unknown command "${rest[0]}"\n${USAGE}\n`);
      return 2;
    }
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const commands: Record<string, (b: string | undefined, v: Values) => Promise<void>> = { chat, generate, inspect, serve };
  const run = commands[command];
  if (!run) {
    process.stderr.write(`vikdf: unknown command "${command}"\n${USAGE}\n`);
    return 2;
  }
  const usage = COMMAND_USAGE[command]!;
  if (parsed.values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  try {
    if (rest.length > 1) throw new UsageError(`takes at most one bundle, got ${rest.length} arguments: ${rest.map((a) => JSON.stringify(a)).join(' ')}`);
    if (parsed.values.context?.length && command !== 'generate') throw new UsageError('--context is an option of generate only');
    for (const option of ['port', 'host', 'token'] as const) {
      if (parsed.values[option] !== undefined && command !== 'serve') throw new UsageError(`--${option} is an option of serve only`);
    }
    generationOptions(parsed.values); // bad numbers are usage errors, found before the model loads
    await run(rest[0], parsed.values);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vikdf ${command}: ${err.message}\n${usage}\n`);
      return 2;
    }
    process.stderr.write(`vikdf ${command}: ${(err as Error).message}\n`);
    return 1;
  }
}

main().then((code) => {
  process.exitCode = code;
});
