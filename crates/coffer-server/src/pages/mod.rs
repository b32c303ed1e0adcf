//! The hosted checkout page: the customer's side of every API family's order.
//!
//! `payment_url` (payment orders) and `location` (GatePay) point to `/pay/{order_id}`. The page
//! shows the amount and token, the network, the deposit address with a copy button, a QR code
//! of the EIP-681 transfer (`/qr/{order_id}`, SVG), the time left, and the live status, which
//! it polls from `/pay/{order_id}/status` every two seconds: waiting → payment detected →
//! confirming (n of m) → paid. On success it follows the order's `redirect_url` / `returnUrl`;
//! on expiry or cancellation it follows GatePay's `cancelUrl` when there is one. Underpaid,
//! overpaid, expired and cancelled orders get their own screens. The headline amount and the QR
//! code ask only for what is still due (after a partial payment, the rest); an order that is
//! confirming, paid, expired or closed shows no address and no QR code, and `/qr/{order_id}`
//! answers 410 for it. A browser that opens an unknown order's page gets an HTML page saying
//! so. The text is English or Chinese by `Accept-Language`; everything (styles, script, QR) is
//! served by Coffer, and the page works without script (it then refreshes itself).
//!
//! The page answers with a Content-Security-Policy that allows exactly its own inline script
//! and style (by SHA-256 hash) and nothing else, and it renders or follows a return or cancel
//! link only when it is an absolute http(s) URL ([`crate::pages::safety`]), whatever is stored.
//! GatePay's `cancelUrl` comes from the order's GatePay facts in the store, never from its
//! `order_info`.

pub mod safety;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use coffer_store::{OrderRow, StoreError};
use qrcode::QrCode;
use qrcode::render::svg;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::pages::safety::policy_with_hashes;
use coffer_gateway::links::renderable_link;

/// The page's Content-Security-Policy: its own script and style, by hash, and nothing else.
static PAGE_POLICY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| policy_with_hashes(&[SCRIPT], &[STYLE]));

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payment_page))
        .routes(routes!(payment_status))
        .routes(routes!(payment_qr))
}

