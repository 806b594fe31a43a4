// The official JavaScript SDK (@notionhq/client, pinned in package.json), unmodified, with its
// base URL pointed at the gateway. Runs the suite's mix of calls and prints one JSON line per
// call: {"call", "ok", "type", "code", "status", "message", "count"}. Driven by tests/clients.rs.
//
//   node js_sdk.mjs http://127.0.0.1:PORT TOKEN
import {
  Client,
  LogLevel,
  APIResponseError,
  UnknownHTTPResponseError,
  RequestTimeoutError,
  collectPaginatedAPI,
} from "@notionhq/client"

const [baseUrl, auth] = process.argv.slice(2)
const notion = new Client({ auth, baseUrl, logLevel: LogLevel.ERROR })
const PAGE = "59833787-2cf9-4fdf-8782-e53db20768a5"
const title = { title: [{ text: { content: "gateway suite" } }] }
const paragraph = {
  object: "block",
  type: "paragraph",
  paragraph: { rich_text: [{ type: "text", text: { content: "hello" } }] },
}

async function run(call, f) {
  try {
    const value = await f()
    const line = { call, ok: true }
    if (Array.isArray(value)) line.count = value.length
    console.log(JSON.stringify(line))
  } catch (e) {
    let type = "other"
    if (APIResponseError.isAPIResponseError(e)) type = "APIResponseError"
    else if (UnknownHTTPResponseError.isUnknownHTTPResponseError(e)) type = "UnknownHTTPResponseError"
    else if (RequestTimeoutError.isRequestTimeoutError(e)) type = "RequestTimeoutError"
    console.log(
      JSON.stringify({
        call,
        ok: false,
        type,
        code: e.code ?? null,
        status: e.status ?? null,
        message: String(e.message).slice(0, 300),
        request_id: e.request_id ?? null,
      })
    )
  }
}

await run("users.me", () => notion.users.me({}))
await run("search", () => notion.search({ query: "gateway" }))
await run("pages.create", () =>
  notion.pages.create({ parent: { page_id: PAGE }, properties: { title } })
)
await run("pages.retrieve", () => notion.pages.retrieve({ page_id: PAGE }))
await run("pages.update", () =>
  notion.pages.update({ page_id: PAGE, properties: { title } })
)
await run("dataSources.query (collectPaginatedAPI)", () =>
  collectPaginatedAPI(notion.dataSources.query, { data_source_id: PAGE })
)
await run("blocks.children.append", () =>
  notion.blocks.children.append({ block_id: PAGE, children: [paragraph] })
)
await run("blocks.children.list (collectPaginatedAPI)", () =>
  collectPaginatedAPI(notion.blocks.children.list, { block_id: PAGE })
)
await run("comments.create", () =>
  notion.comments.create({
    parent: { page_id: PAGE },
    rich_text: [{ type: "text", text: { content: "hi" } }],
  })
)
await run("comments.list", () => notion.comments.list({ block_id: PAGE }))
await run("fileUploads.create", () =>
  notion.fileUploads.create({ mode: "single_part", filename: "suite.bin", content_type: "application/octet-stream" })
)
await run("fileUploads.send (300 KB)", () =>
  notion.fileUploads.send({
    file_upload_id: "59833787-2cf9-4fdf-8782-000000000700",
    file: { filename: "suite.bin", data: new Blob([new Uint8Array(300 * 1024)]) },
  })
)
