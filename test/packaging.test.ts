// The published packages as a user gets them (issue 14): each one is packed with `pnpm pack` (workspace:* becomes
// a real version), the tarballs are installed into a temporary project outside the workspace, and that project
// imports them from ESM, requires them from CommonJS (answering one greedy request on the tiny fixture bundle) and
// type-checks a file using the public types under moduleResolution node16 and bundler.
//
// Why pnpm and not npm: the test must run offline. npm's cache is empty on a fresh machine, while pnpm's store
// already holds every third-party package the workspace installed. The temporary project is its own workspace root
// (its own pnpm-workspace.yaml, no links to this workspace: the @vikdf packages come from the tarballs), installed
// with --offline from this workspace's store. Offline resolution would pick the newest version in pnpm's metadata
// cache, which may not be in the store, so every third-party package is pinned (overrides) to the version this
// workspace's pnpm-lock.yaml locked. onnxruntime-node's install script is denied (allowBuilds) and also told to
// skip (ONNXRUNTIME_NODE_INSTALL=skip): its CPU binaries ship in its tarball.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tinyBundle = path.join(repoRoot, 'test/fixtures/tiny-random');
const require = (await import('node:module')).createRequire(import.meta.url);
const tsc = require.resolve('typescript/bin/tsc', { paths: [repoRoot] });

/** The published packages: directory under packages/ and the file each must have built. */
const PACKAGES = [
  { dir: 'core', name: '@vikdf/core', built: 'dist/index.cjs' },
  { dir: 'adapter-kit', name: '@vikdf/adapter-kit', built: 'dist/index.cjs' },
  { dir: 'discord', name: '@vikdf/discord', built: 'dist/index.cjs' },
  { dir: 'slack', name: '@vikdf/slack', built: 'dist/index.cjs' },
  { dir: 'websocket', name: '@vikdf/websocket', built: 'dist/index.cjs' },
  { dir: 'model-mini', name: '@vikdf/model-mini', built: 'index.cjs' },
];

interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command with a hard time limit; a failure says which command, its exit and its output. */
function run(file: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<RunResult> {
  const timeout = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { cwd: options.cwd, env: options.env ?? process.env, timeout, killSignal: 'SIGKILL', maxBuffer: 32 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          const why = error.killed ? `killed after ${timeout} ms` : `exit ${String(error.code)}`;
          reject(new Error(`${path.basename(file)} ${args.join(' ')} (in ${options.cwd}): ${why}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`));
        } else resolve({ stdout, stderr });
      },
    );
  });
}

/** name -> version for every third-party package of the workspace lockfile locked at exactly one version. */
function lockedVersions(): Record<string, string> {
  const lock = readFileSync(path.join(repoRoot, 'pnpm-lock.yaml'), 'utf8');
  // The last `packages:` section is the workspace's (a first YAML document may describe pnpm's own config deps).
  const section = lock.slice(lock.lastIndexOf('\npackages:\n')).split('\nsnapshots:\n')[0]!;
  const versions = new Map<string, Set<string>>();
  for (const m of section.matchAll(/^ {2}'?(@?[^@\s']+)@([^:'(\s]+)'?:/gm)) {
    const [, name, version] = m as unknown as [string, string, string];
    if (name.startsWith('@vikdf/')) continue;
    if (!versions.has(name)) versions.set(name, new Set());
    versions.get(name)!.add(version);
  }
  const pins: Record<string, string> = {};
  for (const [name, set] of versions) {
    if (set.size === 1) pins[name] = [...set][0]!;
    else {
      // Several majors (undici 6 and 7, ...): pin each major's range to its locked version.
      const byMajor = new Map<string, string[]>();
      for (const v of set) {
        const [major, minor] = v.split('.');
        const key = major === '0' ? `~0.${minor}` : `^${major}`;
        byMajor.set(key, [...(byMajor.get(key) ?? []), v]);
      }
      for (const [range, list] of byMajor) if (list.length === 1) pins[`${name}@${range}`] = list[0]!;
    }
  }
  return pins;
}

