//! The task client driver of the tests, on the official Rust SDK (`rmcp`) with the tasks extension
//! declared on every request. For each of `--tasks` tasks, one at a time: `tools/call` (`--tool`,
//! `slow` or `ask`) answered by a task, then `tasks/get` every `pollIntervalMs` until the task is
//! terminal; the input requests of an `input_required` task are answered with `tasks/update`
//! (`--answer`); every `--cancel-every`-th task gets `tasks/cancel` right after it is created.
//! `tasks/*` go to `--poll-url` (default: `--url`).
//!
//! rmcp builds every request (per-request `_meta`, `MCP-Protocol-Version`, `Mcp-Method`, and
//! `Mcp-Name: <taskId>` on `tasks/*`); the HTTP under it is this file's `CallClient`, so that each
//! request goes on a new connection (an L4 balancer may pick another proxy for each), carries its
//! own `X-E2e-Call` id, and its HTTP status is known even when the body is a JSON-RPC error.
//!
//! Prints one JSON line per HTTP request ("ev": "call": call id, JSON-RPC method, task number and
//! taskId, HTTP status, JSON-RPC error code and message, transport error, the task status and node a
//! result names), one per task ("ev": "task"), and a summary ("ev": "summary"). Exits 1 when a call
//! or a task failed, 2 on bad flags.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use http::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    ClientJsonRpcMessage, GetTaskParams, Implementation, JsonObject, ProtocolVersion,
    ServerJsonRpcMessage, TaskPayload, TaskStatus, UpdateTaskParams,
};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceError};
use serde_json::{json, Value};

mod flags;

/// Request header that names a call in Traefik's access log (dev/traefik-config.ts CALL_ID_HEADER).
const CALL_ID_HEADER: &str = "x-e2e-call";

struct Args {
    url: String,
    poll_url: String,
    tasks: usize,
    tool: String,
    ms: u64,
    cancel_every: usize,
    answer: String,
    poll_ms: Option<u64>,
    timeout: Duration,
    max_polls: usize,
    call_prefix: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        poll_url: String::new(),
        tasks: 1,
        tool: "slow".into(),
        ms: 2000,
        cancel_every: 0,
        answer: "e2e".into(),
        poll_ms: None,
        timeout: Duration::from_secs(10),
        max_polls: 600,
        call_prefix: format!("rs{}", std::process::id()),
    };
    for (flag, value) in flags::flags(&[])? {
        let value = value.unwrap_or_default();
        let num = || flags::whole_number(&flag, &value);
        match flag.as_str() {
            "--url" => a.url = value.clone(),
            "--poll-url" => a.poll_url = value.clone(),
            "--tasks" => a.tasks = num()? as usize,
            "--tool" if value == "slow" || value == "ask" => a.tool = value.clone(),
            "--tool" => return Err(format!("--tool must be slow or ask, got {value}")),
            "--ms" => a.ms = num()?,
            "--cancel-every" => a.cancel_every = num()? as usize,
            "--answer" => a.answer = value.clone(),
            "--poll-ms" => a.poll_ms = Some(num()?),
            "--timeout-ms" => a.timeout = Duration::from_millis(num()?.max(1)),
            "--max-polls" => a.max_polls = (num()? as usize).max(1),
            "--call-prefix" => a.call_prefix = value.clone(),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    if a.poll_url.is_empty() {
        a.poll_url = a.url.clone();
    }
    Ok(a)
}

/// One HTTP request as the transport saw it.
#[derive(Debug, Clone)]
struct Exchange {
    call: String,
    rpc: String,
    status: Option<u16>,
    /// "json" or "sse": how the answer came.
    body: Option<&'static str>,
    transport_error: Option<String>,
}

/// rmcp's HTTP client interface over reqwest, one new connection per request (no idle pool),
/// stamping each request with its call id and recording its HTTP status.
#[derive(Clone)]
struct CallClient {
    http: reqwest::Client,
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl CallClient {
    fn record(&self, e: Exchange) {
        self.log.lock().expect("exchange log").push(e);
    }
    fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.log.lock().expect("exchange log"))
    }
}

fn rpc_method(message: &ClientJsonRpcMessage) -> String {
    serde_json::to_value(message)
        .ok()
        .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "(response)".into())
}

