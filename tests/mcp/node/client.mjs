// Calls MCP tools with the official TypeScript SDK client over streamable HTTP.
// Usage: node client.mjs URL TOKEN STEPS_JSON
//   STEPS_JSON: [{"tool": name, "args": {...}}, ...] or [{"list": true}]
// Prints one JSON document: {"results": [...]} or {"error": message}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, stepsJson] = process.argv.slice(2);
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: "visual-runtime-test", version: "1.0.0" });
try {
  await client.connect(transport);
  const results = [];
  for (const step of JSON.parse(stepsJson)) {
    if (step.list) {
      const listed = await client.listTools();
      results.push({ tools: listed.tools.map((t) => t.name) });
    } else {
      results.push(await client.callTool({ name: step.tool, arguments: step.args }));
    }
  }
  console.log(JSON.stringify({ results }));
  await client.close();
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.message ? e.message : e), code: e?.code ?? null }));
  process.exitCode = 1;
}
