/**
 * The engine: loads a bundle and answers dialogue contexts, many at once.
 *
 * Requests wait in a queue; up to `concurrency` of them decode together. Each loop turn admits new requests
 * (knowledge encoding and prefill, batched), then runs ONE decoder call for every active row (continuous
 * batching: rows join and leave between steps), then hands each row's logits to its request's decoding
 * strategy. Requests of one conversation key are answered in order.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EventEmitter } from 'eventemitter3';
import { TOKENIZER_FILES, verifyBundle, readManifest, type BundleManifest } from './bundle.js';
import { StreamDecoder, trimReplyStart } from './detokenize.js';
import { VikdfError } from './errors.js';
import { BeamSearch } from './generation/beam.js';
import { resolveOptions, type GenerationLimits, type GenerationOptions, type ResolvedGenerationOptions } from './generation/options.js';
import { Rng } from './generation/rng.js';
import { TokenSelector } from './generation/sampler.js';
import { StopChecker } from './generation/stopping.js';
import { Generation, type FinishReason, type GenerationResult } from './generation-handle.js';
import { Conversation, type ConversationOptions } from './conversation.js';
import { spliceKnowledge } from './splice.js';
import { KvCache } from './kv-cache.js';
import { PromptFormatter, type DialogueInputs } from './prompt.js';
import { BundleRuntime, type ProviderReport, type RuntimeOptions } from './runtime.js';
import { BundleTokenizer } from './tokenizer.js';

export interface EngineOptions extends RuntimeOptions {
  /** Check every file's sha256 at load (default true). */
  verify?: boolean;
  /** Requests decoding at the same time (default 16). Beam search counts `numBeams` rows per request. */
  concurrency?: number;
  /** Requests allowed to wait (default 1024); more are refused with `queue_full`. */
  maxQueue?: number;
  /** Generation defaults over the manifest's. */
  defaults?: GenerationOptions;
  /** Memory for prefills of identical contexts kept for reuse (default 64 MiB; 0 turns it off). */
  prefixCacheBytes?: number;
  /** Upper bounds callers cannot exceed (e.g. a server's limits). */
  limits?: GenerationLimits;
}

export interface GenerateRequest {
  /** Dialogue turns, oldest first; the last one is the message to answer. */
  context: string[];
  options?: GenerationOptions;
  signal?: AbortSignal;
  /** Requests with the same key are answered one after the other, in submission order. */
  orderKey?: string;
  /** Persona or system text (see PromptFormatter). */
  system?: string;
}

export interface EngineEvents {
  /** A request failed; the others go on. */
  requestError: [error: Error];
}

/** A bundle given as a package that carries one: `{ bundlePath }` or a module exporting it. */
export type BundleSource = string | { bundlePath: string };

interface Task {
  id: number;
  handle: Generation;
  inputs: DialogueInputs;
  options: ResolvedGenerationOptions;
  orderKey: string | undefined;
  /** When generate() was called (timings count from here). */
  queuedAt: number;
  /** When the task left the queue for the batch (its prefill began). */
  admittedAt?: number;
  /** When its first text was handed to the caller. */
  firstTokenAt?: number;
  aborted: boolean;
  failed: boolean;
  // decoding state
  rows: number;
  generated: number[];
  /** Decoding steps taken (beam search has no single generated list until it ends). */
  steps: number;
  selector?: TokenSelector;
  beam?: BeamSearch;
  /** The tokens the beams continue with (fed at the next step). */
  beamTokens: number[];
  decoder: StreamDecoder;
  stop: StopChecker;
  emitted: string;
  text: string;
  finishReason?: FinishReason;
  release: () => void;
}

export class Engine extends EventEmitter<EngineEvents> {
  private readonly queue: Task[] = [];
  private active: Task[] = [];
  private cache: KvCache;
  private nextId = 1;
  private running: Promise<void> | undefined;
  private closing = false;
  private readonly busyKeys = new Set<string>();
  /** Prefills of recent contexts (LRU by insertion order). */
  private readonly prefixCache = new Map<string, { logits: Float32Array; cache: KvCache }>();
  private prefixCacheSize = 0;
  private readonly counters = { prefills: 0, prefixHits: 0, decodeSteps: 0 };

  private constructor(
    readonly dir: string,
    readonly manifest: BundleManifest,
    readonly runtime: BundleRuntime,
    readonly textTokenizer: BundleTokenizer,
    readonly llmTokenizer: BundleTokenizer,
    readonly formatter: PromptFormatter,
    private readonly options: EngineOptions,
  ) {
    super();
    this.cache = KvCache.empty(runtime.kvShape);
  }

