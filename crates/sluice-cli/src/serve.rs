//! `sluice serve`: a web console over the home's (or the configured) catalog, lake and queues:
//! tables with schemas, partitions and history, queue depth and dead letters (with redrive), the
//! quarantine, and a read-only SQL box. Bound to 127.0.0.1 unless told otherwise; any other
//! address needs `--token`, which every request must then carry.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Ctx;
use crate::backends::QueueTarget;

const PAGE: &str = include_str!("console.html");
/// Rows a query returns to the page at most.
const MAX_ROWS: usize = 1_000;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on: PORT (127.0.0.1) or HOST:PORT. Any address but loopback needs
    /// --token.
    #[arg(long, default_value = "127.0.0.1:7878", value_parser = crate::telemetry::parse_addr)]
    addr: SocketAddr,
    /// A secret every request must carry (`Authorization: Bearer TOKEN`, or `?token=TOKEN` once
    /// in the browser's address, which the page then keeps).
    #[arg(long, env = "SLUICE_CONSOLE_TOKEN")]
    token: Option<String>,
}

struct AppState {
    ctx: Ctx,
    token: Option<String>,
}

type S = State<Arc<AppState>>;

/// An error as the page shows it.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<sluice_core::Error> for ApiError {
    fn from(e: sluice_core::Error) -> Self {
        let code = match e {
            sluice_core::Error::NotFound { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

type ApiResult = std::result::Result<Json<Value>, ApiError>;

pub async fn run(ctx: &Ctx, a: &ServeArgs) -> Result<()> {
    if !a.addr.ip().is_loopback() && a.token.as_deref().is_none_or(str::is_empty) {
        bail!(
            "serving on {} (not loopback) needs --token: anyone who can reach it could read every table",
            a.addr
        );
    }
    let state = Arc::new(AppState {
        ctx: ctx.clone(),
        token: a.token.clone().filter(|t| !t.is_empty()),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::get(page))
        .route("/api/tables", axum::routing::get(tables))
        .route("/api/tables/{name}/history", axum::routing::get(history))
        .route("/api/queues", axum::routing::get(queues))
        .route("/api/queues/{name}/redrive", axum::routing::post(redrive))
        .route("/api/quarantine", axum::routing::get(quarantine))
        .route("/api/query", axum::routing::post(query))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(a.addr)
        .await
        .with_context(|| format!("cannot listen on {}", a.addr))?;
    let bound = listener.local_addr()?;
    eprintln!("console at http://{bound}/");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Refuses a request without the token, when there is one.
async fn guard(
    State(state): S,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &state.token {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let given = bearer.or(q.token.as_deref());
        if given != Some(token.as_str()) {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "this console needs its token (Authorization: Bearer TOKEN, or ?token=TOKEN)"
                    .into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn tables(State(s): S) -> ApiResult {
    let ctx = &s.ctx;
    let catalog = ctx.open.catalog().await?;
    let lake = ctx.open.lake().await?;
    let mut out = Vec::new();
    for t in catalog.list_tables(ctx.database()).await? {
        let ledger = sluice_core::delta::log::Ledger::open(&lake, &t.name, "console").await?;
        let st = ledger.state();
        let partitions: Vec<Value> = st
            .partitions()
            .into_iter()
            .map(|p| json!({"dir": p.dir, "files": p.files, "rows": p.rows, "bytes": p.bytes}))
            .collect();
        let files: u64 = partitions.iter().filter_map(|p| p["files"].as_u64()).sum();
        let rows: u64 = partitions.iter().filter_map(|p| p["rows"].as_u64()).sum();
        let bytes: u64 = partitions.iter().filter_map(|p| p["bytes"].as_u64()).sum();
        out.push(json!({
            "name": t.name,
            "location": t.location,
            "partition_by": t.parameters.get(sluice_core::catalog::PARAM_PARTITION_BY),
            "schema_policy": sluice_core::table::policy::SchemaPolicy::of_def(&t)?.name(),
            "columns": t.columns.iter().map(|c| json!({"name": c.name, "type": c.ty.name()})).collect::<Vec<_>>(),
            "partition_keys": t.partition_keys.iter().map(|c| json!({"name": c.name, "type": c.ty.name()})).collect::<Vec<_>>(),
            "schema_history": sluice_core::table::policy::history(&t),
            "version": st.exists.then_some(st.version),
            "files": files,
            "rows": rows,
            "bytes": bytes,
            "partitions": partitions,
        }));
    }
    Ok(Json(Value::Array(out)))
}

async fn history(State(s): S, Path(name): Path<String>) -> ApiResult {
    let ctx = &s.ctx;
    ctx.open
        .catalog()
        .await?
        .get_table(ctx.database(), &name)
        .await?;
    let lake = ctx.open.lake().await?;
    let h = sluice_core::delta::log::history(&lake, &sluice_core::lake::Lake::table_dir(&name), 50)
        .await?;
    Ok(Json(serde_json::to_value(h).map_err(anyhow::Error::from)?))
}

/// The queues of the configured backend: `--queue` if given, else every embedded queue.
async fn queue_names(ctx: &Ctx) -> Result<Vec<QueueTarget>> {
    ctx.open.queues().await
}

async fn queues(State(s): S) -> ApiResult {
    let ctx = &s.ctx;
    let mut out = Vec::new();
    for target in queue_names(ctx).await? {
        let (admin, name) = ctx.open.queue_admin(&target).await?;
        let q = admin.open(&name).await?;
        let st = q.stats().await?;
        let dead = match admin.dead_letter_queue(&name).await? {
            Some(d) => {
                let ds = d.stats().await?;
                let messages: Vec<Value> = ctx
                    .open
                    .dead_letters(&*admin, &name, 100)
                    .await?
                    .into_iter()
                    .map(|(id, reason)| json!({"id": id, "reason": reason}))
                    .collect();
                json!({"name": d.name(), "count": ds.visible + ds.in_flight, "messages": messages})
            }
            None => Value::Null,
        };
        out.push(json!({
            "name": name,
            "visible": st.visible,
            "in_flight": st.in_flight,
            "oldest_age_seconds": st.oldest_age.map(|a| a.as_secs_f64()),
            "dead_letter": dead,
        }));
    }
    Ok(Json(Value::Array(out)))
}

async fn redrive(State(s): S, Path(name): Path<String>) -> ApiResult {
    let ctx = &s.ctx;
    let target = queue_names(ctx)
        .await?
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no queue {name}")))?;
    let (admin, qname) = ctx.open.queue_admin(&target).await?;
    let moved = admin.redrive(&qname).await?;
    Ok(Json(json!({"moved": moved})))
}

#[derive(Deserialize)]
struct QuarantineQuery {
    table: Option<String>,
    limit: Option<usize>,
}

async fn quarantine(State(s): S, Query(q): Query<QuarantineQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(200).min(MAX_ROWS);
    let filter = match &q.table {
        Some(t) => {
            sluice_core::schema::validate_name("table", t)?;
            format!("WHERE table_name = '{t}' ")
        }
        None => String::new(),
    };
    let sql = format!(
        "SELECT table_name, source, line, reason, raw FROM quarantine {filter}ORDER BY table_name, source, line LIMIT {limit}"
    );
    run_sql(&s.ctx, &sql).await
}

#[derive(Deserialize)]
struct QueryBody {
    sql: String,
}

async fn query(State(s): S, Json(body): Json<QueryBody>) -> ApiResult {
    run_sql(&s.ctx, &body.sql).await
}

/// Runs read-only SQL (DDL and DML refused by the engine, as in `sluice query`); at most
/// [`MAX_ROWS`] rows come back, as objects, with the column names in order.
async fn run_sql(ctx: &Ctx, sql: &str) -> ApiResult {
    let catalog = ctx.open.catalog().await?;
    let lake = ctx.open.lake().await?;
    let engine = sluice_query::QueryEngine::new_as_of(
        &*catalog,
        &lake,
        ctx.database(),
        sluice_query::AsOf::Latest,
    )
    .await
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (schema, batches) = engine
        .sql(sql)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        let mut left = MAX_ROWS;
        for b in &batches {
            if left == 0 {
                break;
            }
            let b = b.slice(0, b.num_rows().min(left));
            left -= b.num_rows();
            w.write(&b).map_err(anyhow::Error::from)?;
        }
        w.finish().map_err(anyhow::Error::from)?;
    }
    let rows: Value = if buf.is_empty() {
        Value::Array(vec![])
    } else {
        serde_json::from_slice(&buf).map_err(anyhow::Error::from)?
    };
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    Ok(Json(
        json!({"columns": columns, "rows": rows, "total": total, "truncated": total > MAX_ROWS}),
    ))
}
