//! The Rust SDK client of the end-to-end suite: runs sessions through the official `rmcp`
//! Streamable HTTP client (reqwest backend, default transport settings) and prints one JSON line
//! per operation (initialize, whoami, counter calls): "at" is the wall clock (ms since the Unix
//! epoch) when the operation started, "ms" its duration.
//! rmcp re-initializes on a 404 by itself: that shows here as a counter starting again at 1.
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rmcp::model::CallToolRequestParams;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Value};

struct Args {
    url: String,
    sessions: usize,
    calls: usize,
    pause: Duration,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { url: String::new(), sessions: 1, calls: 10, pause: Duration::ZERO, timeout: Duration::from_millis(8000) };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<u64>().map_err(|_| format!("{flag}: not a number: {value}"));
        match flag.as_str() {
            "--url" => a.url = value.clone(),
            "--sessions" => a.sessions = num()? as usize,
            "--calls" => a.calls = num()? as usize,
            "--pause-ms" => a.pause = Duration::from_millis(num()?),
            "--timeout-ms" => a.timeout = Duration::from_millis(num()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(a)
}

fn emit(start: Instant, mut ev: Value, t0: f64) {
    let now = start.elapsed().as_secs_f64() * 1000.0;
    ev["t"] = json!(t0);
    ev["at"] = json!(epoch_ms_at(start) + t0);
    ev["ms"] = json!(now - t0);
    println!("{ev}");
}

/// Wall clock (ms since the Unix epoch) of `start`.
fn epoch_ms_at(start: Instant) -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    now - start.elapsed().as_secs_f64() * 1000.0
}

fn text(res: &rmcp::model::CallToolResult) -> String {
    res.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone()).unwrap_or_default()
}

async fn run_session(start: Instant, http: reqwest::Client, a: Arc<Args>, s: usize) {
    let ms = || start.elapsed().as_secs_f64() * 1000.0;
    let t0 = ms();
    let transport = StreamableHttpClientTransport::with_client(http, StreamableHttpClientTransportConfig::with_uri(a.url.as_str()));
    let client = match tokio::time::timeout(a.timeout, ().serve(transport)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return emit(start, json!({"ev": "init", "s": s, "error": e.to_string()}), t0),
        Err(_) => return emit(start, json!({"ev": "init", "s": s, "error": "timeout: initialize"}), t0),
    };
    emit(start, json!({"ev": "init", "s": s}), t0);
    let t0 = ms();
    let node;
    match tokio::time::timeout(a.timeout, client.call_tool(CallToolRequestParams::new("whoami"))).await {
        Ok(Ok(r)) => {
            let info: Value = serde_json::from_str(&text(&r)).unwrap_or(Value::Null);
            node = info["node"].clone();
            emit(start, json!({"ev": "whoami", "s": s, "node": info["node"], "boot": info["boot"]}), t0);
        }
        Ok(Err(e)) => return emit(start, json!({"ev": "whoami", "s": s, "error": e.to_string()}), t0),
        Err(_) => return emit(start, json!({"ev": "whoami", "s": s, "error": "timeout: whoami"}), t0),
    }
    for n in 1..=a.calls {
        if n > 1 && !a.pause.is_zero() {
            tokio::time::sleep(a.pause).await;
        }
        let t0 = ms();
        let ev = match tokio::time::timeout(a.timeout, client.call_tool(CallToolRequestParams::new("counter"))).await {
            Ok(Ok(r)) if r.is_error == Some(true) => json!({"error": format!("tool error: {}", text(&r))}),
            Ok(Ok(r)) => match text(&r).parse::<i64>() {
                Ok(v) => json!({"value": v}),
                Err(_) => json!({"error": format!("unexpected result: {}", text(&r))}),
            },
            Ok(Err(e)) => json!({"error": e.to_string()}),
            Err(_) => json!({"error": "timeout: counter"}),
        };
        let mut ev = ev;
        ev["ev"] = json!("call");
        ev["s"] = json!(s);
        ev["n"] = json!(n);
        ev["node"] = node.clone();
        emit(start, ev, t0);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.cancel()).await;
}

#[tokio::main]
async fn main() {
    let start = Instant::now();
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // No cookie store: like most MCP clients, this one keeps no cookies.
    let http = reqwest::Client::builder().build().expect("http client");
    let mut tasks = Vec::new();
    for s in 0..args.sessions {
        tasks.push(tokio::spawn(run_session(start, http.clone(), args.clone(), s)));
    }
    for t in tasks {
        let _ = t.await;
    }
    println!("{}", json!({"ev": "done", "t": start.elapsed().as_secs_f64() * 1000.0}));
}