  /**
   * Loads a bundle directory (or a package object with `bundlePath`), verifying it unless told not to.
   * Without a source, the default model `@vikdf/model-mini` (an optional dependency) is loaded.
   */
  static async load(source?: BundleSource, options: EngineOptions = {}): Promise<Engine> {
    source ??= await defaultModel();
    const dir = path.resolve(typeof source === 'string' ? (source.startsWith('file:') ? fileURLToPath(source) : source) : source.bundlePath);
    const manifest = options.verify === false ? await readManifest(dir) : await verifyBundle(dir);
    const [textTokenizer, llmTokenizer] = await Promise.all([
      BundleTokenizer.load(path.join(dir, TOKENIZER_FILES.text)),
      BundleTokenizer.load(path.join(dir, TOKENIZER_FILES.llm)),
    ]);
    const runtime = await BundleRuntime.create(dir, manifest, options);
    const formatter = new PromptFormatter(manifest, textTokenizer, llmTokenizer);
    return new Engine(dir, manifest, runtime, textTokenizer, llmTokenizer, formatter, options);
  }

  /** Which execution provider runs, and why the ones before it were skipped. */
  get provider(): ProviderReport {
    return this.runtime.provider;
  }

  /** LLM tokens of a text (without special tokens). */
  countTokens(text: string): number {
    return this.llmTokenizer.countTokens(text, { addSpecialTokens: false });
  }

  /** Work done so far: prompts prefilled, prefills reused from the cache, batched decoder steps. */
  get stats(): { prefills: number; prefixHits: number; decodeSteps: number } {
    return { ...this.counters };
  }

  /** Requests waiting and decoding. */
  get load(): { queued: number; active: number; rows: number } {
    return { queued: this.queue.length, active: this.active.length, rows: this.cache.rows };
  }

  /** A conversation with history, a context window and in-order answers. */
  conversation(options: ConversationOptions = {}): Conversation {
    return new Conversation(this, options);
  }

  generate(request: GenerateRequest): Generation {
    const queuedAt = performance.now(); // before the prompt is formatted and tokenised: that is the request's time too
    let task: Task | undefined;
    const handle = new Generation(() => {
      if (task) task.aborted = true;
      this.kick();
    });
    try {
      if (this.closing) throw new VikdfError('engine_closed', 'the engine is shutting down');
      if (this.queue.length >= (this.options.maxQueue ?? 1024)) {
        throw new VikdfError('queue_full', `the request queue is full (${this.options.maxQueue ?? 1024} waiting)`);
      }
      const options = resolveOptions(this.manifest.generation, { ...this.options.defaults, ...request.options }, this.options.limits);
      const inputs = this.formatter.format(request.context, request.system === undefined ? {} : { system: request.system });
      const eos = this.manifest.tokens.llm_eos_token_id;
      task = {
        id: this.nextId++,
        handle,
        inputs,
        options,
        orderKey: request.orderKey,
        queuedAt,
        aborted: false,
        failed: false,
        rows: options.numBeams,
        generated: [],
        steps: 0,
        beamTokens: [],
        decoder: new StreamDecoder(this.llmTokenizer, { replyStart: true }),
        stop: new StopChecker({ eosTokenId: eos, stopTokenIds: options.stopTokenIds, stopStrings: options.stopStrings }),
        emitted: '',
        text: '',
        release: () => undefined,
      };
      if (request.signal) {
        const signal = request.signal;
        const onAbort = () => handle.abort();
        if (signal.aborted) task.aborted = true;
        else signal.addEventListener('abort', onAbort, { once: true });
        task.release = () => signal.removeEventListener('abort', onAbort);
      }
      this.queue.push(task);
      this.kick();
    } catch (err) {
      handle.fail(err instanceof Error ? err : new Error(String(err)));
    }
    return handle;
  }

  /**
   * Stops taking requests. `finish` (default) lets queued and running requests complete; `cancel` aborts
   * them (their results resolve with finishReason 'aborted'). Then releases the ONNX sessions.
   */
  async close(mode: 'finish' | 'cancel' = 'finish'): Promise<void> {
    this.closing = true;
    if (mode === 'cancel') for (const t of [...this.queue, ...this.active]) t.aborted = true;
    this.kick();
    await this.running;
    await this.runtime.release();
  }