let tmp = '';
/** package name -> its packed tarball. */
const tarballOf: Record<string, string> = {};
let project = '';
const pnpm = process.platform === 'win32' ? 'pnpm.cmd' : 'pnpm';
const installEnv = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip', npm_config_onnxruntime_node_install: 'skip' };

describe('packed packages in a project outside the workspace (issue 14)', () => {
  beforeAll(async () => {
    const missing = PACKAGES.filter((p) => !existsSync(path.join(repoRoot, 'packages', p.dir, p.built)));
    if (missing.length > 0) {
      throw new Error(`not built: ${missing.map((p) => `packages/${p.dir}/${p.built}`).join(', ')}; run pnpm -r build first`);
    }
    tmp = mkdtempSync(path.join(os.tmpdir(), 'vikdf-packaging-'));
    const tarballs = path.join(tmp, 'tarballs');
    project = path.join(tmp, 'consumer');
    const files: Record<string, string> = {};
    for (const p of PACKAGES) {
      const { stdout } = await run(pnpm, ['pack', '--pack-destination', tarballs, '--json'], { cwd: path.join(repoRoot, 'packages', p.dir) });
      const parsed = JSON.parse(stdout) as { filename: string } | { filename: string }[];
      const filename = Array.isArray(parsed) ? parsed[0]!.filename : parsed.filename;
      tarballOf[p.name] = path.isAbsolute(filename) ? filename : path.join(tarballs, filename);
      files[p.name] = `file:${tarballOf[p.name]}`;
    }
    const store = (await run(pnpm, ['store', 'path'], { cwd: repoRoot })).stdout.trim();
    const typesNode = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> })
      .devDependencies['@types/node']!;
    const { mkdirSync } = await import('node:fs');
    mkdirSync(project, { recursive: true });
    writeFileSync(
      path.join(project, 'package.json'),
      JSON.stringify({ name: 'vikdf-consumer', version: '0.0.0', private: true, dependencies: { ...files, '@types/node': typesNode } }, null, 2),
    );
    const overrides = { ...lockedVersions(), ...files };
    const yaml = [
      '# A project of its own, outside the VIKDF workspace.',
      'allowBuilds:',
      '  esbuild: false',
      '  onnxruntime-node: false',
      '  protobufjs: false',
      'overrides:',
      ...Object.entries(overrides).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`),
      '',
    ].join('\n');
    writeFileSync(path.join(project, 'pnpm-workspace.yaml'), yaml);
    await run(pnpm, ['install', '--offline', '--store-dir', store], { cwd: project, env: installEnv, timeoutMs: 120_000 });
    for (const p of PACKAGES) {
      expect(existsSync(path.join(project, 'node_modules', p.name, 'package.json')), `${p.name} installed`).toBe(true);
    }
  }, 180_000);

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('installs real copies, not links into the workspace', () => {
    for (const p of PACKAGES) {
      const real = require('node:fs').realpathSync(path.join(project, 'node_modules', p.name)) as string;
      expect(real.startsWith(repoRoot + path.sep), `${p.name} resolves to ${real}`).toBe(false);
    }
    const packed = JSON.parse(readFileSync(path.join(project, 'node_modules/@vikdf/discord/package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    expect(packed.dependencies['@vikdf/core']).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('imports every package from an ES module', async () => {
    writeFileSync(
      path.join(project, 'esm.mjs'),
      `import { Engine, VikdfError } from '@vikdf/core';
import { ChatBot, splitMessage } from '@vikdf/adapter-kit';
import { DiscordBot } from '@vikdf/discord';
import { SlackBot } from '@vikdf/slack';
import { VikdfServer, VikdfClient } from '@vikdf/websocket';
import modelMini, { bundlePath } from '@vikdf/model-mini';
import { existsSync } from 'node:fs';
import path from 'node:path';
const checks = {
  'Engine.load': typeof Engine.load === 'function',
  VikdfError: typeof VikdfError === 'function',
  ChatBot: typeof ChatBot === 'function',
  splitMessage: splitMessage('a'.repeat(30), 20).length === 2,
  DiscordBot: typeof DiscordBot === 'function',
  SlackBot: typeof SlackBot === 'function',
  VikdfServer: typeof VikdfServer === 'function',
  VikdfClient: typeof VikdfClient === 'function',
  'model-mini bundle': existsSync(path.join(bundlePath, 'manifest.json')) && modelMini.bundlePath === bundlePath,
};
const failed = Object.entries(checks).filter(([, ok]) => !ok).map(([k]) => k);
if (failed.length) { console.error('failed: ' + failed.join(', ')); process.exit(1); }
console.log('esm ok');
`,
    );
    const { stdout } = await run(process.execPath, ['esm.mjs'], { cwd: project });
    expect(stdout).toContain('esm ok');
  }, 60_000);

  it('requires every package from CommonJS and answers a greedy request', async () => {
    writeFileSync(
      path.join(project, 'cjs.cjs'),
      `const { Engine } = require('@vikdf/core');
const { ChatBot, splitMessage } = require('@vikdf/adapter-kit');
const { DiscordBot } = require('@vikdf/discord');
const { SlackBot } = require('@vikdf/slack');
const { VikdfServer, VikdfClient, createServer } = require('@vikdf/websocket');
const modelMini = require('@vikdf/model-mini');
const { existsSync } = require('node:fs');
const path = require('node:path');
const checks = {
  'Engine.load': typeof Engine.load === 'function',
  ChatBot: typeof ChatBot === 'function',
  splitMessage: splitMessage('a'.repeat(30), 20).length === 2,
  DiscordBot: typeof DiscordBot === 'function',
  SlackBot: typeof SlackBot === 'function',
  VikdfServer: typeof VikdfServer === 'function' && typeof createServer === 'function',
  VikdfClient: typeof VikdfClient === 'function',
  'model-mini bundle': existsSync(path.join(modelMini.bundlePath, 'manifest.json')),
};
const failed = Object.entries(checks).filter(([, ok]) => !ok).map(([k]) => k);
if (failed.length) { console.error('failed: ' + failed.join(', ')); process.exit(1); }
(async () => {
  const engine = await Engine.load(process.argv[2], { devices: ['cpu'] });
  const reply = engine.generate({ context: ['hello there'], options: { maxNewTokens: 4, numBeams: 1, doSample: false, noRepeatNgramSize: 0 } });
  const result = await reply.result;
  await engine.close();
  console.log(JSON.stringify({ tokens: result.tokenIds.length, finishReason: result.finishReason }));
})().catch((error) => { console.error(error); process.exit(1); });
`,
    );
    const { stdout } = await run(process.execPath, ['cjs.cjs', tinyBundle], { cwd: project });
    const last = JSON.parse(stdout.trim().split('\n').at(-1)!) as { tokens: number; finishReason: string };
    expect(last.tokens).toBeGreaterThan(0);
    expect(last.tokens).toBeLessThanOrEqual(4);
  }, 60_000);

  it("runs the installed vikdf bin (the CLI stays ESM)", async () => {
    const bin = path.join(project, 'node_modules/.bin', process.platform === 'win32' ? 'vikdf.cmd' : 'vikdf');
    const { stdout } = await run(bin, ['inspect', tinyBundle, '--device', 'cpu'], { cwd: project });
    expect(JSON.parse(stdout.slice(stdout.indexOf('{'))) as { name: string }).toMatchObject({ name: 'tiny-random' });
  }, 60_000);

  it('serves the chat page with the installed `vikdf serve` (core finds the installed @vikdf/websocket), and stops on SIGTERM', async () => {
    const bin = path.join(project, 'node_modules/.bin', process.platform === 'win32' ? 'vikdf.cmd' : 'vikdf');
    // Without the NODE_PATH that `pnpm exec` sets (it points into this workspace's store): only the project's own
    // node_modules may supply @vikdf/websocket.
    const child = spawn(bin, ['serve', tinyBundle, '--port', '0', '--device', 'cpu'], {
      cwd: project,
      env: { ...process.env, NODE_PATH: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no URL within 30 s\n--- stdout\n${stdout}\n--- stderr\n${stderr}`)), 30_000);
        child.stdout.on('data', (d) => {
          stdout += d;
          const m = /VIKDF chat: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stdout);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        void exited.then((code) => reject(new Error(`vikdf serve exited ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`)));
      });
      expect(stdout).toMatch(/model: tiny-random on cpu/);
      const health = await fetch(new URL('healthz', url));
      expect(health.status).toBe(200);
      const page = await fetch(url);
      expect(await page.text()).toMatch(/<html/i);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(stdout).toMatch(/SIGTERM: stopping[\s\S]*stopped/);
  }, 60_000);

  it('passes publint (no errors or warnings) in every packed tarball', async () => {
    const { publint } = await import('publint');
    const { formatMessage } = await import('publint/utils');
    const problems: string[] = [];
    for (const p of PACKAGES) {
      const buffer = readFileSync(tarballOf[p.name]!);
      const tarball = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer;
      // 'warning': suggestions (such as declaring "sideEffects") are not failures.
      const { messages, pkg } = await publint({ pack: { tarball }, level: 'warning' });
      for (const m of messages) problems.push(`${p.name}: ${m.type}: ${formatMessage(m, pkg) ?? m.code}`);
    }
    expect(problems).toEqual([]);
  }, 60_000);

  for (const resolution of ['node16', 'bundler'] as const) {
    it(`type-checks a TypeScript file using the public types (moduleResolution ${resolution})`, async () => {
      const dir = path.join(project, `ts-${resolution}`);
      const { mkdirSync } = await import('node:fs');
      mkdirSync(dir, { recursive: true });
      const source = `import { Engine, type GenerationResult } from '@vikdf/core';
import { splitMessage, type InboundMessage } from '@vikdf/adapter-kit';
import { DiscordBot, type DiscordBotOptions } from '@vikdf/discord';
import { SlackBot, type SlackBotOptions } from '@vikdf/slack';
import { createServer, VikdfClient } from '@vikdf/websocket';
import { bundlePath } from '@vikdf/model-mini';

export async function main(): Promise<number> {
  const engine: Engine = await Engine.load(bundlePath);
  const result: GenerationResult = await engine.generate({ context: ['hi'] }).result;
  const parts: string[] = splitMessage(result.text, 100);
  const discord: DiscordBotOptions['engine'] = engine;
  const slack: SlackBotOptions | undefined = undefined;
  const message: InboundMessage | undefined = undefined;
  void [DiscordBot, SlackBot, createServer, VikdfClient, discord, slack, message];
  // @ts-expect-error a number is no bundle path
  void bundlePath.toFixed();
  return parts.length;
}
`;
      // node16: the same file as an ES module (.mts) and as CommonJS (.cts), so both the import and the require
      // conditions' types are checked; bundler: one .ts file.
      const files = resolution === 'node16' ? ['esm.mts', 'cjs.cts'] : ['main.ts'];
      for (const f of files) writeFileSync(path.join(dir, f), source);
      writeFileSync(
        path.join(dir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            target: 'ES2022',
            // DOM: onnxruntime-common's own .d.ts (reached through @vikdf/core's types) name ImageData, WebGLTexture...
            // skipLibCheck stays false so that our packages' .d.ts/.d.cts are checked too.
            lib: ['ES2023', 'DOM'],
            module: resolution === 'node16' ? 'node16' : 'esnext',
            moduleResolution: resolution,
            types: ['node'],
            strict: true,
            noEmit: true,
            skipLibCheck: false,
          },
          files,
        }),
      );
      await run(process.execPath, [tsc, '--noEmit', '-p', 'tsconfig.json'], { cwd: dir });
    }, 60_000);
  }
});
