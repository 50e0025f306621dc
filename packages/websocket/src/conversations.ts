/**
 * Resumable conversations: every conversation the server holds has an opaque token (128 random bits). While its
 * connection is open it belongs to that connection; when the connection closes it is kept for `resumeTtlMs`, so
 * that a client reconnecting with the token (a `resume` frame) gets the same history back. What is kept is
 * bounded in time (`resumeTtlMs`), count (`maxStoredConversations` detached at once) and bytes
 * (`maxStoredBytes` of turn text in all); beyond, the conversations detached longest ago are forgotten first.
 * Nothing is written to disk: a server restart forgets them all (a resume then says `resumed: false`).
 */
import { randomBytes } from 'node:crypto';
import type { Generation, SendOptions } from '@vikdf/core';

/** One conversation of the engine, as the server uses it (`@vikdf/core`'s Conversation). */
export interface ChatConversation {
  send(text: string, options?: SendOptions): Generation;
  /** The turns so far, oldest first (what a resume hands back; optional for engines that keep none). */
  readonly history?: readonly string[];
}

export interface StoreLimits {
  resumeTtlMs: number;
  maxStoredConversations: number;
  maxStoredBytes: number;
}

export interface StoredConversation {
  /** The opaque id a client resumes it with. */
  readonly token: string;
  readonly conversation: ChatConversation;
  /** The connection it belongs to, if one does. */
  owner: object | undefined;
  /** When its connection let it go (meaningful while `owner` is undefined). */
  detachedAt: number;
  /** UTF-8 bytes of its history, as last counted. */
  bytes: number;
}

/** Length of a token: 16 random bytes in base64url. */
export const TOKEN_LENGTH = 22;

export class ConversationStore {
  private readonly entries = new Map<string, StoredConversation>();
  /** Detached entries, oldest first (insertion order of a Map). */
  private readonly detached = new Map<string, StoredConversation>();
  private totalBytes = 0;

  constructor(private readonly limits: StoreLimits) {}

  /** A new conversation, owned by `owner`. */
  create(conversation: ChatConversation, owner: object): StoredConversation {
    let token: string;
    do token = randomBytes(16).toString('base64url');
    while (this.entries.has(token));
    const entry: StoredConversation = { token, conversation, owner, detachedAt: 0, bytes: 0 };
    this.entries.set(token, entry);
    return entry;
  }

  /** The conversation with this token, unless it was forgotten (expired, evicted, reset, or never existed). */
  get(token: string, now: number): StoredConversation | undefined {
    const entry = this.entries.get(token);
    if (entry && entry.owner === undefined && now - entry.detachedAt > this.limits.resumeTtlMs) {
      this.delete(entry);
      return undefined;
    }
    return entry;
  }

  /** Gives a conversation to `owner` (a resume). */
  attach(entry: StoredConversation, owner: object): void {
    this.detached.delete(entry.token);
    entry.owner = owner;
  }

  /**
   * Its connection closed: keep it for resumption if it has history (or will have: `replying`, a reply stopped by
   * the close is still to be added), else forget it.
   */
  detach(entry: StoredConversation, now: number, replying = false): void {
    if (!this.entries.has(entry.token)) return;
    this.measure(entry);
    if (!replying && entry.bytes === 0 && (entry.conversation.history?.length ?? 0) === 0) {
      this.delete(entry);
      return;
    }
    entry.owner = undefined;
    entry.detachedAt = now;
    this.detached.delete(entry.token);
    this.detached.set(entry.token, entry);
    this.evict(now);
  }

  /** Forgets a conversation (a reset): its token no longer resumes anything. */
  delete(entry: StoredConversation): void {
    if (this.entries.get(entry.token) !== entry) return;
    this.entries.delete(entry.token);
    this.detached.delete(entry.token);
    this.totalBytes -= entry.bytes;
  }

  /** Counts a conversation's history again (after a reply was added to it). */
  measure(entry: StoredConversation): void {
    if (this.entries.get(entry.token) !== entry) return;
    const bytes = (entry.conversation.history ?? []).reduce((n, turn) => n + Buffer.byteLength(turn, 'utf8'), 0);
    this.totalBytes += bytes - entry.bytes;
    entry.bytes = bytes;
    if (entry.owner === undefined || this.totalBytes > this.limits.maxStoredBytes) this.evict(performance.now());
  }

  /** Forgets what expired, then the oldest detached conversations while over the count or byte bounds. */
  evict(now: number): void {
    for (const entry of this.detached.values()) {
      const over = this.detached.size > this.limits.maxStoredConversations || this.totalBytes > this.limits.maxStoredBytes;
      if (!over && now - entry.detachedAt <= this.limits.resumeTtlMs) break;
      this.delete(entry);
    }
  }

  /** Conversations held (owned or kept for resumption), detached ones, and bytes of history in all. */
  get stats(): { conversations: number; detached: number; bytes: number } {
    return { conversations: this.entries.size, detached: this.detached.size, bytes: this.totalBytes };
  }
}
