"""The ranking page: one HTML document with its CSS and JS inline (no build step, nothing fetched but the API).

Model outputs are untrusted text. The page never builds markup from data: every prompt and response is
put in the page with ``textContent`` (shown as the characters it is, ``<script>`` included), and the few
values filled in on the server (the labeler's name, the flag names, a nonce) are ``html.escape``d into
attributes. The Content-Security-Policy the server sends with it (``server.py``) lets only this page's own
script and style run, with a fresh nonce per load, as a second line of defence.
"""

from __future__ import annotations

import html
import json
import re

from alignlab.label.submission import FLAGS

# the key that toggles each flag on the focused response
FLAG_KEYS = {"fails_instruction": "f", "hallucination": "h", "harmful": "x", "inappropriate": "i"}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>alignlab label</title>
<style nonce="%NONCE%">
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2230; }
  header { background: #1d2230; color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: center; }
  header h1 { font-size: 17px; margin: 0; font-weight: 600; }
  #progress { font-weight: 600; }
  #who { margin-left: auto; }
  #who input { font: inherit; padding: 2px 6px; width: 12em; }
  main { max-width: 1100px; margin: 0 auto; padding: 12px 24px 24px; }
  .keys { color: #555; font-size: 13px; margin: 4px 0 10px; }
  kbd { border: 1px solid #bbb; border-bottom-width: 2px; border-radius: 3px; padding: 0 4px; background: #fff;
        font: 12px ui-monospace, monospace; }
  .box { background: #fff; border: 1px solid #d8dbe2; border-radius: 6px; padding: 10px 14px; margin-bottom: 10px; }
  .label { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: #666; margin-bottom: 4px; }
  .text { white-space: pre-wrap; overflow-wrap: anywhere; }
  .card { outline: none; }
  .card:focus { border-color: #3367d6; box-shadow: 0 0 0 2px #3367d655; }
  .card.ranked { background: #fbfcff; }
  .head { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; margin-bottom: 6px; }
  .letter { font-weight: 700; background: #1d2230; color: #fff; border-radius: 4px; padding: 0 8px; }
  .rank { font: inherit; min-width: 2em; border: 1px solid #aab; background: #fff; border-radius: 4px;
          cursor: pointer; }
  .rank.on { background: #3367d6; border-color: #3367d6; color: #fff; font-weight: 700; }
  .flags { margin-left: auto; display: flex; gap: 12px; font-size: 13px; color: #444; }
  .flags label { cursor: pointer; }
  #actions { display: flex; align-items: center; gap: 16px; margin-top: 6px; }
  #submit { font: inherit; font-weight: 600; padding: 6px 18px; border-radius: 4px; border: 0; background: #2e7d32;
            color: #fff; cursor: pointer; }
  #submit:disabled { background: #999; cursor: default; }
  #order { font-weight: 600; }
  #message { color: #b00020; }
  #finished { font-size: 18px; }
</style>
</head>
<body data-labeler="%LABELER%" data-flags="%FLAGS%" data-flag-keys="%FLAG_KEYS%">
<header>
  <h1>alignlab label</h1>
  <span id="progress"></span>
  <span id="who"></span>
</header>
<main>
  <div class="keys">Rank the responses from 1 (best) down; give two the same number for a tie.
    <kbd>Tab</kbd> / <kbd>&uarr;</kbd> <kbd>&darr;</kbd> move between responses,
    <kbd>1</kbd>&ndash;<kbd>9</kbd> rank the one in focus, <kbd>0</kbd> clears it,
    <span id="flag-keys"></span>, <kbd>Enter</kbd> submits.</div>
  <section id="task" hidden>
    <div class="box"><div class="label">Prompt</div><div id="prompt" class="text"></div></div>
    <div id="responses"></div>
    <div id="actions">
      <button id="submit" type="button">Submit ranking (Enter)</button>
      <span id="order"></span>
      <span id="message" role="alert"></span>
    </div>
  </section>
  <div id="finished" class="box" hidden></div>
  <div id="notice" class="box" hidden></div>
</main>
<script nonce="%NONCE%">
"use strict";
const FIXED = document.body.dataset.labeler;
const FLAGS = JSON.parse(document.body.dataset.flags);
const FLAG_KEYS = JSON.parse(document.body.dataset.flagKeys);
const $ = (id) => document.getElementById(id);
let item = null, ranks = [], busy = false;

function el(tag, props, children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children || []) node.append(child);  // strings become text nodes, never markup
  return node;
}
function letter(i) { return String.fromCharCode(65 + i); }
function labeler() { return FIXED || $("name").value.trim(); }
function say(text) { $("message").textContent = text; }
function cards() { return Array.from(document.querySelectorAll(".card")); }

function setupWho() {
  if (FIXED) { $("who").textContent = "Labeler: " + FIXED; return; }
  const input = el("input", {id: "name", placeholder: "your name", value: localStorage.getItem("alignlab-label-name") || ""});
  input.addEventListener("change", () => { localStorage.setItem("alignlab-label-name", input.value.trim()); load(); });
  $("who").append("Labeler: ", input);
}

async function load() {
  say("");
  if (!labeler()) { notice("Type your name (top right) and press Enter to start."); return; }
  const r = await fetch("/api/next?labeler=" + encodeURIComponent(labeler()));
  const data = await r.json();
  if (!r.ok) { notice(data.error); return; }
  render(data);
}

function notice(text) { $("task").hidden = true; $("notice").hidden = false; $("notice").textContent = text; }

function render(data) {
  $("notice").hidden = true;
  $("progress").textContent = data.done + " of " + data.total + " prompts";
  item = data.item;
  if (!item) {
    $("task").hidden = true; $("finished").hidden = false;
    $("finished").textContent = "All " + data.total + " prompts ranked. Thank you! You can close this page.";
    return;
  }
  $("finished").hidden = true; $("task").hidden = false;
  $("prompt").textContent = item.prompt;
  ranks = item.responses.map(() => 0);
  $("responses").replaceChildren(...item.responses.map(card));
  showRanks();
  cards()[0].focus();
}

function card(text, i) {
  const k = item.responses.length;
  const buttons = [];
  for (let r = 1; r <= k; r++) {
    const b = el("button", {type: "button", className: "rank", textContent: String(r), tabIndex: -1});
    b.dataset.rank = r;
    b.addEventListener("click", () => { setRank(i, r); cards()[i].focus(); });
    buttons.push(b);
  }
  const flags = Object.entries(FLAGS).map(([name, words]) => {
    const box = el("input", {type: "checkbox", tabIndex: -1});
    box.dataset.flag = name;
    box.addEventListener("click", () => cards()[i].focus());
    return el("label", {}, [box, " " + words + " (" + FLAG_KEYS[name].toUpperCase() + ")"]);
  });
  const head = el("div", {className: "head"}, [
    el("span", {className: "letter", textContent: letter(i)}), "rank", ...buttons, el("span", {className: "flags"}, flags)]);
  const node = el("article", {className: "card box", tabIndex: 0}, [head, el("div", {className: "text response", textContent: text})]);
  node.dataset.pos = i;
  return node;
}

function setRank(i, r) { ranks[i] = r; showRanks(); }

function showRanks() {
  cards().forEach((c, i) => {
    c.classList.toggle("ranked", ranks[i] > 0);
    c.querySelectorAll(".rank").forEach((b) => {
      const on = Number(b.dataset.rank) === ranks[i];
      b.classList.toggle("on", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
  });
  const levels = [...new Set(ranks.filter((r) => r > 0))].sort((a, b) => a - b);
  const groups = levels.map((r) => ranks.map((x, i) => x === r ? letter(i) : null).filter(Boolean).join(" = "));
  const missing = ranks.filter((r) => !r).length;
  $("order").textContent = groups.join("  >  ") + (missing ? (groups.length ? "   " : "") + "(" + missing + " to rank)" : "");
}

function toggleFlag(i, name) {
  const box = cards()[i].querySelector('input[data-flag="' + name + '"]');
  box.checked = !box.checked;
}

async function submit() {
  if (!item || busy) return;
  if (ranks.some((r) => !r)) { say("Give every response a rank (1 = best; the same number twice is a tie)."); return; }
  const flags = cards().map((c) => Object.fromEntries(
    Array.from(c.querySelectorAll("input[data-flag]")).map((b) => [b.dataset.flag, b.checked])));
  busy = true; $("submit").disabled = true;
  try {
    const r = await fetch("/api/submit", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({item: item.id, labeler: labeler(), ranks: ranks, flags: flags})});
    const data = await r.json();
    if (!r.ok) { say(data.error); return; }
    await load();
  } catch (e) {
    say("Not saved: the server did not answer (" + e + "). Submit again once it runs.");
  } finally {
    busy = false; $("submit").disabled = false;
  }
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target.id === "name") { if (e.key === "Enter") e.target.blur(); return; }
  if (!item) return;
  const all = cards();
  const i = all.indexOf(document.activeElement);
  if (e.key === "Enter") { e.preventDefault(); submit(); return; }
  if (e.key === "ArrowDown" || e.key === "j") { e.preventDefault(); all[Math.min(i + 1, all.length - 1)].focus(); return; }
  if (e.key === "ArrowUp" || e.key === "k") { e.preventDefault(); all[Math.max(i - 1, 0)].focus(); return; }
  if (i < 0) return;
  if (/^[1-9]$/.test(e.key) && Number(e.key) <= all.length) {
    setRank(i, Number(e.key));
    if (i + 1 < all.length) all[i + 1].focus();
    return;
  }
  if (e.key === "0" || e.key === "Backspace" || e.key === "Delete") { setRank(i, 0); return; }
  const flag = Object.keys(FLAG_KEYS).find((name) => FLAG_KEYS[name] === e.key.toLowerCase());
  if (flag) toggleFlag(i, flag);
});
$("submit").addEventListener("click", submit);
$("flag-keys").append(...Object.values(FLAG_KEYS).flatMap((key) => [el("kbd", {textContent: key.toUpperCase()}), " "]),
  "toggle its flags");
setupWho();
load();
</script>
</body>
</html>
"""


def render_page(nonce: str, labeler: str) -> str:
    """The page with this load's nonce and the fixed labeler ('' = the page asks); every value escaped."""
    values = {"NONCE": nonce, "LABELER": labeler, "FLAGS": json.dumps(FLAGS), "FLAG_KEYS": json.dumps(FLAG_KEYS)}
    # one pass: a value is never read again as a placeholder
    return re.sub(r"%(NONCE|LABELER|FLAGS|FLAG_KEYS)%", lambda m: html.escape(values[m.group(1)], quote=True), PAGE)
