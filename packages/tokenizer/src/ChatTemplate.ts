/**
 * A model's own chat template (`chat_template` of `tokenizer_config.json`), rendered with
 * `@huggingface/jinja` exactly as transformers renders it, and encoded so that message text stays data.
 *
 * The rendered prompt is trusted text (we rendered it): its added tokens become their ids. A user or
 * system message may hold added-token text (`<|im_end|>` typed by a user); before rendering, each such
 * occurrence is swapped for a private-use sentinel character, so the only added tokens in the rendered
 * string are the template's own; the sentinels are swapped back inside the text between them, which
 * is encoded as data. Assistant messages are passed as they are: they are the model's own turns, and
 * templates rewrite them (Qwen3 moves `<think>…</think>` out of history), which needs their real text.
 */
import { Template } from "@huggingface/jinja"
import { Schema } from "effect"
import { SYSTEM_PROMPT } from "./Template.js"
import type { Codec } from "./Tokenizer.js"

/** The chat template could not be parsed or rendered. The message is one line: `<file>: chat_template: <problem>`. */
export class ChatTemplateError extends Schema.TaggedError<ChatTemplateError>()("ChatTemplateError", {
  file: Schema.String,
  key: Schema.String,
  message: Schema.String
}) {}

const fail = (file: string, problem: string): ChatTemplateError =>
  new ChatTemplateError({ file, key: "chat_template", message: `${file}: chat_template: ${problem}`.replace(/\s*\n\s*/g, " ") })

/** One chat turn as templates read it. */
export interface Message {
  readonly role: string
  readonly content: string
}

/** Rendering options, passed to the template as transformers does. */
export interface RenderOptions {
  /** End with the assistant's opening (default true: a prompt for generation). */
  readonly addGenerationPrompt?: boolean
  /** `enable_thinking` for templates that read it (Qwen3); left undefined when not given. */
  readonly enableThinking?: boolean
}

/** A parsed chat template and the tokens it is rendered with. */
export interface Chat {
  /** The file it came from. */
  readonly file: string
  readonly source: string
  readonly bosToken: string | undefined
  readonly eosToken: string | undefined
  /** The added token the template writes right after an assistant message (its end of turn), if any. */
  readonly endOfTurn: string | undefined
  /** Whether the template reads `enable_thinking`. */
  readonly readsEnableThinking: boolean
  readonly template: Template
}

const tokenText = (v: unknown): string | undefined =>
  typeof v === "string" ? v : v !== null && typeof v === "object" && typeof (v as any).content === "string" ? (v as any).content : undefined

