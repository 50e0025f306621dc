/**
 * From a conversation to the ids of the first decoder step: docs/bundle-format.md, "From a conversation to
 * the first decoder step", steps 2-5. The Python reference is training/vikdf/data.py (`DialogueFormatter`).
 */
import { Template, parse, tokenize } from '@huggingface/jinja';
import type { BundleManifest } from './bundle.js';
import type { BundleTokenizer } from './tokenizer.js';

export interface ChatMessage {
  role: 'user' | 'assistant';
  content: string;
}

export interface RenderOptions {
  /** Passed to the template as `system` when given (the official template ignores it). */
  system?: string;
}

export interface RenderedPrompt {
  /** Text before the knowledge placeholder. */
  prefix: string;
  /** The whole rendered text with the placeholder removed. */
  full: string;
}

export interface DialogueInputs {
  /** Text-encoder ids of the joined context (input of `knowledge_encoder`). */
  textIds: number[];
  /** LLM ids of the prompt, truncated to `prompt.max_length` (input of `embed_tokens`). */
  promptIds: number[];
  /** The knowledge vectors go after this many prompt ids. */
  spliceAt: number;
}

/**
 * Chat messages of context turns (oldest first): roles are given from the last turn backwards (the last is
 * `user`), an empty `user` turn goes first when the first turn would be `assistant`, and an empty context
 * becomes one empty `user` turn. Contents are trimmed.
 */
export function dialogueMessages(turns: readonly string[]): ChatMessage[] {
  const contents = turns.map((t) => t.trim());
  if (contents.length % 2 === 0) contents.unshift('');
  return contents.map((content, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content }));
}

export class PromptFormatter {
  private readonly template: Template;

  constructor(
    readonly manifest: BundleManifest,
    readonly textTokenizer: BundleTokenizer,
    readonly llmTokenizer: BundleTokenizer,
  ) {
    const source = manifest.prompt.chat_template;
    try {
      this.template = new Template(source);
      // The reference renders with Python jinja2's defaults; `Template` turns on trim_blocks and
      // lstrip_blocks, which would drop newlines a template may mean. Parse again without them.
      this.template.parsed = parse(tokenize(source));
    } catch (error) {
      throw this.error(`is not a valid Jinja template (${(error as Error).message})`, error);
    }
  }

  /** Renders the chat template and splits it at the first knowledge placeholder. */
  render(turns: readonly string[], { system }: RenderOptions = {}): RenderedPrompt {
    const vars: Record<string, unknown> = { messages: dialogueMessages(turns) };
    if (system !== undefined) vars.system = system;
    let text: string;
    try {
      text = this.template.render(vars);
    } catch (error) {
      throw this.error(`failed to render (${(error as Error).message})`, error);
    }
    const placeholder = this.manifest.prompt.knowledge_placeholder;
    const at = text.indexOf(placeholder);
    if (at < 0) throw this.error(`did not render the knowledge placeholder ${JSON.stringify(placeholder)}`);
    const prefix = text.slice(0, at);
    return { prefix, full: prefix + text.slice(at + placeholder.length) };
  }

  /** Text ids, prompt ids and splice index of a conversation (steps 2, 4 and 5 of the bundle format). */
  format(turns: readonly string[], options: RenderOptions = {}): DialogueInputs {
    const tei = this.manifest.text_encoder_input;
    const textIds = this.textTokenizer.encode(turns.map((t) => t.trim()).join(tei.turn_separator), {
      addSpecialTokens: tei.add_special_tokens,
      maxLength: tei.max_length,
      truncation: tei.truncation,
    });

    const { prompt } = this.manifest;
    const { prefix, full } = this.render(turns, options);
    const promptIds = this.llmTokenizer.encode(full, {
      addSpecialTokens: prompt.add_special_tokens,
      maxLength: prompt.max_length,
      truncation: prompt.truncation,
    });
    // The knowledge goes after the prefix's tokens, which must be the prompt's first tokens (up to truncation).
    const prefixIds = this.llmTokenizer.encode(prefix, { addSpecialTokens: prompt.add_special_tokens });
    const spliceAt = Math.min(prefixIds.length, promptIds.length);
    for (let i = 0; i < spliceAt; i++) {
      if (prefixIds[i] !== promptIds[i]) {
        throw this.error('has a prefix (the text before the knowledge placeholder) that does not tokenise to the first tokens of the whole prompt');
      }
    }
    return { textIds, promptIds, spliceAt };
  }

  /**
   * Length of the decoder input for these turns before any truncation: the prompt's tokens plus the
   * `num_query_tokens` knowledge vectors. For a context-window manager deciding which turns to drop.
   */
  countPromptTokens(turns: readonly string[], options: RenderOptions = {}): number {
    const { full } = this.render(turns, options);
    const count = this.llmTokenizer.countTokens(full, { addSpecialTokens: this.manifest.prompt.add_special_tokens });
    return count + this.manifest.model.num_query_tokens;
  }

  private error(message: string, cause?: unknown): Error {
    const what = `bundle ${JSON.stringify(this.manifest.name)}: prompt.chat_template`;
    return new Error(`${what} ${message}`, cause === undefined ? undefined : { cause });
  }
}
