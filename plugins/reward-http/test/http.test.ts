import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { Float32, Float64, Table, tableFromIPC, tableToIPC, Utf8, vectorFromArray } from "apache-arrow"
import { Conformance, Reward } from "@r1flow/core"
import { Schema } from "effect"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import plugin from "../src/index.js"
import * as HttpReward from "../src/HttpReward.js"

type Handler = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void

/** The scoring rule the test server implements: 1 when the completion contains the answer, else 0; null without an answer. */
const score = (completion: string, answer: string | null) => (answer === null ? null : completion.includes(answer) ? 1 : 0)

const arrow = (table: Table) => Buffer.from(tableToIPC(table, "stream"))

const scoring: Handler = (req, body, res) => {
  const t = tableFromIPC(body)
  const completions = t.getChild("completion")!
  const answers = t.getChild("answer")!
  const scores = Array.from({ length: t.numRows }, (_, i) => score(completions.get(i) as string, answers.get(i) as string | null))
  res.writeHead(200, { "content-type": HttpReward.ARROW_STREAM })
  res.end(arrow(new Table({ score: vectorFromArray(scores, new Float32()) })))
}

let server: Server
let url = ""
const requests: Array<{ contentType: string | undefined; columns: Array<string>; rows: number }> = []
let plan: Array<Handler> = []

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      const t = tableFromIPC(body)
      requests.push({ contentType: req.headers["content-type"], columns: t.schema.fields.map((f) => f.name), rows: t.numRows })
      ;(plan.shift() ?? scoring)(req, body, res)
    })
  })
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok))
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}/score`
})
afterAll(() => new Promise<void>((ok) => {
  server.closeAllConnections()
  server.close(() => ok())
}))

const reward = (extra: Record<string, unknown> = {}) =>
  HttpReward.make(Schema.decodeUnknownSync(HttpReward.Config)({ url, backoffMs: 10, ...extra }))

const rows: Array<Conformance.Row> = [
  { completion: "<answer>4</answer>", answer: "4", groupId: 0 },
  { completion: "<answer>5</answer>", answer: "4", groupId: 0 },
  { completion: "no idea", answer: null, groupId: 1 }
]

describe("reward-http against a server on 127.0.0.1", () => {
  test("posts an Arrow IPC stream and reads back the score column (null → NaN)", async () => {
    requests.length = 0
    expect(await Conformance.score(reward(), rows)).toEqual([1, 0, NaN])
    expect(requests).toEqual([{ contentType: HttpReward.ARROW_STREAM, columns: [...HttpReward.REQUEST_COLUMNS], rows: 3 }])
  })

  test("retries 503 and a timeout with backoff, then succeeds", async () => {
    requests.length = 0
    plan = [
      (_q, _b, res) => { res.writeHead(503); res.end("busy") },
      () => { /* never answers: the attempt times out */ },
      scoring
    ]
    expect(await Conformance.score(reward({ timeoutMs: 300 }), rows)).toEqual([1, 0, NaN])
    expect(requests.length).toBe(3)
  })

  test("gives up after the retries with a clear error", async () => {
    const fail: Handler = (_q, _b, res) => { res.writeHead(500, "Internal Server Error"); res.end("model crashed") }
    plan = [fail, fail, fail]
    await expect(Conformance.score(reward({ retries: 2 }), rows)).rejects.toThrow(/answered 500 Internal Server Error: model crashed \(after 3 attempts\)/)
    plan = []
  })

  test("a 4xx is not retried", async () => {
    requests.length = 0
    plan = [(_q, _b, res) => { res.writeHead(400, "Bad Request"); res.end("no such column") }]
    await expect(Conformance.score(reward(), rows)).rejects.toThrow(/answered 400 Bad Request: no such column$/)
    expect(requests.length).toBe(1)
  })

  test("a wrong number of scores, a missing column, a wrong type or a non-Arrow body is an error", async () => {
    const answer = (table: Table | string): Handler => (_q, _b, res) => { res.writeHead(200); res.end(typeof table === "string" ? table : arrow(table)) }
    plan = [answer(new Table({ score: vectorFromArray([1, 0], new Float32()) }))]
    await expect(Conformance.score(reward(), rows)).rejects.toThrow(/answered 2 scores for 3 rows/)
    plan = [answer(new Table({ reward: vectorFromArray([1, 0, 1], new Float32()) }))]
    await expect(Conformance.score(reward(), rows)).rejects.toThrow(/without a "score" column \(columns: reward\)/)
    plan = [answer(new Table({ score: vectorFromArray(["a", "b", "c"], new Utf8()) }))]
    await expect(Conformance.score(reward(), rows)).rejects.toThrow(/"score" column of type Utf8/)
    plan = [answer('{"scores": [1, 0, 1]}')]
    await expect(Conformance.score(reward(), rows)).rejects.toThrow(/not an Arrow IPC stream/)
    plan = [answer(new Table({ score: vectorFromArray([0.5, 0.25, 1], new Float64()) }))]
    expect(await Conformance.score(reward(), rows)).toEqual([0.5, 0.25, 1])
  })

  test("an unreachable server fails after its retries", async () => {
    const dead = HttpReward.make(Schema.decodeUnknownSync(HttpReward.Config)({ url: "http://127.0.0.1:1/score", retries: 1, backoffMs: 1 }))
    await expect(Conformance.score(dead, rows)).rejects.toThrow(/cannot reach http:\/\/127\.0\.0\.1:1\/score: .*\(after 2 attempts\)/)
  })

  test("the reward's abort signal stops the call without retrying", async () => {
    requests.length = 0
    plan = [() => {}]
    const controller = new AbortController()
    const input = Reward.withSignal(Reward.inputFromBatch(Conformance.makeBatch(rows)), controller.signal)
    setTimeout(() => controller.abort(), 100)
    await expect(reward({ timeoutMs: 10_000 }).score(input)).rejects.toThrow(/was aborted/)
    expect(requests.length).toBe(1)
    plan = []
  })

  test("a bad config is a clear error", () => {
    expect(() => Schema.decodeUnknownSync(HttpReward.Config)({ url: "ftp://x" })).toThrow()
    expect(() => Schema.decodeUnknownSync(HttpReward.Config)({ url, retries: -1 })).toThrow()
  })

  test("conformance", async () => {
    plan = []
    for (const r of await Conformance.run(plugin, { config: { url } })) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
  })
})
