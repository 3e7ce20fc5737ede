/** @r1flow/tokenizer: tiktoken tokenization stages, compact vocabularies and the R1 reasoning template. */
export * as ChatTemplate from "./ChatTemplate.js"
export * as Compact from "./Compact.js"
export * as Encoding from "./Encoding.js"
export * as HfTokenizer from "./HfTokenizer.js"
export * as Segments from "./Segments.js"
export * as Template from "./Template.js"
export * as Tokenize from "./Tokenize.js"
export { type Codec, type Decoded, Tokenizer, TokenizerError } from "./Tokenizer.js"
