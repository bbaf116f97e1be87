-- wrk script: POST one MCP tools/call (echo) per request in an existing session.
-- Environment: MCP_SESSION (the Mcp-Session-Id; empty for none).
local session = os.getenv("MCP_SESSION") or ""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
if session ~= "" then
  wrk.headers["Mcp-Session-Id"] = session
end
-- Ids continue from MCP_ID_BASE, so runs in one session never reuse a request id.
local n = tonumber(os.getenv("MCP_ID_BASE") or "0")
request = function()
  n = n + 1
  local body = '{"jsonrpc":"2.0","id":' .. n .. ',"method":"tools/call","params":{"name":"echo","arguments":{"message":"benchmark ' .. n .. '"}}}'
  return wrk.format(nil, nil, nil, body)
end
