// Gathers the benchmark outputs of one bench/run.sh into bench/results/<date>-<machine>.json and prints a
// table with the ratios against the targets of docs/benchmarks.md.
//
//   node bench/report.mjs --scratch bench/results/scratch [--machine NAME] [--command TEXT]
//   node bench/report.mjs --print bench/results/<file>.json      # the table of a results file again
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { BENCH, parseArgs, round } from './lib.mjs';

const args = parseArgs(process.argv.slice(2), { scratch: '', machine: '', command: 'bash bench/run.sh', print: '' });

const TARGETS = {
  decodeVsPytorch: 1.5, // ours / HF PyTorch generate, decode tokens/s at batch 1
  decodeVsTransformersjs: 1.0, // ours / transformers.js, decode tokens/s at batch 1
  aggregate16VsBatch1: 4.0, // ours, aggregate tokens/s with 16 conversations / decode tokens/s at batch 1
};

function read(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function machineInfo() {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  const osRelease = fs.existsSync('/etc/os-release') ? fs.readFileSync('/etc/os-release', 'utf8') : '';
  const field = (text, key) => text.match(new RegExp(`^${key}\\s*[:=]\\s*"?([^"\\n]*)"?`, 'm'))?.[1]?.trim();
  const flags = field(cpuinfo, 'flags') ?? '';
  const req = createRequire(fs.realpathSync(path.join(BENCH, 'node_modules', '@vikdf', 'core', 'package.json')));
  const pkgVersion = (name, from = req) => {
    let dir = path.dirname(from.resolve(name));
    while (!fs.existsSync(path.join(dir, 'package.json')) || read(path.join(dir, 'package.json')).name !== name) dir = path.dirname(dir);
    return read(path.join(dir, 'package.json')).version;
  };
  return {
    cpu: field(cpuinfo, 'model name'),
    cpuFamilyModel: `${field(cpuinfo, 'cpu family')}/${field(cpuinfo, 'model')}`,
    simd: ['avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'fma'].filter((f) => flags.split(' ').includes(f)),
    cores: os.cpus().length,
    memoryGiB: round(Number(field(meminfo, 'MemTotal').split(' ')[0]) / 1024 / 1024, 1),
    os: field(osRelease, 'PRETTY_NAME') ?? os.type(),
    kernel: os.release(),
    node: process.version,
    onnxruntimeNode: pkgVersion('onnxruntime-node'),
  };
}

/** The largest share of the CPUs other processes used during one timed repeat, and the repeats run again. */
function disturbance(r) {
  const shares = [...r.batch1.repeats.map((x) => x.otherCpu), ...Object.values(r.aggregate).flatMap((a) => a.otherCpu ?? [])].filter((x) => x !== undefined);
  const retries = r.batch1.repeats.reduce((s, x) => s + (x.retries ?? 0), 0) + Object.values(r.aggregate).reduce((s, a) => s + (a.retries ?? 0), 0);
  return shares.length ? { maxOtherCpuPct: round(100 * Math.max(...shares), 1), retries } : undefined;
}

/** Share of the CPUs used by other processes while one benchmark ran (from run.sh's .time file). */
function otherCpu(timeFile) {
  if (!fs.existsSync(timeFile)) return undefined;
  const [first, second] = fs.readFileSync(timeFile, 'utf8').trim().split('\n');
  const [elapsed, user, sys] = first.split(' ').map(Number);
  const [b0, , b1, , clk, ncpu] = second.split(' ').map(Number);
  const busy = (b1 - b0) / clk;
  return { wallS: elapsed, cpuS: round(user + sys), otherCpuPct: round(Math.max(0, (100 * (busy - user - sys)) / (elapsed * ncpu)), 1) };
}

function ratio(a, b) {
  return a && b ? round(a / b, 2) : null;
}

function summarize(models) {
  const out = {};
  for (const [name, runs] of Object.entries(models)) {
    const ours = runs.engine;
    if (!ours) continue;
    out[name] = {
      decodeVsPytorch: ratio(ours.batch1.decodeTokPerS, runs.pytorch?.batch1.decodeTokPerS),
      decodeVsTransformersjs: ratio(ours.batch1.decodeTokPerS, runs.transformersjs?.batch1.decodeTokPerS),
      aggregate16VsBatch1: ratio(ours.aggregate['16']?.tokPerS, ours.batch1.decodeTokPerS),
      aggregate16VsAggregate1: ratio(ours.aggregate['16']?.tokPerS, ours.aggregate['1']?.tokPerS),
      ttftVsPytorch: ratio(runs.pytorch?.batch1.ttftMs, ours.batch1.ttftMs),
    };
  }
  return out;
}

function table(results) {
  const lines = [];
  const fmt = (x, d = 1) => (x === undefined || x === null ? '—' : typeof x === 'number' ? x.toFixed(d) : String(x));
  for (const [name, runs] of Object.entries(results.models)) {
    lines.push(`\n### ${name}\n`);
    lines.push('| runtime | TTFT ms (batch 1) | decode tok/s (batch 1) | aggregate tok/s, 1 conv. | 4 conv. | 16 conv. | peak RSS MiB | other CPU load: whole run / worst timed repeat (repeats redone) |');
    lines.push('|---|---:|---:|---:|---:|---:|---:|---:|');
    const labels = { engine: '@vikdf/core', pytorch: 'PyTorch, HF generate', transformersjs: 'transformers.js' };
    for (const [key, label] of Object.entries(labels)) {
      const r = runs[key];
      if (!r) continue;
      const a = r.aggregate;
      lines.push(`| ${label} | ${fmt(r.batch1.ttftMs)} | ${fmt(r.batch1.decodeTokPerS)} | ${fmt(a['1']?.tokPerS)} | ${fmt(a['4']?.tokPerS)} | ${fmt(a['16']?.tokPerS)} | ${fmt(r.peakRssMiB, 0)} | ${r.run ? `${fmt(r.run.otherCpuPct)}%` : '—'} / ${r.disturbance ? `${fmt(r.disturbance.maxOtherCpuPct)}% (${r.disturbance.retries})` : '—'} |`);
    }
    const s = results.ratios[name];
    if (s) {
      const mark = (v, t) => (v === null ? '—' : `${v.toFixed(2)}x ${v >= t ? '(met' : '(MISSED'}, target ${t}x)`);
      lines.push('');
      lines.push(`- decode tok/s at batch 1, ours / PyTorch: ${mark(s.decodeVsPytorch, TARGETS.decodeVsPytorch)}`);
      lines.push(`- decode tok/s at batch 1, ours / transformers.js: ${mark(s.decodeVsTransformersjs, TARGETS.decodeVsTransformersjs)}`);
      lines.push(`- ours, aggregate tok/s with 16 conversations / decode tok/s at batch 1: ${mark(s.aggregate16VsBatch1, TARGETS.aggregate16VsBatch1)}; / aggregate with 1 conversation: ${fmt(s.aggregate16VsAggregate1, 2)}x`);
      lines.push(`- TTFT, PyTorch / ours: ${fmt(s.ttftVsPytorch, 2)}x`);
    }
  }
  for (const [name, d] of Object.entries(results.diagnostics ?? {})) {
    if (d.decodeTokPerSBatch1) {
      const modes = Object.entries(d.decodeTokPerSBatch1).map(([m, v]) => `${m} ${fmt(v.median)}`).join(', ');
      lines.push(`\n${name}: our decode tok/s at batch 1 by ORT spinning setting: ${modes} (other CPU load ${fmt(d.run?.otherCpuPct)}%)`);
      if (d.firstTokenMsBatch1) lines.push(`${name}: time to the first token (ms): ${Object.entries(d.firstTokenMsBatch1).map(([m, v]) => `${m} ${fmt(v.median)}`).join(', ')}`);
    }
    if (d.results) {
      for (const r of Object.values(d.results)) {
        const ops = Object.entries(r.byOpMs).slice(0, 5).map(([k, v]) => `${k} ${fmt(v)}`).join(', ');
        const w = r.withoutProfiler;
        if (w) lines.push(`\n${name}: one decoder call, batch ${r.batch}, past ${r.pastLength}: session.run ${fmt(w.allOutputsMs)} ms; asking for logits only ${fmt(w.logitsOnlyMs)} ms; with pre-allocated outputs ${fmt(w.preallocatedOutputsMs)} ms`);
        lines.push(`${name}: profiled, batch ${r.batch}: session.run ${fmt(r.wallMs)} ms = ORT model_run ${fmt(r.modelRunMs)} + binding ${fmt(r.bindingMs)}; kernels: ${ops} ms`);
      }
    }
  }
  return lines.join('\n');
}

if (args.print) {
  process.stdout.write(table(read(args.print)) + '\n');
  process.exit(0);
}

const scratch = path.resolve(args.scratch);
const models = {};
for (const file of fs.readdirSync(scratch).filter((f) => f.endsWith('.json')).sort()) {
  const [model, runtime] = file.replace(/\.json$/, '').split('.');
  const data = read(path.join(scratch, file));
  data.run = otherCpu(path.join(scratch, file.replace(/\.json$/, '.time')));
  data.disturbance = disturbance(data);
  (models[model] ??= {})[runtime] = data;
}
const diagnostics = {};
const diagDir = path.join(scratch, 'diag');
if (fs.existsSync(diagDir)) {
  for (const file of fs.readdirSync(diagDir).filter((f) => f.endsWith('.json')).sort()) {
    diagnostics[file.replace(/\.json$/, '')] = { ...read(path.join(diagDir, file)), run: otherCpu(path.join(diagDir, file.replace(/\.json$/, '.time'))) };
  }
}
const machine = machineInfo();
const pytorch = Object.values(models).find((m) => m.pytorch)?.pytorch;
const tjs = Object.values(models).find((m) => m.transformersjs)?.transformersjs;
const date = new Date();
const slug = args.machine || `${machine.cpu.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')}-${machine.cores}c`;
const models100 = fs.existsSync(path.join(BENCH, '.models', 'models.json')) ? read(path.join(BENCH, '.models', 'models.json')) : {};
const results = {
  date: date.toISOString(),
  command: args.command,
  machine: { name: slug, ...machine, torch: pytorch?.torch, transformers: pytorch?.transformers, transformersjs: tjs?.version },
  settings: { greedy: true, newTokens: models[Object.keys(models)[0]]?.engine?.newTokens, threads: models[Object.keys(models)[0]]?.engine?.intraOpNumThreads },
  targets: TARGETS,
  modelInfo: models100,
  models,
  ratios: summarize(models),
  diagnostics,
};
fs.mkdirSync(path.join(BENCH, 'results'), { recursive: true });
const out = path.join(BENCH, 'results', `${date.toISOString().slice(0, 10)}-${slug}.json`);
fs.writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
process.stdout.write(`${table(results)}\n\nwrote ${path.relative(process.cwd(), out)}\n`);