fn media_type_is(content_type: Option<&str>, want: &str) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(want))
}

impl StreamableHttpClient for CallClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        _limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let call = format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed) + 1
        );
        let mut exchange = Exchange {
            call: call.clone(),
            rpc: rpc_method(&message),
            status: None,
            body: None,
            transport_error: None,
        };
        let mut request = self
            .http
            .post(uri.as_ref())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header(CALL_ID_HEADER, call);
        // rmcp's own headers: MCP-Protocol-Version, Mcp-Method, Mcp-Name (taskId on tasks/*).
        for (name, value) in custom_headers {
            request = request.header(name, value);
        }
        if let Some(id) = session_id {
            request = request.header("mcp-session-id", id.as_ref());
        }
        let body = serde_json::to_vec(&message).expect("a JSON-RPC message serializes");
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                exchange.transport_error = Some(e.to_string());
                self.record(exchange);
                return Err(StreamableHttpError::Client(e));
            }
        };
        let status = response.status();
        exchange.status = Some(status.as_u16());
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::NO_CONTENT {
            self.record(exchange);
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status.is_success() && media_type_is(content_type.as_deref(), "text/event-stream") {
            exchange.body = Some("sse");
            self.record(exchange);
            let events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream()).boxed();
            return Ok(StreamableHttpPostResponse::Sse(events, session));
        }
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                exchange.transport_error = Some(e.to_string());
                self.record(exchange);
                return Err(StreamableHttpError::Client(e));
            }
        };
        // A JSON-RPC answer, whatever the status: a 4xx's JSON-RPC error reaches the caller as such.
        if media_type_is(content_type.as_deref(), "application/json") {
            if let Ok(parsed) = serde_json::from_slice::<ServerJsonRpcMessage>(&bytes) {
                exchange.body = Some("json");
                self.record(exchange);
                return Ok(StreamableHttpPostResponse::Json(parsed, session));
            }
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        exchange.transport_error = Some(format!("HTTP {status}: {text}"));
        self.record(exchange);
        Err(StreamableHttpError::UnexpectedServerResponse(
            format!("HTTP {status}: {text}").into(),
        ))
    }

    async fn delete_session(
        &self,
        _uri: Arc<str>,
        _session_id: Arc<str>,
        _auth_header: Option<String>,
        _custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        Ok(()) // 2026-07-28 has no sessions
    }

    async fn get_stream(
        &self,
        _uri: Arc<str>,
        _session_id: Option<Arc<str>>,
        _last_event_id: Option<String>,
        _auth_header: Option<String>,
        _custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<
        futures::stream::BoxStream<'static, Result<sse_stream::Sse, SseError>>,
        StreamableHttpError<Self::Error>,
    > {
        Err(StreamableHttpError::ServerDoesNotSupportSse) // 2026-07-28 has no GET stream
    }
}

type Client = RunningService<RoleClient, ClientConfig>;

/// One rmcp client (one lifecycle) on `url`, over `http`.
async fn connect(http: &CallClient, url: &str, timeout: Duration) -> Result<Client, String> {
    let info = ClientConfig::new(
        ClientCapabilities::builder()
            .enable_elicitation()
            .enable_tasks()
            .build(),
        Implementation::new("rust-tasks-e2e-client", "0.1.0"),
    );
    let transport = StreamableHttpClientTransport::with_client(
        http.clone(),
        StreamableHttpClientTransportConfig::with_uri(url),
    );
    let lifecycle = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    match tokio::time::timeout(timeout, info.serve_with_lifecycle(transport, lifecycle)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout: server/discover".into()),
    }
}

struct Run {
    start: Instant,
    epoch_ms: f64,
    http: CallClient,
    failed_calls: usize,
    calls: usize,
    by_method: BTreeMap<String, (usize, usize)>,
}

/// What a call's caller learnt beyond the HTTP exchange.
#[derive(Default)]
struct Outcome {
    code: Option<i64>,
    message: Option<String>,
    error: Option<String>,
    task_status: Option<String>,
    node: Option<String>,
    /// A failure the HTTP exchange does not show (a wrong result shape).
    failed: bool,
}