async fn load(state: &AppState, order_id: &str) -> Result<OrderRow, ApiError> {
    match state.gateway.store.order(order_id).await {
        Ok(order) => Ok(order),
        Err(StoreError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ORDER_NOT_FOUND",
            format!("payment order {order_id} not found"),
        )),
        Err(error) => Err(ApiError::internal(&error)),
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The live state of an order, as the checkout page polls it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentStatus {
    /// `pending`, `processing`, `confirmed`, `expired` or `failed` (closed).
    pub status: &'static str,
    /// `underpaid`, `overpaid`, `paid_late`, or null.
    pub payment_status: Option<&'static str>,
    /// What the page shows: `waiting`, `underpaid`, `confirming`, `paid`, `expired` or
    /// `cancelled`.
    pub stage: &'static str,
    /// Amount asked, in token units.
    pub amount: String,
    /// Amount received, in token units.
    pub amount_paid: String,
    /// Amount still to send, in token units.
    pub amount_due: String,
    /// Token symbol.
    pub currency: String,
    /// EIP-155 chain id of the network to pay on.
    pub chain_id: u64,
    /// The deposit address to pay (shown on the page).
    pub receiving_address: String,
    /// The token's contract, or null for the chain's native coin.
    pub token_address: Option<String>,
    /// Decimals of the amounts' token.
    pub decimals: u8,
    /// Confirmations of the latest payment.
    pub confirmations: u64,
    /// Confirmations needed.
    pub required_confirmations: u64,
    /// End of the payment window (unix ms).
    pub expires_at_ms: i64,
    /// Coffer's clock (unix ms), so the page counts down without trusting the device's.
    pub now_ms: i64,
    /// Where to go once paid (an http(s) URL, else null).
    pub redirect_url: Option<String>,
    /// Where to go after an expiry or a cancellation (an http(s) URL, else null).
    pub cancel_url: Option<String>,
}

async fn live_status(state: &AppState, order: &OrderRow) -> Result<PaymentStatus, ApiError> {
    let view = state
        .gateway
        .orders
        .render(order)
        .await
        .map_err(ApiError::from)?;
    let required = state
        .gateway
        .chains
        .by_chain_id(order.chain_id)
        .map_or(1, |chain| chain.confirmations)
        .max(1);
    let confirmations = view.transaction.as_ref().map_or(0, |tx| tx.confirmations);
    let due = order
        .amount
        .checked_sub(order.amount_paid)
        .unwrap_or(coffer_core::Amount::ZERO);
    let cancel_url = state
        .gateway
        .store
        .gatepay_order_of(&order.order_id)
        .await
        .map_err(|error| ApiError::internal(&error))?
        .and_then(|gatepay| gatepay.cancel_url);
    let stage = match (order.status.as_str(), order.sub_status.as_str()) {
        ("confirmed", _) => "paid",
        ("processing", _) => "confirming",
        ("expired", _) => "expired",
        ("failed", _) => "cancelled",
        (_, Some("underpaid")) => "underpaid",
        _ => "waiting",
    };
    Ok(PaymentStatus {
        status: order.status.as_str(),
        payment_status: order.sub_status.as_str(),
        stage,
        amount: view.amount,
        amount_paid: view.amount_paid,
        amount_due: due.to_decimal_string_min(order.decimals, 2),
        currency: order.currency.clone(),
        chain_id: order.chain_id,
        receiving_address: order.receiving_address.clone(),
        token_address: order.asset_address.clone(),
        decimals: order.decimals,
        confirmations: confirmations.min(required),
        required_confirmations: required,
        expires_at_ms: order.expires_at_ms,
        now_ms: coffer_gateway::clock::now_ms(),
        redirect_url: renderable_link(order.redirect_url.as_deref()).map(str::to_owned),
        cancel_url: renderable_link(cancel_url.as_deref()).map(str::to_owned),
    })
}

/// The page's words in one language.
struct Words {
    lang: &'static str,
    title: &'static str,
    send: &'static str,
    network: &'static str,
    address: &'static str,
    copy: &'static str,
    copied: &'static str,
    qr: &'static str,
    time_left: &'static str,
    status: &'static str,
    waiting: &'static str,
    underpaid: &'static str,
    confirming: &'static str,
    paid: &'static str,
    expired: &'static str,
    cancelled: &'static str,
    overpaid: &'static str,
    received: &'static str,
    remaining: &'static str,
    redirecting: &'static str,
    cancel: &'static str,
    order: &'static str,
    exact: &'static str,
    not_found_title: &'static str,
    not_found: &'static str,
}

const ENGLISH: Words = Words {
    lang: "en",
    title: "Payment",
    send: "Send exactly",
    network: "Network",
    address: "Deposit address",
    copy: "Copy address",
    copied: "Copied",
    qr: "QR code: pay {amount} to the deposit address from a wallet",
    time_left: "Time left",
    status: "Status",
    waiting: "Waiting for your payment",
    underpaid: "Partly paid: please send the rest",
    confirming: "Payment detected, confirming ({n} of {m})",
    paid: "Paid. Thank you!",
    expired: "This payment request has expired",
    cancelled: "This payment request was cancelled",
    overpaid: "You sent more than was asked; the merchant can refund the difference.",
    received: "Received",
    remaining: "Still to send",
    redirecting: "Returning to the shop…",
    cancel: "Cancel and return to the shop",
    order: "Order",
    exact: "Send only {currency} on {network} to this address; other tokens or networks are lost.",
    not_found_title: "Payment not found",
    not_found: "There is no payment request at this link. Check the link the shop gave you, or ask the shop for a new one.",
};

const CHINESE: Words = Words {
    lang: "zh",
    title: "付款",
    send: "请准确支付",
    network: "网络",
    address: "收款地址",
    copy: "复制地址",
    copied: "已复制",
    qr: "二维码：用钱包向收款地址支付 {amount}",
    time_left: "剩余时间",
    status: "状态",
    waiting: "等待付款",
    underpaid: "已部分付款：请补足余额",
    confirming: "已检测到付款，确认中（{n}/{m}）",
    paid: "付款成功，谢谢！",
    expired: "此付款请求已过期",
    cancelled: "此付款请求已取消",
    overpaid: "您支付的金额超过应付金额；商户可退还差额。",
    received: "已收到",
    remaining: "仍需支付",
    redirecting: "正在返回商户…",
    cancel: "取消并返回商户",
    order: "订单",
    exact: "请仅在 {network} 上向此地址发送 {currency}；其他代币或网络的转账将会丢失。",
    not_found_title: "未找到付款",
    not_found: "此链接没有对应的付款请求。请核对商户提供的链接，或向商户索取新的链接。",
};

/// Chinese when the first language the browser prefers (by `q`) is Chinese, else English.
fn words(headers: &HeaderMap) -> &'static Words {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut best: Option<(f32, &str)> = None;
    for part in accept.split(',') {
        let mut pieces = part.trim().split(';');
        let tag = pieces.next().unwrap_or("").trim();
        let quality = pieces
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if !tag.is_empty() && best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, tag));
        }
    }
    match best {
        Some((_, tag)) if tag.to_ascii_lowercase().starts_with("zh") => &CHINESE,
        _ => &ENGLISH,
    }
}

