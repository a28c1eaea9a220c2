// The review queue of `mnist-kit ui` (/review): a shadow's disagreements one at a time, each labelled with a key or
// a click through this page's server (/api/disagreements), which writes shadow.db on this machine.
"use strict";

const $ = (id) => document.getElementById(id);
const NOT_A_DIGIT = "not-a-digit";
const FLAG_WORDS = { several_digits: "several digits", not_a_digit: "not a digit", low_confidence: "low confidence" };
const state = {
  queue: [], // the disagreements of the last list, the one shown first; a skipped one goes to the back
  busy: false, // a label in flight: keys and clicks wait for it
};

// ---- the server ----------------------------------------------------------------------------------------------

// Ask this page's server; resolves to {ok, status, body} and never rejects.
async function ask(path, options = {}) {
  try {
    const response = await fetch(path, { ...options, signal: AbortSignal.timeout(30000) });
    let body;
    try {
      body = await response.json();
    } catch {
      body = { message: `the pad's server answered ${response.status} without JSON` };
    }
    return { ok: response.ok, status: response.status, body };
  } catch {
    const message = "the pad's server (mnist-kit ui) is not answering: is it still running? Start it with `mnist-kit ui`.";
    return { ok: false, status: 0, body: { message } };
  }
}

async function load() {
  const { ok, body } = await ask("/api/disagreements");
  if (!ok) return say(body.message, "error");
  state.queue = body.disagreements;
  count(body.stats);
  $("empty").textContent = body.message;
  show();
}

async function label(value) {
  const shown = state.queue[0];
  if (!shown || state.busy) return;
  state.busy = true;
  const { ok, status, body } = await ask(`/api/disagreements/${shown.id}/label`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ label: value }),
  });
  state.busy = false;
  if (!ok && status !== 404) return say(body.message, "error");
  say(ok ? `Labelled: ${body.message}.` : `${body.message}: on to the next.`, ok ? "" : "warn"); // 404: evicted
  state.queue = state.queue.filter((d) => d.id !== shown.id);
  if (ok) count(body.stats);
  if (state.queue.length) show();
  else load(); // the next ones, and any the shadow kept meanwhile
}

function skip() {
  if (state.busy || state.queue.length === 0) return;
  const skipped = state.queue.shift();
  state.queue.push(skipped);
  say(state.queue.length > 1 ? `Skipped disagreement ${skipped.id}: it comes back after the others.` : "It is the only one left.");
  show();
}

// ---- showing one ---------------------------------------------------------------------------------------------

function count(stats) {
  const { unlabelled, labelled } = stats;
  $("left").textContent = `${unlabelled} left to label (${labelled} labelled).`;
}

// An answer as `mnist-kit shadow list` writes it, "7 (98 %)", its flags in words beside it, smaller.
function answered(where, answer) {
  const digit = answer.digit === null || answer.digit === undefined ? "?" : answer.digit;
  const sure = typeof answer.confidence === "number" ? ` (${Math.round(100 * answer.confidence)} %)` : "";
  const flags = document.createElement("span");
  flags.className = "flags";
  flags.textContent = (answer.flags || []).map((f) => FLAG_WORDS[f] || f).join(", ");
  where.replaceChildren(`${digit}${sure} `, flags);
}

function show() {
  const d = state.queue[0];
  $("review").hidden = !d;
  $("empty").hidden = Boolean(d);
  if (!d) return;
  const picture = $("picture");
  picture.dataset.id = d.id;
  picture.classList.toggle("model-input", d.shown === "model input");
  picture.onload = () => picture.classList.toggle("small", picture.naturalWidth <= 64);
  picture.onerror = () => say(`Disagreement ${d.id}'s picture cannot be shown here; \`mnist-kit shadow export\` writes its bytes.`, "warn");
  picture.src = d.image;
  const when = new Date(d.created * 1000).toLocaleString();
  const what = d.shown === "model input" ? `the 28×28 the model read of this ${d.content_type} request` : d.content_type;
  $("caption").textContent = `Disagreement ${d.id}, ${when}: ${what}, ${d.bytes.toLocaleString()} bytes as sent.`;
  $("default-version").textContent = `${d.default.version} (default) read it as`;
  answered($("default-answer"), d.default);
  $("shadow-version").textContent = `${d.shadow.version} (shadow) read it as`;
  answered($("shadow-answer"), d.shadow);
}

function say(text, kind = "") {
  $("message").textContent = text;
  $("message").className = kind;
}

// ---- keys and buttons ----------------------------------------------------------------------------------------

for (let digit = 0; digit <= 9; digit++) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = String(digit);
  button.dataset.testid = `label-${digit}`;
  button.title = `${digit} (key ${digit})`;
  button.addEventListener("click", () => label(digit));
  $("labels").append(button);
}
$("not-a-digit").addEventListener("click", () => label(NOT_A_DIGIT));
$("skip").addEventListener("click", skip);
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (/^[0-9]$/.test(event.key)) label(Number(event.key));
  else if (event.key.toLowerCase() === "n") label(NOT_A_DIGIT);
  else if (event.key.toLowerCase() === "s") skip();
});

load();