impl Outcome {
    fn from_service_error(e: &ServiceError) -> Self {
        match e {
            ServiceError::McpError(d) => Outcome {
                code: Some(i64::from(d.code.0)),
                message: Some(d.message.to_string()),
                ..Default::default()
            },
            other => Outcome {
                error: Some(other.to_string()),
                ..Default::default()
            },
        }
    }
    fn ok(&self) -> bool {
        !self.failed && self.code.is_none() && self.error.is_none()
    }
}

/// What a tool result says: its first text content is the tools' JSON ({"node", "boot", ...}).
fn info_of(result: &JsonObject) -> Option<Value> {
    let text = result.get("content")?.get(0)?.get("text")?.as_str()?;
    serde_json::from_str(text).ok()
}

fn node_of(result: &JsonObject) -> Option<String> {
    info_of(result)?.get("node")?.as_str().map(str::to_owned)
}

fn status_name(s: TaskStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Run {
    fn ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Prints the lines of the HTTP requests one SDK call made.
    fn emit(&mut self, t0: f64, task: Option<usize>, task_id: Option<&str>, outcome: &Outcome) {
        let exchanges = self.http.take();
        let ms = self.ms() - t0;
        if exchanges.is_empty() {
            // The SDK failed before any request left: still one line, so nothing is hidden.
            self.print_call(t0, ms, task, task_id, None, outcome);
        }
        let n = exchanges.len();
        for (i, e) in exchanges.into_iter().enumerate() {
            // The SDK's outcome belongs to the last request of the call.
            let last = i + 1 == n;
            let none = Outcome::default();
            self.print_call(
                t0,
                ms,
                task,
                task_id,
                Some(e),
                if last { outcome } else { &none },
            );
        }
    }

    fn print_call(
        &mut self,
        t0: f64,
        ms: f64,
        task: Option<usize>,
        task_id: Option<&str>,
        e: Option<Exchange>,
        o: &Outcome,
    ) {
        let (call, rpc, status, body, transport) = match e {
            Some(e) => (Some(e.call), e.rpc, e.status, e.body, e.transport_error),
            None => (None, "(none sent)".into(), None, None, None),
        };
        let http_ok = status.is_some_and(|s| (200..300).contains(&s));
        let ok = o.ok() && transport.is_none() && http_ok;
        self.calls += 1;
        let entry = self.by_method.entry(rpc.clone()).or_default();
        entry.0 += 1;
        if !ok {
            self.failed_calls += 1;
            entry.1 += 1;
        }
        let line = json!({
            "ev": "call", "call": call, "method": rpc, "task": task, "taskId": task_id,
            "status": status, "body": body, "code": o.code, "message": o.message,
            "error": transport.or_else(|| o.error.clone()), "taskStatus": o.task_status, "node": o.node,
            "ok": ok, "at": self.epoch_ms + t0, "ms": ms,
        });
        println!("{line}");
    }
}

async fn client_for<'a>(
    slot: &'a mut Option<Client>,
    run: &mut Run,
    url: &str,
    timeout: Duration,
) -> Option<&'a Client> {
    if slot.is_none() {
        let t0 = run.ms();
        let outcome = match connect(&run.http, url, timeout).await {
            Ok(c) => {
                *slot = Some(c);
                Outcome::default()
            }
            Err(e) => Outcome {
                error: Some(e),
                ..Default::default()
            },
        };
        run.emit(t0, None, None, &outcome);
    }
    slot.as_ref()
}

/// A closed transport ends that client: the next call connects again.
fn drop_if_closed(slot: &mut Option<Client>, e: &ServiceError) {
    if matches!(e, ServiceError::TransportClosed) {
        *slot = None;
    }
}