const STYLE: &str = "*{box-sizing:border-box}\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f5f6f8;color:#1d1f23}\
main{max-width:28rem;margin:0 auto;padding:1rem}\
.card{background:#fff;border-radius:12px;padding:1.25rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}\
h1{font-size:1.1rem;margin:0 0 .75rem}\
.amount{font-size:2rem;font-weight:700;margin:.25rem 0;overflow-wrap:anywhere}\
.label{font-size:.8rem;color:#5b6068;margin:.75rem 0 .2rem}\
.address{display:flex;gap:.5rem;align-items:center}\
code{flex:1;font-size:.85rem;word-break:break-all;background:#f1f2f4;padding:.5rem;border-radius:6px}\
button,.button{font:inherit;padding:.55rem .9rem;border-radius:8px;border:1px solid #2b5fd9;background:#2b5fd9;color:#fff;cursor:pointer;text-decoration:none;display:inline-block}\
button:focus-visible,a:focus-visible{outline:3px solid #f0b400;outline-offset:2px}\
.qr{text-align:center;margin:1rem 0}.qr img{width:min(15rem,80vw);height:auto;aspect-ratio:1}\
.status{padding:.75rem;border-radius:8px;background:#eef2fb;font-weight:600}\
.status[data-stage=paid]{background:#e3f6e8;color:#16692f}\
.status[data-stage=expired],.status[data-stage=cancelled]{background:#fdecec;color:#9b1c1c}\
.status[data-stage=underpaid]{background:#fff6e0;color:#7a5200}\
.note{font-size:.85rem;color:#5b6068}.warn{color:#7a5200}\
.secondary{background:#fff;color:#2b5fd9}\
[hidden]{display:none!important}\
@media (prefers-color-scheme:dark){body{background:#111317;color:#e8e9eb}.card{background:#1b1e24}code{background:#262a31}.note,.label{color:#a3a8b0}}";

