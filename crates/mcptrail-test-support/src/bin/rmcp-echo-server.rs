//! `rmcp-echo-server`: a minimal stdio MCP server built on the official Rust
//! SDK (`rmcp`), used as the peer in mcptrail's integration tests and as the
//! server in the end-to-end latency bench (`mcp-bench`).
//!
//! Tools: `echo {text}` (returns `text`), `add {a,b}` (returns the sum),
//! `big {bytes}` (returns that many `x`), `fail {}` (returns a result with
//! `isError: true`), `slow {ms}` (sleeps, then returns `"done"`). Also one
//! prompt (`greeting {name}`) and one resource (`mcptrail://echo/readme`).
//!
//! The handler is written against `ServerHandler` by hand (no macros) to keep
//! the dependency set small; it runs on a current-thread tokio runtime and
//! uses rmcp's non-blocking pipe stdio transport when stdin/stdout are pipes.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, JsonObject, ListPromptsResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, Prompt, PromptArgument,
    PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, Role, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

const RESOURCE_URI: &str = "mcptrail://echo/readme";
const RESOURCE_TEXT: &str = "rmcp-echo-server: a test peer for mcptrail.\n";
/// Upper bound for `big {bytes}` so a typo cannot exhaust memory.
const MAX_BIG_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Clone)]
struct EchoServer {
    tools: Arc<Vec<Tool>>,
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        other => unreachable!("tool schema must be an object, got {other}"),
    }
}

impl EchoServer {
    fn new() -> Self {
        let tools = vec![
            Tool::new(
                "echo",
                "Return `text` unchanged as one text content block.",
                schema(json!({
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"]
                })),
            ),
            Tool::new(
                "add",
                "Return the sum of `a` and `b` as text.",
                schema(json!({
                    "type": "object",
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"]
                })),
            ),
            Tool::new(
                "big",
                "Return one text content block made of `bytes` 'x' characters.",
                schema(json!({
                    "type": "object",
                    "properties": {"bytes": {"type": "integer", "minimum": 0}},
                    "required": ["bytes"]
                })),
            ),
            Tool::new(
                "fail",
                "Return a tool result with isError: true.",
                schema(json!({"type": "object", "properties": {}})),
            ),
            Tool::new(
                "slow",
                "Sleep `ms` milliseconds, then return \"done\".",
                schema(json!({
                    "type": "object",
                    "properties": {"ms": {"type": "integer", "minimum": 0}},
                    "required": ["ms"]
                })),
            ),
        ];
        Self {
            tools: Arc::new(tools),
        }
    }
}

fn arg<'a>(args: &'a Option<JsonObject>, name: &str) -> Result<&'a Value, McpError> {
    args.as_ref()
        .and_then(|a| a.get(name))
        .ok_or_else(|| McpError::invalid_params(format!("missing argument `{name}`"), None))
}

fn u64_arg(args: &Option<JsonObject>, name: &str) -> Result<u64, McpError> {
    arg(args, name)?.as_u64().ok_or_else(|| {
        McpError::invalid_params(
            format!("argument `{name}` must be a non-negative integer"),
            None,
        )
    })
}

fn number_arg(value: &Value, name: &str) -> Result<NumberArg, McpError> {
    if let Some(i) = value.as_i64() {
        Ok(NumberArg::Int(i))
    } else if let Some(f) = value.as_f64() {
        Ok(NumberArg::Float(f))
    } else {
        Err(McpError::invalid_params(
            format!("argument `{name}` must be a number"),
            None,
        ))
    }
}

enum NumberArg {
    Int(i64),
    Float(f64),
}

fn add(a: NumberArg, b: NumberArg) -> String {
    let as_f64 = |n: &NumberArg| match *n {
        NumberArg::Int(i) => i as f64,
        NumberArg::Float(f) => f,
    };
    match (&a, &b) {
        (NumberArg::Int(x), NumberArg::Int(y)) => match x.checked_add(*y) {
            Some(sum) => sum.to_string(),
            None => (as_f64(&a) + as_f64(&b)).to_string(),
        },
        _ => (as_f64(&a) + as_f64(&b)).to_string(),
    }
}

impl ServerHandler for EchoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            "rmcp-echo-server",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions("Test peer for mcptrail: echo, add, big, fail, slow.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = &request.arguments;
        let result = match request.name.as_ref() {
            "echo" => {
                let text = arg(args, "text")?.as_str().ok_or_else(|| {
                    McpError::invalid_params("argument `text` must be a string", None)
                })?;
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            "add" => {
                let a = number_arg(arg(args, "a")?, "a")?;
                let b = number_arg(arg(args, "b")?, "b")?;
                CallToolResult::success(vec![ContentBlock::text(add(a, b))])
            }
            "big" => {
                let bytes = u64_arg(args, "bytes")?;
                if bytes > MAX_BIG_BYTES {
                    return Err(McpError::invalid_params(
                        format!("`bytes` must be at most {MAX_BIG_BYTES}"),
                        None,
                    ));
                }
                let len = usize::try_from(bytes)
                    .map_err(|_| McpError::invalid_params("`bytes` too large", None))?;
                CallToolResult::success(vec![ContentBlock::text("x".repeat(len))])
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("fail: requested failure")]),
            "slow" => {
                let ms = u64_arg(args, "ms")?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                CallToolResult::success(vec![ContentBlock::text("done")])
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool `{other}`"),
                    None,
                ))
            }
        };
        Ok(result.into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "greeting",
            Some("A one-message greeting for `name`."),
            Some(vec![PromptArgument::new("name")
                .with_description("who to greet")
                .with_required(true)]),
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if request.name != "greeting" {
            return Err(McpError::invalid_params(
                format!("unknown prompt `{}`", request.name),
                None,
            ));
        }
        let name = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("world");
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("Hello, {name}!"),
        )])
        .with_description("greeting")
        .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![Resource::new(
            RESOURCE_URI,
            "readme",
        )
        .with_mime_type("text/plain")]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri != RESOURCE_URI {
            return Err(McpError::resource_not_found(
                format!("no resource {}", request.uri),
                None,
            ));
        }
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(RESOURCE_TEXT, RESOURCE_URI).with_mime_type("text/plain")
        ])
        .into())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let service = EchoServer::new()
        .serve(rmcp::transport::stdio_pipes())
        .await
        .map_err(|e| anyhow::anyhow!("rmcp-echo-server: initialization failed: {e}"))?;
    service
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("rmcp-echo-server: service task failed: {e}"))?;
    Ok(())
}