/// The outcome of a request answered by an empty acknowledgement (tasks/cancel, tasks/update).
async fn acknowledged(
    slot: &mut Option<Client>,
    timeout: Duration,
    method: &str,
    request: impl std::future::Future<Output = Result<(), ServiceError>>,
) -> Outcome {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(())) => Outcome::default(),
        Ok(Err(e)) => {
            drop_if_closed(slot, &e);
            Outcome::from_service_error(&e)
        }
        Err(_) => Outcome {
            error: Some(format!("timeout: {method}")),
            ..Default::default()
        },
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rust-tasks-client: {e}");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    // No idle connections kept: every request opens its own. No cookie store, like most MCP clients.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let http = CallClient {
        http,
        prefix: args.call_prefix.clone().into(),
        next: Arc::new(AtomicU64::new(0)),
        log: Arc::default(),
    };
    let mut run = Run {
        start,
        epoch_ms,
        http,
        failed_calls: 0,
        calls: 0,
        by_method: BTreeMap::new(),
    };
    let mut creator: Option<Client> = None;
    let mut poller_own: Option<Client> = None;
    let same_url = args.poll_url == args.url;
    let (mut completed, mut cancelled, mut failed_tasks) = (0usize, 0usize, 0usize);
    let mut nodes: BTreeMap<String, usize> = BTreeMap::new();

    for i in 1..=args.tasks {
        let task_t0 = run.ms();
        // tools/call: a task handle is expected.
        let mut params = CallToolRequestParams::new(args.tool.clone());
        if args.tool == "slow" {
            let mut arguments = JsonObject::new();
            arguments.insert("ms".into(), json!(args.ms));
            params = params.with_arguments(arguments);
        }
        let Some(client) = client_for(&mut creator, &mut run, &args.url, args.timeout).await else {
            failed_tasks += 1;
            println!(
                "{}",
                json!({"ev": "task", "task": i, "ok": false, "error": "no client"})
            );
            continue;
        };
        let t0 = run.ms();
        let created =
            tokio::time::timeout(args.timeout, client.peer().call_tool_once(params)).await;
        let (task_id, poll_ms) = match created {
            Ok(Ok(CallToolResponse::Task(t))) => {
                let o = Outcome {
                    task_status: Some(status_name(t.task.status)),
                    ..Default::default()
                };
                run.emit(t0, Some(i), Some(&t.task.task_id), &o);
                (
                    t.task.task_id.clone(),
                    args.poll_ms.or(t.task.poll_interval_ms).unwrap_or(1000),
                )
            }
            Ok(Ok(other)) => {
                let o = Outcome {
                    error: Some(format!("expected a task, got {other:?}")),
                    failed: true,
                    ..Default::default()
                };
                run.emit(t0, Some(i), None, &o);
                failed_tasks += 1;
                println!(
                    "{}",
                    json!({"ev": "task", "task": i, "ok": false, "error": "no task created"})
                );
                continue;
            }
            Ok(Err(e)) => {
                run.emit(t0, Some(i), None, &Outcome::from_service_error(&e));
                drop_if_closed(&mut creator, &e);
                failed_tasks += 1;
                println!(
                    "{}",
                    json!({"ev": "task", "task": i, "ok": false, "error": "no task created"})
                );
                continue;
            }
            Err(_) => {
                run.emit(
                    t0,
                    Some(i),
                    None,
                    &Outcome {
                        error: Some("timeout: tools/call".into()),
                        ..Default::default()
                    },
                );
                failed_tasks += 1;
                println!(
                    "{}",
                    json!({"ev": "task", "task": i, "ok": false, "error": "no task created"})
                );
                continue;
            }
        };

        let cancel = args.cancel_every > 0 && i % args.cancel_every == 0;
        let mut answered: BTreeSet<String> = BTreeSet::new();
        let mut final_status: Option<String> = None;
        let mut final_node: Option<String> = None;
        let mut final_result: Option<Value> = None;
        let mut task_error: Option<String> = None;
        let mut polls = 0usize;
        let mut cancel_pending = cancel;
        loop {
            let poller_slot = if same_url {
                &mut creator
            } else {
                &mut poller_own
            };
            let Some(poller) =
                client_for(poller_slot, &mut run, &args.poll_url, args.timeout).await
            else {
                task_error = Some("no client".into());
                break;
            };
            let peer = poller.peer().clone();
            if cancel_pending {
                cancel_pending = false;
                let t0 = run.ms();
                let cancel = peer.cancel_task(CancelTaskParams::new(task_id.clone()));
                let o = acknowledged(poller_slot, args.timeout, "tasks/cancel", cancel).await;
                let ok = o.ok();
                run.emit(t0, Some(i), Some(&task_id), &o);
                if !ok {
                    task_error = Some("tasks/cancel failed".into());
                    break;
                }
                continue;
            }
            if polls >= args.max_polls {
                task_error = Some(format!("not terminal after {polls} polls"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(poll_ms)).await;
            polls += 1;
            let t0 = run.ms();
            let got = tokio::time::timeout(
                args.timeout,
                peer.get_task(GetTaskParams::new(task_id.clone())),
            )
            .await;
            let info = match got {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    drop_if_closed(poller_slot, &e);
                    run.emit(
                        t0,
                        Some(i),
                        Some(&task_id),
                        &Outcome::from_service_error(&e),
                    );
                    // A spec client abandons a task on an error (-32602: unknown or expired).
                    task_error = Some(format!("tasks/get failed: {e}"));
                    break;
                }
                Err(_) => {
                    run.emit(
                        t0,
                        Some(i),
                        Some(&task_id),
                        &Outcome {
                            error: Some("timeout: tasks/get".into()),
                            ..Default::default()
                        },
                    );
                    task_error = Some("tasks/get timed out".into());
                    break;
                }
            };
            let status = info.task.status();
            let mut o = Outcome {
                task_status: Some(status_name(status)),
                ..Default::default()
            };
            if let TaskPayload::Completed { result } = &info.task.payload {
                o.node = node_of(result);
                final_result = info_of(result);
            }
            run.emit(t0, Some(i), Some(&task_id), &o);
            match &info.task.payload {
                TaskPayload::InputRequired { input_requests } => {
                    let mut responses = BTreeMap::new();
                    for key in input_requests.keys() {
                        if answered.insert(key.clone()) {
                            responses.insert(
                                key.clone(),
                                json!({"action": "accept", "content": {"name": args.answer}}),
                            );
                        }
                    }
                    if responses.is_empty() {
                        continue;
                    }
                    let t0 = run.ms();
                    let update =
                        peer.update_task(UpdateTaskParams::new(task_id.clone(), responses));
                    let o = acknowledged(poller_slot, args.timeout, "tasks/update", update).await;
                    let ok = o.ok();
                    run.emit(t0, Some(i), Some(&task_id), &o);
                    if !ok {
                        task_error = Some("tasks/update failed".into());
                        break;
                    }
                }
                TaskPayload::Failed { error } => {
                    final_status = Some("failed".into());
                    task_error = Some(format!("task failed: {}", Value::Object(error.clone())));
                    break;
                }
                _ if status.is_terminal() => {
                    final_status = Some(status_name(status));
                    final_node = o.node.clone();
                    break;
                }
                _ => {}
            }
        }
        let expected = if cancel { "cancelled" } else { "completed" };
        let ok = task_error.is_none()
            && final_status.as_deref() == Some(expected)
            && (cancel || final_node.is_some());
        match (ok, final_status.as_deref()) {
            (true, Some("cancelled")) => cancelled += 1,
            (true, _) => completed += 1,
            _ => failed_tasks += 1,
        }
        if let Some(n) = &final_node {
            *nodes.entry(n.clone()).or_default() += 1;
        }
        let line = json!({
            "ev": "task", "task": i, "taskId": task_id, "ok": ok, "cancelled": cancel, "status": final_status,
            "node": final_node, "result": final_result, "polls": polls, "error": task_error, "at": run.epoch_ms + task_t0, "ms": run.ms() - task_t0,
        });
        println!("{line}");
    }

    let by_method: serde_json::Map<String, Value> = run
        .by_method
        .iter()
        .map(|(m, (calls, failed))| (m.clone(), json!({"calls": calls, "failed": failed})))
        .collect();
    let summary = json!({
        "ev": "summary", "tasks": args.tasks, "completed": completed, "cancelled": cancelled,
        "failedTasks": failed_tasks, "calls": run.calls, "failedCalls": run.failed_calls,
        "byMethod": by_method, "nodes": nodes, "ms": run.ms(),
    });
    println!("{summary}");
    for c in [creator.take(), poller_own.take()].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.cancel()).await;
    }
    std::process::exit(if run.failed_calls == 0 && failed_tasks == 0 {
        0
    } else {
        1
    });
}
