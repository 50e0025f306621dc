/**
 * What writes the replies. `engineResponder` answers with a `@vikdf/core` Engine, one core Conversation per chat
 * conversation; tests and other backends implement `Responder` directly.
 */
import type { ConversationOptions, GenerationOptions, SendOptions } from '@vikdf/core';
import { conversationKey, type ConversationRef, type InboundMessage } from './message.js';

export interface ReplyOptions {
  /** Aborting stops generating (the stream ends early). */
  signal?: AbortSignal;
}

export interface Responder {
  /**
   * Starts a reply to `message`. `history` (oldest first) is given on first contact with a conversation, for
   * the responder to seed its context. The stream yields the reply's text as it is written; `result` settles
   * when it is complete (and rejects, like the stream, when it fails).
   */
  reply(
    conversation: ConversationRef,
    message: InboundMessage,
    history?: string[],
    opts?: ReplyOptions,
  ): { stream: AsyncIterable<string>; result: Promise<{ text: string }> };
  /** Whether this conversation is known already (`ChatBot` then does not fetch its history). */
  has?(conversation: ConversationRef): boolean;
}

/** What `engineResponder` needs of an engine: `@vikdf/core`'s Engine has it. */
export interface ResponderEngine {
  conversation(options?: ConversationOptions): {
    send(text: string, options?: SendOptions): AsyncIterable<string> & { result: Promise<{ text: string }> };
  };
}

export interface EngineResponderOptions {
  /** Persona or system text for every conversation. */
  system?: string;
  /** Generation options for every reply (over the engine's defaults). */
  generation?: GenerationOptions;
  /** Turns of history each conversation keeps (core's default 64). */
  maxTurns?: number;
  /** Prompt-token budget of a conversation's context (core's default: the bundle's prompt length). */
  maxContextTokens?: number;
  /** Conversations kept; the least recently used is forgotten beyond this (default 1000). */
  maxConversations?: number;
}

export interface EngineResponder extends Responder {
  has(conversation: ConversationRef): boolean;
  /** Forgets a conversation (its next message starts afresh, with history fetched again). */
  forget(conversation: ConversationRef): void;
  /** Conversations held now. */
  readonly size: number;
}

/**
 * A Responder on a `@vikdf/core` Engine: one core Conversation per `conversationKey`, kept in an LRU of
 * `maxConversations`, seeded with `history` on first contact. Replies of one conversation are answered in order.
 */
export function engineResponder(engine: ResponderEngine, opts: EngineResponderOptions = {}): EngineResponder {
  if (!engine || typeof engine.conversation !== 'function') throw new TypeError('engineResponder: expected an Engine (with conversation())');
  const maxConversations = opts.maxConversations ?? 1000;
  if (!Number.isInteger(maxConversations) || maxConversations < 1) {
    throw new RangeError(`engineResponder: maxConversations must be a positive integer, got ${String(maxConversations)}`);
  }
  const conversations = new Map<string, ReturnType<ResponderEngine['conversation']>>();

  const open = (ref: ConversationRef, history: string[] | undefined) => {
    const key = conversationKey(ref);
    let conv = conversations.get(key);
    if (conv) {
      conversations.delete(key); // re-inserted below: most recently used last
    } else {
      const turns = (history ?? []).filter((t) => typeof t === 'string' && t.trim() !== '');
      conv = engine.conversation({
        id: key,
        ...(opts.system === undefined ? {} : { system: opts.system }),
        ...(opts.maxTurns === undefined ? {} : { maxTurns: opts.maxTurns }),
        ...(opts.maxContextTokens === undefined ? {} : { maxContextTokens: opts.maxContextTokens }),
        ...(turns.length ? { history: turns } : {}),
      });
    }
    conversations.set(key, conv);
    while (conversations.size > maxConversations) conversations.delete(conversations.keys().next().value as string);
    return conv;
  };

  return {
    reply(conversation, message, history, replyOpts = {}) {
      const generation = open(conversation, history).send(message.text, {
        ...(opts.generation ? { options: opts.generation } : {}),
        ...(replyOpts.signal ? { signal: replyOpts.signal } : {}),
      });
      const result = generation.result.then((r) => ({ text: r.text }));
      result.catch(() => undefined); // the stream reports the same failure; callers may watch only that
      return { stream: generation, result };
    },
    has: (conversation) => conversations.has(conversationKey(conversation)),
    forget: (conversation) => void conversations.delete(conversationKey(conversation)),
    get size() {
      return conversations.size;
    },
  };
}
