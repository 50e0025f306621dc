// Small helpers shared by the Node benchmarks of bench/.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.dirname(BENCH);

/** `--key value` and `--flag` arguments. */
export function parseArgs(argv, defaults) {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in defaults)) throw new Error(`unknown option ${a}`);
    if (typeof defaults[key] === 'boolean') out[key] = true;
    else {
      const v = argv[++i];
      out[key] = typeof defaults[key] === 'number' ? Number(v) : v;
    }
  }
  return out;
}

export function contexts() {
  return JSON.parse(fs.readFileSync(path.join(BENCH, 'contexts.json'), 'utf8')).contexts;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function round(x, digits = 2) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Peak resident set size of this process so far, in MiB. */
export function peakRssMiB() {
  return round(process.resourceUsage().maxRSS / 1024, 1);
}

export function log(tag, msg) {
  process.stderr.write(`[${tag} ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export function writeJson(file, data) {
  const text = JSON.stringify(data, null, 2) + '\n';
  if (file) fs.writeFileSync(file, text);
  else process.stdout.write(text);
}

/** Busy and total CPU time of the whole machine (jiffies of /proc/stat) and this process's own CPU time. */
export function cpuSample() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const busy = line[0] + line[1] + line[2] + line[5] + line[6] + line[7];
  return { t: performance.now(), busy, total: busy + line[3] + line[4], own: process.cpuUsage() };
}

const USER_HZ = 100; // the unit of /proc/stat on Linux
const CPUS = os.cpus().length;

/** Share of all CPUs that OTHER processes used between two samples (0..1). */
export function otherCpuShare(a, b) {
  const wallS = (b.t - a.t) / 1000;
  const busyS = (b.busy - a.busy) / USER_HZ;
  const ownS = (b.own.user - a.own.user + b.own.system - a.own.system) / 1e6;
  return wallS > 0 ? Math.max(0, (busyS - ownS) / (wallS * CPUS)) : 0;
}

/**
 * Runs one timed repeat; when other processes used more than 10% of the CPUs meanwhile (more allowed for short
 * repeats, as /proc/stat counts in 10 ms ticks), waits a little and runs it again, up to `tries` times. The
 * result carries `otherCpu` (the share other processes used) and `retries`.
 */
export async function guarded(tag, what, fn, tries = 6) {
  for (let i = 0; ; i++) {
    const a = cpuSample();
    const r = await fn();
    const b = cpuSample();
    const other = otherCpuShare(a, b);
    const allowed = 0.1 + 0.02 / Math.max((b.t - a.t) / 1000, 0.01);
    if (other <= allowed || i >= tries - 1) return { ...r, otherCpu: round(other, 3), retries: i };
    log(tag, `${what}: other processes used ${round(other * 100, 1)}% of the CPUs, again in 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
}