const SCRIPT: &str = r#"(function(){
var root=document.getElementById('checkout');if(!root)return;
var d=root.dataset,t=JSON.parse(document.getElementById('words').textContent);
var statusEl=document.getElementById('status'),leftEl=document.getElementById('time-left');
var paidEl=document.getElementById('paid'),dueEl=document.getElementById('due'),dueRow=document.getElementById('due-row');
var overEl=document.getElementById('overpaid'),redirEl=document.getElementById('redirecting');
var payEl=document.getElementById('pay'),payToEl=document.getElementById('pay-to');
var amountEl=document.getElementById('amount'),qrEl=document.getElementById('qr');
var skew=0,expires=Number(d.expires),done=false,last='';
function fmt(ms){if(ms<=0)return '0:00';var s=Math.floor(ms/1000),h=Math.floor(s/3600),m=Math.floor(s%3600/60),x=s%60;
return (h?h+':'+(m<10?'0':''):'')+m+':'+(x<10?'0':'')+x;}
function tick(){if(done)return;leftEl.textContent=fmt(expires-(Date.now()+skew));}
function go(url){if(!url)return;redirEl.hidden=false;setTimeout(function(){window.location.assign(url);},1500);}
function show(s){
 var text=t[s.stage]||s.stage;text=text.replace('{n}',s.confirmations).replace('{m}',s.required_confirmations);
 statusEl.dataset.stage=s.stage;if(text!==last){statusEl.textContent=text;last=text;}
 paidEl.textContent=s.amount_paid+' '+s.currency;
 dueRow.hidden=!(s.stage==='underpaid');dueEl.textContent=s.amount_due+' '+s.currency;
 overEl.hidden=s.payment_status!=='overpaid';
 var payable=s.stage==='waiting'||s.stage==='underpaid',due=s.amount_due+' '+s.currency;
 payEl.hidden=!payable;payToEl.hidden=!payable;
 if(payable&&amountEl.textContent!==due){amountEl.textContent=due;
  qrEl.src=d.qrUrl+'?due='+encodeURIComponent(s.amount_due);qrEl.alt=qrEl.dataset.alt.replace('{amount}',due);}
 var cancelEl=document.getElementById('cancel');if(cancelEl)cancelEl.hidden=s.stage!=='waiting';
 if(s.stage==='paid'){done=true;leftEl.textContent='—';go(s.redirect_url);}
 else if(s.stage==='expired'||s.stage==='cancelled'){done=true;leftEl.textContent='0:00';go(s.cancel_url);}
}
function poll(){fetch(d.statusUrl,{cache:'no-store'}).then(function(r){return r.json();}).then(function(s){
 skew=s.now_ms-Date.now();expires=s.expires_at_ms;show(s);if(!done)setTimeout(poll,2000);
}).catch(function(){setTimeout(poll,4000);});}
var copy=document.getElementById('copy');
copy.addEventListener('click',function(){var a=document.getElementById('address').textContent;
 function ok(){copy.textContent=t.copied;setTimeout(function(){copy.textContent=t.copy;},2000);}
 if(navigator.clipboard){navigator.clipboard.writeText(a).then(ok,function(){});}
 else{var r=document.createRange();r.selectNodeContents(document.getElementById('address'));var sel=window.getSelection();sel.removeAllRanges();sel.addRange(r);try{document.execCommand('copy');ok();}catch(e){}}});
document.documentElement.classList.add('js');
setInterval(tick,1000);tick();poll();
})();"#;

