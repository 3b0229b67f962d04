//! An MCP 2026-07-28 server on the official Rust SDK (`rmcp`), without the node library: it stands
//! for "any server" of the stateless era behind the edge. Streamable HTTP at /mcp; tasks through
//! the official tasks extension (`io.modelcontextprotocol/tasks`) kept by rmcp's in-memory
//! `TaskManager`, so a task lives in this one process and another process answers -32602 for it.
//! 2025-era clients are served too (rmcp's legacy session mode, its default).
//!
//! Tools:
//! - `whoami`: {"node", "boot"} as compact JSON text, a plain result.
//! - `slow`: runs `ms` milliseconds (default 2000) as a task when the request declares the tasks
//!   extension (synchronously otherwise); completes with {"node", "boot", "tool": "slow"}; stops
//!   as `cancelled` on `tasks/cancel`.
//! - `ask`: a task that asks the client for a name (an elicitation in the task's `inputRequests`,
//!   key "name", answered with `tasks/update`), then completes with {"node", "boot", "tool": "ask",
//!   "answer"}. Needs the tasks extension (-32021 without it).
//!
//! GET /healthz answers {"status": "up", "node", "boot"}.
//!
//!     rust-tasks-server --port 7301 --name rs-a [--host 127.0.0.1] [--poll-interval-ms 200]
//!                       [--task-ttl-ms 300000] [--json-response]
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ContentBlock, CreateTaskResult, GetTaskParams, GetTaskResult, Implementation, InputRequest,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    UpdateTaskParams,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::{json, Value};

mod flags;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

struct Args {
    port: u16,
    host: String,
    name: String,
    poll_interval_ms: u64,
    task_ttl_ms: u64,
    json_response: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        port: 0,
        host: "127.0.0.1".into(),
        name: String::new(),
        poll_interval_ms: 200,
        task_ttl_ms: rmcp::task_manager::DEFAULT_TASK_TTL_MS,
        json_response: false,
    };
    for (flag, value) in flags::flags(&["--json-response"])? {
        let Some(value) = value else {
            a.json_response = true; // the one switch
            continue;
        };
        let num = || flags::whole_number(&flag, &value);
        match flag.as_str() {
            "--port" => {
                a.port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("--port must be between 1 and 65535, got {value}"))?
            }
            "--host" => a.host = value.clone(),
            "--name" => a.name = value.clone(),
            "--poll-interval-ms" => a.poll_interval_ms = num()?,
            "--task-ttl-ms" => a.task_ttl_ms = num()?.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.port == 0 {
        return Err("--port is required".into());
    }
    if a.name.is_empty() {
        a.name = format!("rs-{}", a.port);
    }
    Ok(a)
}

#[derive(Clone)]
struct TaskServer {
    node: Arc<str>,
    boot: Arc<str>,
    tasks: TaskManager,
    options: TaskOptions,
}

fn text_result(value: Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(value.to_string())])
}

fn object_schema(properties: Value) -> JsonObject {
    match json!({"type": "object", "properties": properties}) {
        Value::Object(o) => o,
        _ => unreachable!(),
    }
}

/// The elicitation the `ask` task surfaces in its `inputRequests`.
fn ask_name_request() -> Result<InputRequest, McpError> {
    serde_json::from_value(json!({
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": "What is your name?",
            "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        }
    }))
    .map_err(|e| McpError::internal_error(e.to_string(), None))
}

impl TaskServer {
    fn identity(&self, tool: &str) -> Value {
        json!({"node": &*self.node, "boot": &*self.boot, "tool": tool})
    }

    fn slow(&self, ms: u64, as_task: bool) -> Result<CallToolResponse, McpError> {
        let done = self.identity("slow");
        if !as_task {
            return Ok(CallToolResponse::Complete(text_result(done)));
        }
        let task = self.tasks.spawn(self.options.clone(), move |ctx| {
            Box::pin(async move {
                tokio::select! {
                    _ = ctx.cancelled() => Err(TaskExit::Cancelled),
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(text_result(done)),
                }
            })
        });
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    fn ask(&self) -> Result<CallToolResponse, McpError> {
        let request = ask_name_request()?;
        let mut done = self.identity("ask");
        let task = self.tasks.spawn(self.options.clone(), move |ctx| {
            Box::pin(async move {
                // A cancel that came before the question was asked ends the task too (tasks/cancel
                // drops only questions already pending, which then end as Cancelled).
                let response = tokio::select! {
                    _ = ctx.cancelled() => return Err(TaskExit::Cancelled),
                    answer = ctx.request_input("name", request) => answer?,
                };
                let answer = match response.get("action").and_then(Value::as_str) {
                    Some("accept") => response
                        .pointer("/content/name")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            McpError::invalid_params(
                                "the answer to \"name\" has no content.name",
                                None,
                            )
                        })?,
                    other => format!("({})", other.unwrap_or("no action")),
                };
                done["answer"] = json!(answer);
                Ok(text_result(done))
            })
        });
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }
}

impl ServerHandler for TaskServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("rust-tasks-test-server", "0.1.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "whoami",
                "Node name and boot id of this process",
                object_schema(json!({})),
            ),
            Tool::new(
                "slow",
                "Runs `ms` milliseconds (default 2000) as a task, then names this node",
                object_schema(json!({"ms": {"type": "integer", "minimum": 0}})),
            ),
            Tool::new(
                "ask",
                "A task that asks the client for a name (tasks/update), then names this node",
                object_schema(json!({})),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // SEP-2663: a task only for a request that declared the extension.
        let declared_tasks = context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        match request.name.as_ref() {
            "whoami" => Ok(CallToolResponse::Complete(text_result(
                json!({"node": &*self.node, "boot": &*self.boot}),
            ))),
            "slow" => {
                let ms = match request.arguments.as_ref().and_then(|a| a.get("ms")) {
                    None => 2000,
                    Some(v) => v.as_u64().ok_or_else(|| {
                        McpError::invalid_params("ms must be a whole number", None)
                    })?,
                };
                self.slow(ms, declared_tasks)
            }
            "ask" if !declared_tasks => Err(McpError::missing_required_client_capability(
                ClientCapabilities::builder().enable_tasks().build(),
            )),
            "ask" => self.ask(),
            other => Err(McpError::invalid_params(
                format!("unknown tool {other}"),
                None,
            )),
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        Ok(GetTaskResult::new(self.tasks.get_task(&request.task_id)?))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.tasks
            .update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.tasks.cancel_task(&request.task_id)
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("static response parts")
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rust-tasks-server: {e}");
            std::process::exit(2);
        }
    };
    let boot = uuid::Uuid::new_v4().simple().to_string();
    let handler = TaskServer {
        node: args.name.clone().into(),
        boot: boot.clone().into(),
        tasks: TaskManager::new(),
        options: TaskOptions::new()
            .with_ttl_ms(args.task_ttl_ms)
            .with_poll_interval_ms(args.poll_interval_ms),
    };
    // Behind a proxy the Host header is the proxy's: the SDK's loopback-only Host check would refuse it.
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_json_response(args.json_response);
    let mcp = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let listener = match tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "rust-tasks-server: cannot listen on {}:{}: {e}",
                args.host, args.port
            );
            std::process::exit(1);
        }
    };
    let health = Arc::new(json!({"status": "up", "node": args.name, "boot": boot}));
    tokio::spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        std::process::exit(0);
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let mcp = mcp.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let mcp = mcp.clone();
                let health = health.clone();
                async move {
                    let response = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/healthz") => {
                            json_response(StatusCode::OK, (*health).clone())
                        }
                        (_, "/mcp") => mcp.handle(req).await,
                        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
