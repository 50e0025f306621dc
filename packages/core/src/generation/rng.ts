/**
 * A small seeded pseudo-random generator for sampling.
 *
 * The algorithm is xoshiro128** 1.1 (Blackman and Vigna, https://prng.di.unimi.it/xoshiro128starstar.c):
 * 128 bits of state, 32-bit outputs, period 2^128 - 1. Its state is filled from the seed with splitmix32
 * (a 32-bit variant of splitmix64, the seeding the xoshiro authors recommend), so that nearby seeds give
 * unrelated streams. The same seed always gives the same stream, on every platform: only 32-bit integer arithmetic
 * (`Math.imul`, shifts) is used.
 *
 * It is not cryptographically secure, and the stream is not the one PyTorch's `torch.multinomial` draws:
 * seeded sampling is reproducible within this SDK, not against Python.
 */

/** What the samplers need from a random source (an `Rng`, or any other). */
export interface RandomSource {
  /** A uniform number in [0, 1). */
  next(): number;
}

const TWO_32 = 0x1_0000_0000;

/** splitmix32 step: returns [next state, output]. */
function splitmix32(state: number): [number, number] {
  const s = (state + 0x9e3779b9) | 0;
  let z = s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [s, (z ^ (z >>> 16)) >>> 0];
}

/** xoshiro128** seeded from a number; see the module comment. */
export class Rng implements RandomSource {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /**
   * @param seed a safe integer (negative allowed); all of its bits are mixed into the state. Without one,
   *   a seed is drawn from `Math.random` (a fresh stream each time).
   */
  constructor(seed: number = Math.floor(Math.random() * Number.MAX_SAFE_INTEGER)) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
    // Two splitmix32 chains, one from the low and one from the high 32 bits (two's complement for
    // negatives), xor-ed word by word.
    let lo = seed >>> 0;
    let hi = (Math.floor(seed / TWO_32) ^ 0x5bd1e995) >>> 0;
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      let a: number;
      let b: number;
      [lo, a] = splitmix32(lo);
      [hi, b] = splitmix32(hi);
      words.push((a ^ b) >>> 0);
    }
    [this.s0, this.s1, this.s2, this.s3] = words as [number, number, number, number];
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the one forbidden state
  }

  /** A generator with the given raw state (four 32-bit words, not all zero); for tests against the C code. */
  static fromState(state: readonly [number, number, number, number]): Rng {
    const rng = new Rng(0);
    [rng.s0, rng.s1, rng.s2, rng.s3] = state.map((w) => w | 0) as [number, number, number, number];
    if ((rng.s0 | rng.s1 | rng.s2 | rng.s3) === 0) throw new RangeError('xoshiro128** state must not be all zero');
    return rng;
  }

  /** The next 32-bit output, as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A uniform number in [0, 1) with 32 random bits. */
  next(): number {
    return this.nextUint32() / TWO_32;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