  // -- scheduling -------------------------------------------------------------------------------------
  private kick(): void {
    if (this.running) return;
    this.running = this.loop().finally(() => {
      this.running = undefined;
      if (this.queue.length || this.active.length) this.kick();
    });
  }

  private async loop(): Promise<void> {
    while (this.queue.length || this.active.length) {
      this.dropAborted();
      await this.admit();
      if (this.active.length) await this.step();
      // Let new requests, aborts and I/O in between decoder calls.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  private dropAborted(): void {
    for (const t of this.queue.filter((t) => t.aborted)) {
      this.queue.splice(this.queue.indexOf(t), 1);
      this.complete(t, 'aborted');
    }
    this.retire((t) => (t.aborted ? 'aborted' : undefined));
  }

  /** Takes eligible queued requests while rows are free, and prefills them in one batch. */
  private async admit(): Promise<void> {
    const capacity = this.options.concurrency ?? 16;
    let rows = this.cache.rows;
    const admitted: Task[] = [];
    for (const t of [...this.queue]) {
      if (t.orderKey !== undefined && this.busyKeys.has(t.orderKey)) continue;
      if (rows > 0 && rows + t.rows > capacity) break;
      this.queue.splice(this.queue.indexOf(t), 1);
      if (t.orderKey !== undefined) this.busyKeys.add(t.orderKey);
      t.admittedAt = performance.now();
      admitted.push(t);
      rows += t.rows;
      if (rows >= capacity) break;
    }
    if (!admitted.length) return;
    try {
      const prefilled = await this.prefillCached(admitted.map((t) => t.inputs));
      for (let i = 0; i < admitted.length; i++) {
        const t = admitted[i]!;
        const { logits } = prefilled[i]!;
        let rowsCache = prefilled[i]!.cache;
        if (t.options.numBeams > 1) {
          rowsCache = rowsCache.select(Array.from({ length: t.options.numBeams }, () => 0));
          t.beam = new BeamSearch({
            numBeams: t.options.numBeams,
            noRepeatNgramSize: t.options.noRepeatNgramSize,
            lengthPenalty: t.options.lengthPenalty,
            earlyStopping: t.options.earlyStopping,
            stopRule: t.options.beamStopRule,
            repetitionPenalty: t.options.repetitionPenalty,
            maxNewTokens: t.options.maxNewTokens,
            eosTokenId: this.manifest.tokens.llm_eos_token_id,
          });
        } else {
          t.selector = new TokenSelector(t.options, new Rng(t.options.seed));
        }
        this.active.push(t);
        this.cache = this.cache.concat(rowsCache);
        const rowLogits = Array.from({ length: t.rows }, () => logits.slice()); // strategies change rows in place
        this.consume(t, rowLogits);
      }
    } catch (err) {
      for (const t of admitted) this.failTask(t, err);
      return;
    }
    this.removeFinished();
  }

  /**
   * Prefill with reuse. The knowledge vectors sit near the start of the prompt and depend on the whole
   * context, so a conversation's cache cannot be extended turn by turn (every position after the splice
   * changes when the context does). What is valid is reusing the prefill of an identical context (a retry,
   * or the same opening message in many conversations): kept in a small LRU.
   */
  private async prefillCached(inputs: DialogueInputs[]): Promise<{ logits: Float32Array; cache: KvCache }[]> {
    const keys = inputs.map((x) => `${x.textIds.join(',')}|${x.promptIds.join(',')}|${x.spliceAt}`);
    const out: ({ logits: Float32Array; cache: KvCache } | undefined)[] = keys.map((k) => this.prefixCache.get(k));
    const missing = [...new Set(keys.filter((_, i) => !out[i]))];
    this.counters.prefixHits += out.filter(Boolean).length;
    this.counters.prefills += missing.length;
    if (missing.length) {
      const batch = await this.prefill(missing.map((k) => inputs[keys.indexOf(k)]!));
      missing.forEach((key, j) => {
        const entry = { logits: batch.logits[j]!, cache: batch.cache.select([j]) };
        this.remember(key, entry);
        keys.forEach((k, i) => {
          if (k === key) out[i] = entry;
        });
      });
    }
    for (const k of keys) this.touch(k);
    return out as { logits: Float32Array; cache: KvCache }[];
  }

  private remember(key: string, entry: { logits: Float32Array; cache: KvCache }): void {
    const limit = this.options.prefixCacheBytes ?? 64 * 1024 * 1024;
    const size = (e: { logits: Float32Array; cache: KvCache }) =>
      e.logits.byteLength + e.cache.tensors.reduce((n, t) => n + t.byteLength, 0);
    if (size(entry) > limit) return;
    this.prefixCache.set(key, entry);
    this.prefixCacheSize += size(entry);
    while (this.prefixCacheSize > limit) {
      const oldest = this.prefixCache.keys().next().value!;
      this.prefixCacheSize -= size(this.prefixCache.get(oldest)!);
      this.prefixCache.delete(oldest);
    }
  }

  private touch(key: string): void {
    const entry = this.prefixCache.get(key);
    if (entry) {
      this.prefixCache.delete(key);
      this.prefixCache.set(key, entry);
    }
  }

  private async prefill(inputs: DialogueInputs[]): Promise<{ logits: Float32Array[]; cache: KvCache }> {
    const hidden = this.manifest.model.llm_hidden_size;
    const knowledge = await this.runtime.encodeKnowledge(inputs.map((x) => x.textIds));
    const rows: Float32Array[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const x = inputs[i]!;
      rows.push(spliceKnowledge(await this.runtime.embed(x.promptIds), knowledge[i]!, x.spliceAt, hidden));
    }
    const width = Math.max(...rows.map((r) => r.length / hidden));
    const embeds = new Float32Array(rows.length * width * hidden);
    const mask = new Uint8Array(rows.length * width);
    rows.forEach((r, i) => {
      const len = r.length / hidden;
      // Left padding: the pad positions are masked, so their embeddings do not matter (zeros).
      embeds.set(r, (i * width + (width - len)) * hidden);
      mask.fill(1, i * width + (width - len), (i + 1) * width);
    });
    const past = KvCache.empty(this.runtime.kvShape, rows.length);
    return this.runtime.decode(embeds, width, past, mask);
  }

  /** One decoder call for every active row. */
  private async step(): Promise<void> {
    const lastIds: number[] = [];
    for (const t of this.active) {
      if (t.beam) lastIds.push(...t.beamTokens);
      else lastIds.push(t.generated[t.generated.length - 1]!);
    }
    let out: { logits: Float32Array[]; cache: KvCache };
    try {
      const embeds = await this.runtime.embed(lastIds);
      out = await this.runtime.decode(embeds, 1, this.cache);
      this.counters.decodeSteps++;
    } catch (err) {
      for (const t of this.active) this.failTask(t, err);
      this.active = [];
      this.cache = KvCache.empty(this.runtime.kvShape);
      return;
    }
    this.cache = out.cache;
    const order: number[] = [];
    let row = 0;
    for (const t of this.active) {
      const rows = out.logits.slice(row, row + t.rows);
      const parents = this.consume(t, rows);
      // A task that just finished keeps its rows until removeFinished drops them.
      const next = parents.length ? parents : Array.from({ length: t.rows }, (_, i) => i);
      for (const p of next) order.push(row + p);
      row += t.rows;
    }
    this.cache = this.cache.select(order);
    this.removeFinished();
  }

  /**
   * Feeds one step's logits rows to a task; returns, for each of its rows in the next step, which of its current
   * rows it continues (beam search reorders; one row stays itself).
   */
  private consume(t: Task, rows: Float32Array[]): number[] {
    if (t.finishReason) return [];
    try {
      if (t.steps++ < t.options.minNewTokens) {
        // Hugging Face's min_new_tokens: end-of-sequence is impossible until then.
        for (const row of rows) row[this.manifest.tokens.llm_eos_token_id] = -Infinity;
      }
      if (t.beam) {
        const { parents, tokens, done } = t.beam.step(rows);
        t.beamTokens = tokens;
        if (done || t.aborted) {
          t.generated = t.beam.result();
          const ids = this.replaced(t.generated);
          const eos = this.manifest.tokens.llm_eos_token_id;
          t.text = trimReplyStart(this.llmTokenizer, ids, this.llmTokenizer.decode(ids, { skipSpecialTokens: true }));
          const cut = t.stop.checkText(t.text);
          t.text = cut.text;
          t.finishReason = cut.stop ? 'stop' : t.generated[t.generated.length - 1] === eos ? 'eos' : 'length';
          this.handOut(t, t.text, t.generated);
          return [];
        }
        return parents;
      }
      // As Hugging Face generate with inputs_embeds (the official call): penalties see generated tokens only.
      const id = t.selector!.select(rows[0]!, [], t.generated);
      t.generated.push(id);
      if (id === this.manifest.tokens.llm_eos_token_id) t.finishReason = 'eos';
      else if (t.stop.checkToken(id)) t.finishReason = 'stop';
      else t.text += t.decoder.push(this.replaced([id])[0]!);
      if (!t.finishReason && t.generated.length >= t.options.maxNewTokens) t.finishReason = 'length';
      if (t.finishReason) t.text += t.decoder.flush();
      const cut = t.stop.checkText(t.text);
      if (cut.stop) {
        t.text = cut.text;
        t.finishReason = 'stop';
      }
      // Emit what is safe: never the start of a possible stop string.
      const safeEnd = t.finishReason ? t.text.length : t.text.length - t.stop.holdBack(t.text);
      if (safeEnd > t.emitted.length) {
        this.handOut(t, t.text.slice(t.emitted.length, safeEnd), [id]);
        t.emitted = t.text.slice(0, safeEnd);
      }
      return t.finishReason ? [] : [0];
    } catch (err) {
      this.failTask(t, err);
      return [];
    }
  }

  /** Hands text to the caller; the first text marks the task's first token (what a streaming client sees first). */
  private handOut(t: Task, text: string, ids: number[]): void {
    if (text) t.firstTokenAt ??= performance.now();
    t.handle.pushText(text, ids);
  }

  private replaced(ids: number[]): number[] {
    const table = this.manifest.tokens.replace_generated;
    return ids.map((id) => table[String(id)] ?? id);
  }

  private removeFinished(): void {
    this.retire((t) => t.finishReason);
  }

  /** Completes the active tasks `reasonOf` names a reason for, and drops their rows from the KV cache. */
  private retire(reasonOf: (t: Task) => FinishReason | undefined): void {
    const keep: number[] = [];
    const still: Task[] = [];
    let row = 0;
    for (const t of this.active) {
      const reason = reasonOf(t);
      if (reason) this.complete(t, reason);
      else {
        for (let i = 0; i < t.rows; i++) keep.push(row + i);
        still.push(t);
      }
      row += t.rows;
    }
    if (still.length !== this.active.length) {
      this.active = still;
      this.cache = this.cache.select(keep);
    }
  }

  private complete(t: Task, reason: FinishReason): void {
    if (t.failed) return;
    t.release();
    if (t.orderKey !== undefined) this.busyKeys.delete(t.orderKey);
    if (reason === 'aborted' && !t.beam) {
      t.text += t.decoder.flush();
      try {
        if (t.text.length > t.emitted.length) this.handOut(t, t.text.slice(t.emitted.length), []);
      } catch (err) {
        this.failTask(t, err);
        return;
      }
    }
    const now = performance.now();
    const result: GenerationResult = {
      text: t.text,
      tokenIds: this.replaced(t.generated),
      finishReason: reason,
      usage: { promptTokens: t.inputs.promptIds.length + this.manifest.model.num_query_tokens, completionTokens: t.generated.length },
      // From generate(): waiting for a place in the batch; until the first text (the whole time when there was
      // none); in all.
      timings: {
        queuedMs: (t.admittedAt ?? now) - t.queuedAt,
        firstTokenMs: (t.firstTokenAt ?? now) - t.queuedAt,
        totalMs: now - t.queuedAt,
      },
    };
    t.handle.finish(result);
  }

  private failTask(t: Task, err: unknown): void {
    if (t.failed) return;
    t.failed = true;
    t.finishReason ??= 'aborted';
    t.release();
    if (t.orderKey !== undefined) this.busyKeys.delete(t.orderKey);
    const error = new VikdfError('generation_failed', `generation failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    this.emit('requestError', error);
    t.handle.fail(error);
  }
}

/** The default model package, imported only when no bundle is named (it is an optional peer dependency). */
async function defaultModel(): Promise<{ bundlePath: string }> {
  const id = '@vikdf/model-mini';
  try {
    const mod = (await import(id)) as { bundlePath?: unknown };
    if (typeof mod.bundlePath === 'string') return { bundlePath: mod.bundlePath };
  } catch (error) {
    throw new VikdfError('no_default_model', `no bundle given and the default model ${id} cannot be loaded (install it: npm i ${id})`, {
      cause: error,
    });
  }
  throw new VikdfError('no_default_model', `${id} does not export bundlePath`);
}
