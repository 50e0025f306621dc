/**
 * The decoder's key-value cache for a batch of rows that may have different lengths.
 *
 * Rows are left-padded to a common past length `P`: each layer's key and value tensor is
 * [rows, heads, P, headDim] and the attention mask [rows, P] marks the real positions. Rows join (after their
 * own prefill) and leave between decode steps, which is what continuous batching needs; beam search reorders
 * rows. Every operation copies into fresh arrays, so a cache handed to a step is never changed under it.
 */

export interface KvShape {
  layers: number;
  heads: number;
  headDim: number;
}

export class KvCache {
  /** 2 * layers arrays (key, value per layer), each rows x heads x length x headDim. */
  readonly tensors: Float32Array[];
  /** rows x length, 1 for real positions. */
  readonly mask: Uint8Array;

  constructor(
    readonly shape: KvShape,
    readonly rows: number,
    readonly length: number,
    tensors?: Float32Array[],
    mask?: Uint8Array,
  ) {
    const size = rows * shape.heads * length * shape.headDim;
    this.tensors = tensors ?? Array.from({ length: 2 * shape.layers }, () => new Float32Array(size));
    this.mask = mask ?? new Uint8Array(rows * length);
    if (this.tensors.length !== 2 * shape.layers || this.tensors.some((t) => t.length !== size)) {
      throw new Error(`KvCache: expected ${2 * shape.layers} tensors of ${size} floats`);
    }
    if (this.mask.length !== rows * length) throw new Error(`KvCache: mask must have ${rows * length} entries`);
  }

  static empty(shape: KvShape, rows = 0): KvCache {
    return new KvCache(shape, rows, 0);
  }

  /** Real (unmasked) positions of a row: its position id for the next token. */
  realLength(row: number): number {
    let n = 0;
    for (let j = 0; j < this.length; j++) n += this.mask[row * this.length + j]!;
    return n;
  }

  /** The cache with rows picked (and possibly repeated) by index: beam reordering, or dropping rows. */
  select(rows: number[]): KvCache {
    if (rows.length === this.rows && rows.every((r, i) => r === i)) return this; // the usual greedy step: no copy
    const { heads, headDim } = this.shape;
    const rowSize = heads * this.length * headDim;
    const tensors = this.tensors.map((t) => {
      const out = new Float32Array(rows.length * rowSize);
      rows.forEach((r, i) => out.set(t.subarray(r * rowSize, (r + 1) * rowSize), i * rowSize));
      return out;
    });
    const mask = new Uint8Array(rows.length * this.length);
    rows.forEach((r, i) => mask.set(this.mask.subarray(r * this.length, (r + 1) * this.length), i * this.length));
    return new KvCache(this.shape, rows.length, this.length, tensors, mask).trimmed();
  }

  /** Drops leading columns that no row uses, so finished long rows do not keep the batch wide. */
  trimmed(): KvCache {
    let drop = this.length;
    for (let r = 0; r < this.rows && drop > 0; r++) {
      let lead = 0;
      while (lead < this.length && this.mask[r * this.length + lead] === 0) lead++;
      drop = Math.min(drop, lead);
    }
    if (this.rows === 0) drop = this.length;
    return drop === 0 ? this : this.padTo(this.length - drop, drop);
  }

  /** Re-lays the cache at a new length: `drop` > 0 drops that many leading columns, < 0 adds that much left padding. */
  private padTo(length: number, drop: number): KvCache {
    const { heads, headDim } = this.shape;
    const out = new KvCache(this.shape, this.rows, length);
    const keep = Math.min(this.length - Math.max(drop, 0), length);
    const srcStart = Math.max(drop, 0);
    const dstStart = length - keep;
    for (let t = 0; t < this.tensors.length; t++) {
      const src = this.tensors[t]!;
      const dst = out.tensors[t]!;
      for (let rh = 0; rh < this.rows * heads; rh++) {
        const s = (rh * this.length + srcStart) * headDim;
        dst.set(src.subarray(s, s + keep * headDim), (rh * length + dstStart) * headDim);
      }
    }
    for (let r = 0; r < this.rows; r++) {
      out.mask.set(this.mask.subarray(r * this.length + srcStart, r * this.length + srcStart + keep), r * length + dstStart);
    }
    return out;
  }

  /** This cache's rows followed by `other`'s, both left-padded to the longer length. */
  concat(other: KvCache): KvCache {
    if (other.rows === 0) return this;
    if (this.rows === 0) return other;
    const length = Math.max(this.length, other.length);
    const a = this.length === length ? this : this.padTo(length, this.length - length);
    const b = other.length === length ? other : other.padTo(length, other.length - length);
    const tensors = a.tensors.map((t, i) => {
      const out = new Float32Array(t.length + b.tensors[i]!.length);
      out.set(t, 0);
      out.set(b.tensors[i]!, t.length);
      return out;
    });
    const mask = new Uint8Array(a.mask.length + b.mask.length);
    mask.set(a.mask, 0);
    mask.set(b.mask, a.mask.length);
    return new KvCache(this.shape, this.rows + other.rows, length, tensors, mask);
  }
}