/// The checkout page for an order.
#[utoipa::path(
    get,
    path = "/pay/{order_id}",
    tag = "payment page",
    params(("order_id" = String, Path, description = "ORD-…")),
    responses(
        (status = 200, description = "HTML page (English or Chinese by Accept-Language)", content_type = "text/html"),
        (status = 400, description = "VALIDATION_ERROR: the path is not UTF-8", body = crate::error::ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND; a browser (Accept: text/html) gets an HTML page saying so", body = crate::error::ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn payment_page(
    State(state): State<AppState>,
    ApiPath(order_id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let w = words(&headers);
    let order = match load(&state, &order_id).await {
        Ok(order) => order,
        Err(error) if error.status() == StatusCode::NOT_FOUND && wants_html(&headers) => {
            return Ok(not_found_page(w, &order_id));
        }
        Err(error) => return Err(error),
    };
    let live = live_status(&state, &order).await?;
    let network = state
        .gateway
        .chains
        .by_chain_id(order.chain_id)
        .map_or_else(
            || order.blockchain.clone(),
            |chain| chain.display_name.clone(),
        );
    // The page asks only for what is still due, and only while the order can be paid.
    let amount = format!("{} {}", live.amount_due, order.currency);
    let payable = matches!(live.stage, "waiting" | "underpaid");
    let stage_text = match live.stage {
        "paid" => w.paid,
        "confirming" => w.confirming,
        "expired" => w.expired,
        "cancelled" => w.cancelled,
        "underpaid" => w.underpaid,
        _ => w.waiting,
    }
    .replace("{n}", &live.confirmations.to_string())
    .replace("{m}", &live.required_confirmations.to_string());
    let settled = matches!(live.stage, "paid" | "expired" | "cancelled");
    // Without script the page refreshes itself, and redirects once settled.
    let target = match live.stage {
        "paid" => live.redirect_url.as_deref(),
        "expired" | "cancelled" => live.cancel_url.as_deref(),
        _ => None,
    };
    let refresh = match (settled, target) {
        (false, _) => "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>".to_owned(),
        (true, Some(url)) => format!(
            "<noscript><meta http-equiv=\"refresh\" content=\"3;url={}\"></noscript>",
            escape(url)
        ),
        (true, None) => String::new(),
    };
    // Offered only while nothing was paid.
    let cancel = match (&live.cancel_url, live.stage) {
        (Some(url), "waiting") => format!(
            "<p><a class=\"button secondary\" id=\"cancel\" href=\"{}\">{}</a></p>",
            escape(url),
            w.cancel
        ),
        _ => String::new(),
    };
    let words_json = serde_json::json!({
        "waiting": w.waiting, "underpaid": w.underpaid, "confirming": w.confirming,
        "paid": w.paid, "expired": w.expired, "cancelled": w.cancelled,
        "copy": w.copy, "copied": w.copied,
    })
    .to_string()
    .replace('<', "\\u003c");
    let left_ms = (order.expires_at_ms - live.now_ms).max(0);
    let left = if settled {
        "—".to_owned()
    } else {
        format!("{}:{:02}", left_ms / 60_000, left_ms / 1000 % 60)
    };
    let html = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
<title>{title}: {amount_e}</title><style>{STYLE}</style></head><body><main>\
<div class=\"card\" id=\"checkout\" data-status-url=\"/pay/{order_id}/status\" data-qr-url=\"/qr/{order_id}\" data-expires=\"{expires}\">\
<h1>{title}</h1>\
<div id=\"pay\"{pay_hidden}>\
<p class=\"label\" id=\"amount-label\">{send}</p>\
<p class=\"amount\" id=\"amount\" aria-labelledby=\"amount-label\">{amount_e}</p>\
</div>\
<p class=\"label\">{network_label}</p><p id=\"network\"><strong>{network}</strong></p>\
<div id=\"pay-to\"{pay_hidden}>\
<p class=\"label\" id=\"address-label\">{address_label}</p>\
<div class=\"address\"><code id=\"address\" aria-labelledby=\"address-label\">{address}</code>\
<button type=\"button\" id=\"copy\" aria-label=\"{copy}\">{copy}</button></div>\
<p class=\"note warn\">{exact}</p>\
<div class=\"qr\"><img id=\"qr\" src=\"/qr/{order_id}?due={due_e}\" width=\"240\" height=\"240\" alt=\"{qr}\" data-alt=\"{qr_template}\"></div>\
</div>\
<p class=\"label\">{status_label}</p>\
<p class=\"status\" id=\"status\" role=\"status\" aria-live=\"polite\" data-stage=\"{stage}\">{stage_text}</p>\
<p id=\"redirecting\" class=\"note\" hidden>{redirecting}</p>\
<p id=\"overpaid\" class=\"note warn\"{over_hidden}>{overpaid}</p>\
<p class=\"label\">{time_label}</p><p><span id=\"time-left\" aria-live=\"off\">{left}</span></p>\
<p class=\"label\">{received_label}</p><p id=\"paid\">{paid} {currency}</p>\
<div id=\"due-row\"{due_hidden}><p class=\"label\">{remaining_label}</p><p id=\"due\">{due} {currency}</p></div>\
{cancel}\
<p class=\"note\">{order_label} {order_id}</p>\
</div></main>\
<script type=\"application/json\" id=\"words\">{words_json}</script>\
<script>{SCRIPT}</script></body></html>",
        lang = w.lang,
        title = w.title,
        send = w.send,
        amount_e = escape(&amount),
        network_label = w.network,
        network = escape(&network),
        address_label = w.address,
        address = escape(&order.receiving_address),
        copy = w.copy,
        exact = escape(
            &w.exact
                .replace("{currency}", &order.currency)
                .replace("{network}", &network)
        ),
        qr = escape(&w.qr.replace("{amount}", &amount)),
        qr_template = escape(w.qr),
        due_e = escape(&live.amount_due),
        pay_hidden = if payable { "" } else { " hidden" },
        order_id = escape(&order.order_id),
        expires = order.expires_at_ms,
        status_label = w.status,
        stage = live.stage,
        redirecting = w.redirecting,
        overpaid = w.overpaid,
        over_hidden = if live.payment_status == Some("overpaid") {
            ""
        } else {
            " hidden"
        },
        time_label = w.time_left,
        received_label = w.received,
        paid = escape(&live.amount_paid),
        currency = escape(&order.currency),
        remaining_label = w.remaining,
        due = escape(&live.amount_due),
        due_hidden = if live.stage == "underpaid" {
            ""
        } else {
            " hidden"
        },
        order_label = w.order,
    );
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::VARY, "Accept-Language"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY.as_str()),
        ],
        Html(html),
    )
        .into_response())
}

