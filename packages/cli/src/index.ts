/** @r1flow/cli: the `r1flow` command (see `Cli`). */
export * as Cli from "./Cli.js"
