// Notion's MCP server (@notionhq/notion-mcp-server, pinned in package.json), unmodified, over
// stdio JSON-RPC, with BASE_URL pointed at the gateway. Calls its tools for the suite's mix and
// prints one JSON line per call: {"call", "ok", "isError", "code", "status", "text"}. Driven by
// tests/clients.rs.
//
//   node mcp.mjs http://127.0.0.1:PORT TOKEN
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import path from "node:path"

const [baseUrl, token] = process.argv.slice(2)
const here = path.dirname(fileURLToPath(import.meta.url))
const cli = path.join(here, "node_modules/@notionhq/notion-mcp-server/bin/cli.mjs")
const server = spawn(process.execPath, [cli], {
  env: { ...process.env, BASE_URL: baseUrl, NOTION_TOKEN: token },
  stdio: ["pipe", "pipe", "ignore"],
})
const pending = new Map()
createInterface({ input: server.stdout }).on("line", (line) => {
  let msg
  try {
    msg = JSON.parse(line)
  } catch {
    return
  }
  if (msg.id !== undefined && pending.has(msg.id)) {
    pending.get(msg.id)(msg)
    pending.delete(msg.id)
  }
})
let nextId = 1
function rpc(method, params) {
  const id = nextId++
  server.stdin.write(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n")
  return new Promise((resolve) => pending.set(id, resolve))
}

await rpc("initialize", {
  protocolVersion: "2025-06-18",
  capabilities: {},
  clientInfo: { name: "notion-gateway-suite", version: "1" },
})
server.stdin.write(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) + "\n")

const PAGE = "59833787-2cf9-4fdf-8782-e53db20768a5"
const title = [{ text: { content: "gateway suite" } }]
const calls = [
  ["API-get-self", {}],
  ["API-post-search", { query: "gateway" }],
  ["API-post-page", { parent: { page_id: PAGE }, properties: { title } }],
  ["API-retrieve-a-page", { page_id: PAGE }],
  ["API-patch-page", { page_id: PAGE, properties: { title } }],
  ["API-query-data-source", { data_source_id: PAGE }],
  [
    "API-patch-block-children",
    { block_id: PAGE, children: [{ type: "paragraph", paragraph: { rich_text: [{ type: "text", text: { content: "hi" } }] } }] },
  ],
  ["API-get-block-children", { block_id: PAGE }],
  ["API-create-a-comment", { parent: { page_id: PAGE }, rich_text: [{ type: "text", text: { content: "hi" } }] }],
  ["API-retrieve-a-comment", { block_id: PAGE }],
]
for (const [name, args] of calls) {
  const msg = await rpc("tools/call", { name, arguments: args })
  const line = { call: name }
  if (msg.error) {
    Object.assign(line, { ok: false, rpcError: msg.error.message })
  } else {
    const text = msg.result?.content?.[0]?.text ?? ""
    let body = null
    try {
      body = JSON.parse(text)
    } catch {}
    const failed = msg.result?.isError === true || body?.object === "error" || body?.status === "error"
    Object.assign(line, {
      ok: !failed,
      isError: msg.result?.isError ?? false,
      object: body?.object ?? null,
      code: body?.code ?? null,
      status: typeof body?.status === "number" ? body.status : null,
      text: text.slice(0, 300),
    })
  }
  console.log(JSON.stringify(line))
}
server.kill()
process.exit(0)
