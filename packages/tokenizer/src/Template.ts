/**
 * The R1 prompt formats, built as ids: control ids are placed by the template, and every piece of
 * text between them is encoded as data. Control text is never concatenated into a string and
 * parsed back, so a question that contains `<think>` or `<|im_end|>` stays plain text.
 *
 * R1-Zero (DeepSeek-R1, Table 1):
 *
 *   A conversation between User and Assistant. … i.e., <think> reasoning process here </think>
 *   <answer> answer here </answer>. User: {prompt}. Assistant:
 *
 * The tags inside that instruction are instruction text (data) and are encoded as ordinary text;
 * the tags the model writes in its completion are the control ids.
 *
 * Chat (ChatML turns): `<|im_start|>` role `\n` content `<|im_end|>` `\n`, ending with the
 * assistant's opening `<|im_start|>assistant\n`.
 */
import * as ChatTemplate from "./ChatTemplate.js"
import { CONTROL, type ControlName } from "./Encoding.js"
import type { Codec } from "./Tokenizer.js"

/** The R1-Zero instruction, verbatim from the paper. */
export const R1_ZERO_INSTRUCTION =
  "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."

/** The R1 instruction as a chat system turn (the R1-Zero sentence without the User/Assistant framing). */
export const SYSTEM_PROMPT =
  "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."

/** Which prompt format: the paper's R1-Zero text, ChatML turns, or the model's own chat template (`codec.chat`). */
export type Name = "r1-zero" | "chat" | "model"

/** One chat turn. */
export interface Message {
  readonly role: "system" | "user" | "assistant"
  readonly content: string
}

/** Options of the prompt builders. */
export interface PromptOptions {
  /** End the prompt with the `<think>` control id so the completion starts inside the reasoning (default off, as in the paper). */
  readonly startThink?: boolean
}

/**
 * The text the template opens every completion with: `<think>` under `startThink` (the prompt ends
 * with its control id), else nothing. Prompt batches record it (`Batch.withCompletionPrefix`) so
 * rewards read the completion as the template left it, never guessing from the question's text.
 */
export const completionPrefix = (options: PromptOptions): string => (options.startThink === true ? CONTROL.think : "")

/** Concatenates id runs and single ids into one array. */
export const concat = (parts: ReadonlyArray<Int32Array | number>): Int32Array => {
  let n = 0
  for (const p of parts) n += typeof p === "number" ? 1 : p.length
  const out = new Int32Array(n)
  let at = 0
  for (const p of parts) {
    if (typeof p === "number") out[at++] = p
    else {
      out.set(p, at)
      at += p.length
    }
  }
  return out
}

/** The R1-Zero prompt as text (all of it data). */
export const r1ZeroText = (question: string): string => `${R1_ZERO_INSTRUCTION} User: ${question}. Assistant:`

/**
 * A control tag as ids: its control id, or, in a tokenizer that has no such token (a Hugging Face
 * tokenizer without `<think>`), the tag's text encoded as ordinary text.
 */
export const control = (codec: Codec, name: ControlName): Int32Array | number => codec.specialIds[name] ?? codec.encode(CONTROL[name])

/** R1-Zero prompt ids, ending with `Assistant:` (and `<think>` when `startThink`). */
export const r1Zero = (codec: Codec, question: string, options: PromptOptions = {}): Int32Array =>
  concat(options.startThink === true ? [codec.encode(r1ZeroText(question)), control(codec, "think")] : [codec.encode(r1ZeroText(question))])

/** Chat prompt ids: each message as a ChatML turn, then the assistant's opening (and `<think>` when `startThink`). */
export const chat = (codec: Codec, messages: ReadonlyArray<Message>, options: PromptOptions = {}): Int32Array => {
  const imStart = control(codec, "imStart"), think = control(codec, "think")
  const eot = codec.specialIds.eot
  const newline = codec.encode("\n")
  const parts: Array<Int32Array | number> = []
  for (const m of messages) parts.push(imStart, codec.encode(`${m.role}\n${m.content}`), eot, newline)
  parts.push(imStart, codec.encode("assistant\n"))
  if (options.startThink === true) parts.push(think)
  return concat(parts)
}

const modelChat = (codec: Codec): ChatTemplate.Chat => {
  if (codec.chat === undefined) throw new Error(`tokenizer ${codec.name} has no chat template: the "model" prompt format needs tokenizer_config.json's chat_template`)
  return codec.chat
}

/**
 * Prompt ids for one task question in the named format (chat and model: the R1 system turn, then the
 * question as the user turn). "model" renders the model's own template; `startThink` does not apply
 * there (the template decides, see `ChatTemplate.r1Prompt`). Throws when "model" meets a codec without one.
 */
export const prompt = (codec: Codec, name: Name, question: string, options: PromptOptions = {}): Int32Array =>
  name === "r1-zero"
    ? r1Zero(codec, question, options)
    : name === "model"
    ? ChatTemplate.r1Prompt(codec, modelChat(codec), question).ids
    : chat(codec, [{ role: "system", content: SYSTEM_PROMPT }, { role: "user", content: question }], options)

/** The completion prefix of a prompt format for `codec` (`completionPrefix`, or what the model's template opens). */
export const promptPrefix = (codec: Codec, name: Name, options: PromptOptions = {}): string =>
  name === "model" ? ChatTemplate.r1Prompt(codec, modelChat(codec), "").completionPrefix : completionPrefix(options)

/**
 * Ids of a completion we wrote ourselves (SFT corpora): the control tags and end-of-turn in the
 * text become control ids, the text between them is encoded as ordinary text, and the end-of-turn
 * id is appended (the model learns to stop) unless the text already ends with it.
 */
export const completion = (codec: Codec, text: string): Int32Array => {
  const ids = codec.encodeTrusted(text)
  return ids.length > 0 && ids[ids.length - 1] === codec.specialIds.eot ? ids : concat([ids, codec.specialIds.eot])
}
