#!/usr/bin/env node
/**
 * `vikdf`: chat with, generate from and inspect VIKDF bundles.
 *
 *   vikdf chat <bundle> [options]                 interactive streaming chat (/reset, /quit)
 *   vikdf generate <bundle> --context TEXT ...    one reply to a context (each --context is a turn)
 *   vikdf inspect <bundle>                        manifest, sizes, execution providers
 *
 * Options: --device cuda|webgpu|cpu (repeatable, in order), --variant fp16|int8, --precision fast|exact,
 * --max-new-tokens N, --beams N, --greedy, --sample, --temperature T, --top-k K, --top-p P, --min-p P, --seed S,
 * --repetition-penalty R, --stop TEXT, --system TEXT, --json.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';
import { verifyBundle } from './bundle.js';
import { Engine } from './engine.js';
import type { GenerationOptions } from './generation/options.js';
import type { Device, Precision } from './runtime.js';

const USAGE = `usage:
  vikdf chat <bundle> [options]
  vikdf generate <bundle> --context TEXT [--context TEXT ...] [options]
  vikdf inspect <bundle>
options: --device cuda|webgpu|cpu  --variant NAME  --precision fast|exact  --max-new-tokens N  --beams N
         --greedy  --sample  --temperature T  --top-k K  --top-p P  --min-p P  --seed S
         --repetition-penalty R  --stop TEXT  --system TEXT  --json`;

const OPTIONS = {
  context: { type: 'string', multiple: true },
  device: { type: 'string', multiple: true },
  variant: { type: 'string' },
  precision: { type: 'string' },
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
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

function number(values: Values, key: keyof Values): number | undefined {
  const raw = values[key];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`--${key} must be a number, got "${String(raw)}"`);
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

async function load(bundle: string, values: Values): Promise<Engine> {
  const devices = values.device as Device[] | undefined;
  const engine = await Engine.load(bundle, {
    ...(devices ? { devices } : {}),
    ...(values.variant ? { variant: values.variant } : {}),
    ...(values.precision ? { precision: values.precision as Precision } : {}),
  });
  const { device, skipped } = engine.provider;
  const notes = skipped.map((s) => `${s.device} skipped: ${s.reason}`);
  process.stderr.write(`[vikdf] ${engine.manifest.name} on ${device}${notes.length ? `\n[vikdf] ${notes.join('\n[vikdf] ')}` : ''}\n`);
  return engine;
}

async function generate(bundle: string, values: Values): Promise<void> {
  if (!values.context?.length) throw new Error('generate needs at least one --context TEXT');
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

async function chat(bundle: string, values: Values): Promise<void> {
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

async function inspect(bundle: string, values: Values): Promise<void> {
  const manifest = await verifyBundle(bundle);
  let bytes = 0;
  for (const file of Object.keys(manifest.files)) bytes += (await stat(path.join(bundle, file))).size;
  const engine = await load(bundle, values);
  const report = {
    name: manifest.name,
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
    process.stderr.write(`vikdf: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const [command, bundle] = parsed.positionals;
  if (parsed.values.help || !command) {
    process.stdout.write(`${USAGE}\n`);
    return command || parsed.values.help ? 0 : 2;
  }
  if (!bundle) {
    process.stderr.write(`vikdf ${command}: missing <bundle>\n${USAGE}\n`);
    return 2;
  }
  const commands: Record<string, (b: string, v: Values) => Promise<void>> = { chat, generate, inspect };
  const run = commands[command];
  if (!run) {
    process.stderr.write(`vikdf: unknown command "${command}"\n${USAGE}\n`);
    return 2;
  }
  try {
    await run(bundle, parsed.values);
    return 0;
  } catch (err) {
    process.stderr.write(`vikdf ${command}: ${(err as Error).message}\n`);
    return 1;
  }
}

main().then((code) => {
  process.exitCode = code;
});
