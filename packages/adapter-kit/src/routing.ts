/**
 * Which messages the bot answers: a pure function of the message and a policy, so adapters only normalise.
 */
import { ADDRESSED_BY, type AddressedBy, type InboundMessage } from './message.js';

export interface RoutingPolicy {
  /** How a message must address the bot to be answered (default `['mention', 'reply', 'dm']`; add `'none'` to answer everything). */
  respondTo?: AddressedBy[];
  /** Answer direct messages (default true). */
  allowDMs?: boolean;
  /** Ignore other bots (default true). The bot's own messages are always ignored. */
  ignoreBots?: boolean;
  /**
   * Only these channels (ids). A thread counts as its channel (`conversation.channelId`), or by its own id
   * (`threadId`). Direct messages are not channels here: `allowDMs` governs them.
   */
  allowChannels?: string[];
  /** Never these channels (or threads); wins over `allowChannels`. */
  denyChannels?: string[];
  /** Only these users (ids), in channels and DMs. */
  allowUsers?: string[];
  /** Never these users; wins over `allowUsers`. */
  denyUsers?: string[];
}

/** Why a message is not answered; stable strings, also used by `ChatBot`'s 'ignored' event. */
export type IgnoreReason =
  | 'self'
  | 'bot'
  | 'dm-disabled'
  | 'channel-denied'
  | 'channel-not-allowed'
  | 'user-denied'
  | 'user-not-allowed'
  | 'not-addressed'
  | 'empty';

export type RouteDecision = { respond: true } | { respond: false; reason: IgnoreReason | (string & {}) };

const DEFAULT_RESPOND_TO: readonly AddressedBy[] = ['mention', 'reply', 'dm'];

/** Decides whether to answer a message. The checks run in the order of `IgnoreReason`; the first that fails is the reason. */
export function route(msg: InboundMessage, policy: RoutingPolicy = {}): RouteDecision {
  const no = (reason: IgnoreReason): RouteDecision => ({ respond: false, reason });
  if (msg.author.isSelf) return no('self');
  if (msg.author.isBot && policy.ignoreBots !== false) return no('bot');
  const { channelId, threadId, isDM } = msg.conversation;
  if (isDM) {
    if (policy.allowDMs === false) return no('dm-disabled');
  } else {
    const names = threadId === undefined ? [channelId] : [channelId, threadId];
    if (policy.denyChannels?.some((id) => names.includes(id))) return no('channel-denied');
    if (policy.allowChannels && !policy.allowChannels.some((id) => names.includes(id))) return no('channel-not-allowed');
  }
  if (policy.denyUsers?.includes(msg.author.id)) return no('user-denied');
  if (policy.allowUsers && !policy.allowUsers.includes(msg.author.id)) return no('user-not-allowed');
  if (!(policy.respondTo ?? DEFAULT_RESPOND_TO).includes(msg.addressedBy)) return no('not-addressed');
  if (!msg.text.trim()) return no('empty');
  return { respond: true };
}

/** Throws a TypeError naming the first field of `policy` that is malformed. */
export function validatePolicy(policy: unknown): asserts policy is RoutingPolicy {
  if (policy === undefined) return;
  if (policy === null || typeof policy !== 'object' || Array.isArray(policy)) {
    throw new TypeError(`the routing policy must be an object, got ${describe(policy)}`);
  }
  const p = policy as Record<string, unknown>;
  for (const key of Object.keys(p)) {
    if (!POLICY_KEYS.includes(key)) throw new TypeError(`unknown routing policy field "${key}" (known: ${POLICY_KEYS.join(', ')})`);
  }
  for (const key of ['allowDMs', 'ignoreBots']) {
    if (p[key] !== undefined && typeof p[key] !== 'boolean') throw new TypeError(`policy.${key} must be a boolean, got ${describe(p[key])}`);
  }
  for (const key of ['allowChannels', 'denyChannels', 'allowUsers', 'denyUsers', 'respondTo']) {
    const value = p[key];
    if (value === undefined) continue;
    if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v === '')) {
      throw new TypeError(`policy.${key} must be an array of non-empty strings, got ${describe(value)}`);
    }
  }
  const bad = (p.respondTo as string[] | undefined)?.find((v) => !ADDRESSED_BY.includes(v as AddressedBy));
  if (bad !== undefined) throw new TypeError(`policy.respondTo has "${bad}"; allowed: ${ADDRESSED_BY.join(', ')}`);
}

const POLICY_KEYS = ['respondTo', 'allowDMs', 'ignoreBots', 'allowChannels', 'denyChannels', 'allowUsers', 'denyUsers'];

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (typeof v === 'string' ? JSON.stringify(v) : String(v))).join(', ')}]`;
  return typeof value === 'string' ? JSON.stringify(value) : `${typeof value} ${String(value)}`;
}