/// Whether the client is a browser asking for a page (`Accept` names `text/html`).
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The page a customer sees for a payment link that leads nowhere: 404, in their language.
fn not_found_page(w: &Words, order_id: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body><main>\
<div class=\"card\" id=\"not-found\"><h1>{title}</h1>\
<p class=\"status\" data-stage=\"expired\">{message}</p>\
<p class=\"note\">{order_label} <code>{order_id}</code></p></div></main></body></html>",
        lang = w.lang,
        title = w.not_found_title,
        message = w.not_found,
        order_label = w.order,
        order_id = escape(order_id),
    );
    (
        StatusCode::NOT_FOUND,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::VARY, "Accept, Accept-Language"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY.as_str()),
        ],
        Html(html),
    )
        .into_response()
}

/// The live status the checkout page polls.
#[utoipa::path(
    get,
    path = "/pay/{order_id}/status",
    tag = "payment page",
    params(("order_id" = String, Path, description = "ORD-…")),
    responses(
        (status = 200, body = PaymentStatus),
        (status = 400, description = "VALIDATION_ERROR: the path is not UTF-8", body = crate::error::ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND", body = crate::error::ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn payment_status(
    State(state): State<AppState>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let order = load(&state, &order_id).await?;
    let live = live_status(&state, &order).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(live)).into_response())
}

/// A QR code (SVG) of the order's EIP-681 payment link.
#[utoipa::path(
    get,
    path = "/qr/{order_id}",
    tag = "payment page",
    params(("order_id" = String, Path, description = "ORD-…")),
    responses(
        (status = 200, description = "SVG image of what is still due", content_type = "image/svg+xml"),
        (status = 410, description = "NOTHING_TO_PAY: the order is paid, confirming, expired or closed", body = crate::error::ErrorBody),
        (status = 400, description = "VALIDATION_ERROR: the path is not UTF-8", body = crate::error::ErrorBody),
        (status = 404, description = "ORDER_NOT_FOUND", body = crate::error::ErrorBody)
    )
)]
#[tracing::instrument(skip_all)]
async fn payment_qr(
    State(state): State<AppState>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let order = load(&state, &order_id).await?;
    // Only an order still waiting for money has a code to scan: a paid, confirming, expired or
    // closed one asks for nothing.
    if order.status != coffer_core::OrderStatus::Pending {
        return Err(ApiError::new(
            StatusCode::GONE,
            "NOTHING_TO_PAY",
            format!(
                "payment order {} asks for no payment now (it is {})",
                order.order_id,
                order.status.as_str()
            ),
        ));
    }
    let code = QrCode::new(coffer_gateway::links::payment_link(&order).as_bytes())
        .map_err(|error| ApiError::internal(&error))?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            // It changes with every payment: what is due shrinks.
            (header::CACHE_CONTROL, "no-store"),
        ],
        image,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_LANGUAGE,
            value.parse().unwrap_or_else(|_| unreachable!()),
        );
        headers
    }

    #[test]
    fn the_language_follows_the_browsers_first_preference() {
        assert_eq!(words(&HeaderMap::new()).lang, "en");
        assert_eq!(words(&accept("zh-CN,zh;q=0.9,en;q=0.8")).lang, "zh");
        assert_eq!(words(&accept("en-US,en;q=0.9,zh;q=0.8")).lang, "en");
        assert_eq!(words(&accept("fr;q=0.5, zh-TW;q=0.9")).lang, "zh");
        assert_eq!(words(&accept("de")).lang, "en");
    }
}
