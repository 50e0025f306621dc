import { describe, expect, it } from 'vitest';
import { KvCache } from '../src/kv-cache.js';

const shape = { layers: 1, heads: 2, headDim: 2 };

/** A one-row cache of `length` real positions whose values encode (tag, head, position, dim). */
function row(tag: number, length: number): KvCache {
  const c = new KvCache(shape, 1, length);
  for (const [t, tensor] of c.tensors.entries()) {
    for (let h = 0; h < shape.heads; h++) {
      for (let p = 0; p < length; p++) {
        for (let d = 0; d < shape.headDim; d++) tensor[(h * length + p) * shape.headDim + d] = tag * 1000 + t * 100 + h * 10 + p + d / 10;
      }
    }
  }
  c.mask.fill(1);
  return c;
}

/** The value at (row, tensor, head, position from the right, dim). */
function at(c: KvCache, r: number, t: number, h: number, fromRight: number, d: number): number {
  const p = c.length - 1 - fromRight;
  return c.tensors[t]![((r * shape.heads + h) * c.length + p) * shape.headDim + d]!;
}

describe('KvCache', () => {
  it('concat left-pads the shorter rows and keeps every value in place', () => {
    const both = row(1, 2).concat(row(2, 4));
    expect([both.rows, both.length]).toEqual([2, 4]);
    expect(Array.from(both.mask)).toEqual([0, 0, 1, 1, 1, 1, 1, 1]);
    expect(both.realLength(0)).toBe(2);
    // last position of row 0 is its position 1; of row 1 its position 3
    expect(at(both, 0, 1, 1, 0, 1)).toBeCloseTo(1000 + 100 + 10 + 1 + 0.1, 3);
    expect(at(both, 1, 0, 0, 0, 0)).toBeCloseTo(2000 + 3, 3);
    expect(at(both, 0, 0, 0, 2, 0)).toBe(0); // padding
  });

  it('select reorders and repeats rows (beam search) and drops columns no row needs', () => {
    const both = row(1, 2).concat(row(2, 4));
    const picked = both.select([0, 0]);
    expect([picked.rows, picked.length]).toEqual([2, 2]); // row 1 gone: the two padding columns are trimmed
    expect(at(picked, 1, 0, 1, 1, 0)).toBeCloseTo(1000 + 10 + 0, 3);
    const swapped = both.select([1, 0]);
    expect(at(swapped, 0, 0, 0, 0, 0)).toBeCloseTo(2003, 3);
    expect(Array.from(swapped.mask)).toEqual([1, 1, 1, 1, 0, 0, 1, 1]);
  });

  it('an empty cache joins anything', () => {
    const c = KvCache.empty(shape).concat(row(3, 1));
    expect([c.rows, c.length]).toEqual([1, 1]);
    expect(KvCache.empty(shape, 2).select([]).rows).toBe(0);
  });
});