/** Renders `messages` with the model's template. Throws `ChatTemplateError`. */
export const render = (chat: Chat, messages: ReadonlyArray<Message>, options: RenderOptions = {}): string => {
  const vars: Record<string, unknown> = {
    messages: messages.map((m) => ({ role: m.role, content: m.content })),
    add_generation_prompt: options.addGenerationPrompt ?? true,
    bos_token: chat.bosToken ?? "",
    eos_token: chat.eosToken ?? ""
  }
  if (options.enableThinking !== undefined) vars.enable_thinking = options.enableThinking
  try {
    return chat.template.render(vars)
  } catch (e) {
    throw fail(chat.file, `cannot render: ${e instanceof Error ? e.message : String(e)}`)
  }
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** A regex matching any of `texts`, longest first at each position (as HF's added-token splitter). */
const anyOf = (texts: ReadonlyArray<string>, extra = ""): RegExp =>
  new RegExp([...[...texts].sort((a, b) => b.length - a.length).map(escape), ...(extra === "" ? [] : [extra])].join("|") || "(?!)", "gu")

/** The template of `config` (the default one of a named list), or `undefined` when there is none. Throws `ChatTemplateError`. */
export const fromConfig = (file: string, config: any, specialTokens: Readonly<Record<string, number>>): Chat | undefined => {
  const raw = config?.chat_template
  if (raw === undefined || raw === null) return undefined
  const source = typeof raw === "string"
    ? raw
    : Array.isArray(raw)
    ? (raw.find((t: any) => t?.name === "default") ?? raw[0])?.template
    : undefined
  if (typeof source !== "string") throw fail(file, "is neither a string nor a list of {name, template}")
  let template: Template
  try {
    template = new Template(source)
  } catch (e) {
    throw fail(file, `cannot parse: ${e instanceof Error ? e.message : String(e)}`)
  }
  const base: Chat = {
    file,
    source,
    bosToken: tokenText(config.bos_token),
    eosToken: tokenText(config.eos_token),
    endOfTurn: undefined,
    readsEnableThinking: source.includes("enable_thinking"),
    template
  }
  const ASSISTANT = "r1flow-assistant-turn"
  const text = render(base, [{ role: "user", content: "r1flow-user-turn" }, { role: "assistant", content: ASSISTANT }], { addGenerationPrompt: false })
  const after = text.indexOf(ASSISTANT)
  let endOfTurn: string | undefined
  if (after >= 0) {
    const re = anyOf(Object.keys(specialTokens))
    re.lastIndex = after + ASSISTANT.length
    endOfTurn = re.exec(text)?.[0]
  }
  return { ...base, endOfTurn }
}

// Sentinels: code points of Supplementary Private Use Area-A, one per hidden occurrence.
const SENTINEL = 0xf0000
const SENTINEL_CLASS = "[\\u{F0000}-\\u{FFFFD}]"

/**
 * Renders `messages` and encodes the result: the template's added tokens become their ids, and all
 * text between them, including any added-token text inside user and system messages, is data.
 */
export const encode = (codec: Codec, chat: Chat, messages: ReadonlyArray<Message>, options: RenderOptions = {}): Int32Array => {
  const specials = Object.keys(codec.specialTokens)
  const hide = anyOf(specials, SENTINEL_CLASS)
  const hidden: Array<string> = []
  const masked = messages.map((m) =>
    m.role === "assistant" ? m : {
      role: m.role,
      content: m.content.replace(hide, (s) => {
        hidden.push(s)
        return String.fromCodePoint(SENTINEL + hidden.length - 1)
      })
    }
  )
  if (hidden.length > 0xfffd) throw fail(chat.file, "too many added-token texts in the messages")
  const rendered = render(chat, masked, options)
  const unhide = new RegExp(SENTINEL_CLASS, "gu")
  const restore = (s: string): string => s.replace(unhide, (c) => hidden[c.codePointAt(0)! - SENTINEL] ?? c)
  const parts: Array<Int32Array> = []
  const split = anyOf(specials)
  let at = 0
  for (const m of rendered.matchAll(split)) {
    if (m.index > at) parts.push(codec.encode(restore(rendered.slice(at, m.index))))
    parts.push(Int32Array.of(codec.specialTokens[m[0]]))
    at = m.index + m[0].length
  }
  if (at < rendered.length) parts.push(codec.encode(restore(rendered.slice(at))))
  let n = 0
  for (const p of parts) n += p.length
  const out = new Int32Array(n)
  n = 0
  for (const p of parts) {
    out.set(p, n)
    n += p.length
  }
  return out
}

/** The R1 reasoning prompt in the model's own template: ids, the text, and the text the completion starts inside. */
export interface R1Prompt {
  readonly ids: Int32Array
  readonly text: string
  /**
   * What the generation prompt already opened for the completion: from its last `<think>` to its end
   * (`<think>\n` where a template opens the reasoning itself, Qwen3's `<think>\n\n</think>\n\n` with
   * `enableThinking: false`), else "". Rewards read the completion as if it started with this.
   */
  readonly completionPrefix: string
}

/** The R1 system turn and `question` as the user turn, rendered for generation. */
export const r1Messages = (question: string): Array<Message> => [{ role: "system", content: SYSTEM_PROMPT }, { role: "user", content: question }]

/** The R1 prompt of `question` in `chat`. */
export const r1Prompt = (codec: Codec, chat: Chat, question: string, options: Omit<RenderOptions, "addGenerationPrompt"> = {}): R1Prompt => {
  const messages = r1Messages(question)
  const text = render(chat, messages, { ...options, addGenerationPrompt: true })
  const without = render(chat, messages, { ...options, addGenerationPrompt: false })
  const generation = text.startsWith(without) ? text.slice(without.length) : ""
  const think = generation.lastIndexOf("<think>")
  return {
    ids: encode(codec, chat, messages, { ...options, addGenerationPrompt: true }),
    text,
    completionPrefix: think < 0 ? "" : generation.slice(think)
  }
}
