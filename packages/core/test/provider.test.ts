// Provider probing is silent unless asked: on a Linux machine without a Vulkan loader, WebGPU is skipped without
// calling ONNX Runtime (whose Dawn backend would print "Couldn't load Vulkan" and a native stack on stderr), the
// reason names the missing loader, and VIKDF_DEBUG=1 prints the probe's details. Loads run in a child process
// (the built dist, as a user's program), so that its stderr, native writes included, can be captured.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinyBundle } from '@vikdf/test-support';
import { VULKAN_LOADER, describeProvider, findVulkanLoader } from '../src/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist', 'index.js');
const run = promisify(execFile);

/** Loads the tiny fixture with the default devices in a child node; its provider report and stderr. */
async function loadInChild(env: NodeJS.ProcessEnv): Promise<{ provider: { device: string; skipped: { device: string; reason: string }[] }; stderr: string }> {
  const script = `const { Engine } = await import(${JSON.stringify(pathToFileURL(dist).href)});
const engine = await Engine.load(${JSON.stringify(tinyBundle)});
process.stdout.write(JSON.stringify(engine.provider));
await engine.close();`;
  const { stdout, stderr } = await run(process.execPath, ['--input-type=module', '-e', script], { env, timeout: 60_000 });
  return { provider: JSON.parse(stdout), stderr };
}

// Without VIKDF_DEBUG from the environment the test runs in.
const { VIKDF_DEBUG: _ignored, ...quietEnv } = process.env;
const noLoaderHere = process.platform === 'linux' && findVulkanLoader().found === undefined;

describe('findVulkanLoader', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'vikdf-vulkan-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('finds libvulkan.so.1 in an LD_LIBRARY_PATH directory, and lists where it looked when there is none', async () => {
    const empty = path.join(dir, 'empty');
    const missing = findVulkanLoader({ env: { LD_LIBRARY_PATH: `${dir}:relative/ignored` }, dirs: [empty] });
    expect(missing.found).toBeUndefined();
    expect(missing.searched).toEqual([dir, empty]);
    await writeFile(path.join(dir, VULKAN_LOADER), '');
    expect(findVulkanLoader({ env: { LD_LIBRARY_PATH: dir }, dirs: [empty] })).toEqual({ found: path.join(dir, VULKAN_LOADER), searched: [dir, empty] });
    // The default directories include the standard ones and /etc/ld.so.conf.d's.
    expect(findVulkanLoader({ env: {} }).searched).toEqual(expect.arrayContaining(['/usr/lib', '/usr/lib/x86_64-linux-gnu']));
  });
});

describe('provider probing (built dist, child process)', () => {
  beforeAll(() => {
    if (!existsSync(dist)) throw new Error(`${dist} is missing: build first (pnpm --filter @vikdf/core build)`);
  });

  // Needs a Linux machine without a Vulkan loader, the case the check is about; elsewhere ONNX Runtime is
  // really asked and may print what it prints.
  it.runIf(noLoaderHere)('a default load writes nothing about Vulkan to stderr, and the skipped reason names the missing loader', async () => {
    const { provider, stderr } = await loadInChild(quietEnv);
    expect(stderr).not.toMatch(/vulkan/i);
    expect(stderr).toBe('');
    expect(provider.device).toBe('cpu');
    const webgpu = provider.skipped.find((s) => s.device === 'webgpu');
    expect(webgpu?.reason).toMatch(/^no Vulkan loader \(libvulkan\.so\.1\)/);
    expect(describeProvider('tiny-random', provider as never)).toMatch(
      /^tiny-random on cpu \(no GPU: .*webgpu: no Vulkan loader \(libvulkan\.so\.1\) in the library directories\)$/,
    );
  });

  it.runIf(noLoaderHere)('VIKDF_DEBUG=1 prints the probe: where the loader was looked for, and what runs', async () => {
    const { provider, stderr } = await loadInChild({ ...quietEnv, VIKDF_DEBUG: '1' });
    expect(provider.device).toBe('cpu');
    expect(stderr).toMatch(/\[vikdf debug\] webgpu: skipped without calling ONNX Runtime, libvulkan\.so\.1 is in none of: .*\/usr\/lib/);
    expect(stderr).toMatch(/\[vikdf debug\] cpu: runs the bundle/);
    expect(stderr).not.toMatch(/Couldn't load Vulkan/);
  });
});

describe('describeProvider', () => {
  it('is one line: the device alone, or the reasons up to their first ": " when providers were skipped', () => {
    expect(describeProvider('m', { device: 'cpu', skipped: [] })).toBe('m on cpu');
    const line = describeProvider('m', {
      device: 'cpu',
      skipped: [
        { device: 'cuda', reason: 'CUDA provider libraries are not installed: how to get them\nmore' },
        { device: 'webgpu', reason: 'no adapter' },
      ],
    });
    expect(line).toBe('m on cpu (no GPU: cuda: CUDA provider libraries are not installed; webgpu: no adapter)');
    expect(describeProvider('m', { device: 'webgpu', skipped: [{ device: 'cuda', reason: 'x' }] })).toBe('m on webgpu (skipped: cuda: x)');
  });
});
