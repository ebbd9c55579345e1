// The labeling page: rank the shown responses best first by keys or by drag, then submit.
// Every text from the server is set with textContent, never innerHTML: a response holding
// HTML or script shows as characters.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let item = null;      // the current item from /api/next
  let tiers = [];       // the ranking so far: tiers of shown positions, best first
  let tieNext = false;  // "=" pressed: the next number joins the last tier

  function ranked() { return tiers.flat(); }

  function showError(message) { $("error").textContent = message || ""; }

  function render() {
    const list = $("responses");
    list.replaceChildren();
    item.responses.forEach((text, pos) => {
      const li = document.createElement("li");
      li.draggable = true;
      li.dataset.pos = String(pos);
      li.className = ranked().includes(pos) ? "ranked" : "";
      const key = document.createElement("kbd");
      key.textContent = String(pos + 1);
      const body = document.createElement("span");
      body.textContent = " " + text;
      li.append(key, body);
      li.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", "r" + pos); li.classList.add("dragging"); });
      li.addEventListener("dragend", () => li.classList.remove("dragging"));
      list.append(li);
    });
    const out = $("ranking");
    out.replaceChildren();
    tiers.forEach((tier, n) => {
      const li = document.createElement("li");
      li.draggable = true;
      li.dataset.tier = String(n);
      li.textContent = tier.map((p) => "response " + (p + 1)).join(" = ");
      li.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", "t" + n));
      li.addEventListener("dragover", (e) => e.preventDefault());
      li.addEventListener("drop", (e) => { e.preventDefault(); e.stopPropagation(); dropAt(e.dataTransfer.getData("text/plain"), n); });
      out.append(li);
    });
    $("strength").hidden = !(item.k === 2);
  }

  function add(pos) {
    if (pos < 0 || pos >= item.k || ranked().includes(pos)) return;
    if (tieNext && tiers.length) tiers[tiers.length - 1].push(pos); else tiers.push([pos]);
    tieNext = false;
    render();
  }

  function undo() {
    if (!tiers.length) return;
    tiers[tiers.length - 1].pop();
    if (!tiers[tiers.length - 1].length) tiers.pop();
    render();
  }

  // Drag: a response dropped on the ranking is appended (or inserted before the tier it lands
  // on); a ranked tier dragged onto another moves before it.
  function dropAt(data, before) {
    if (!data) return;
    if (data[0] === "r") {
      const pos = Number(data.slice(1));
      tiers = tiers.map((t) => t.filter((p) => p !== pos)).filter((t) => t.length);
      const at = before === null ? tiers.length : Math.min(before, tiers.length);
      tiers.splice(at, 0, [pos]);
    } else if (data[0] === "t") {
      const from = Number(data.slice(1));
      const [moved] = tiers.splice(from, 1);
      tiers.splice(before === null ? tiers.length : before, 0, moved);
    }
    render();
  }

  async function post(body) {
    const response = await fetch("/api/labels", {method: "POST", headers: {"Content-Type": "application/json"},
                                                 body: JSON.stringify(body), credentials: "same-origin"});
    const data = await response.json().catch(() => ({error: "the server sent no JSON"}));
    if (!response.ok) { showError(data.error || ("error " + response.status)); return null; }
    showError("");
    $("saved").textContent = "Saved your " + body.kind.replace("_", " ") + " for item " + data.item_id + ".";
    await load();
    return data;
  }

  function submit() {
    if (!item) return;
    let order = tiers.map((t) => t.slice());
    const rest = [...Array(item.k).keys()].filter((p) => !ranked().includes(p));
    if (rest.length === 1) order.push(rest);  // the last one left is the worst
    else if (rest.length > 1) { showError("rank every response first (" + rest.length + " left)"); return; }
    const body = {item_id: item.item_id, kind: "ranking", ranking: order};
    const strength = document.querySelector('input[name="strength"]:checked');
    if (item.k === 2 && strength && order.length === 2) body.strength = strength.value;
    post(body);
  }

  function showProgress(p) {
    $("progress").textContent = p.labelled + " labelled, " + p.skipped + " skipped, " + p.available + " more available.";
  }

  async function load() {
    const response = await fetch("/api/next", {credentials: "same-origin"});
    const data = await response.json().catch(() => ({error: "the server sent no JSON"}));
    if (!response.ok) { showError(data.error || ("error " + response.status)); return; }
    showProgress(data.progress);
    item = data.item;
    tiers = []; tieNext = false;
    document.querySelectorAll('input[name="strength"]').forEach((r) => { r.checked = false; });
    $("item").hidden = !item;
    $("done").hidden = !!item;
    if (!item) return;
    $("prompt").textContent = item.prompt;
    $("skip-reason").value = "";
    render();
  }

  document.addEventListener("keydown", (e) => {
    // typing a skip reason is typing; on a strength radio button the shortcuts still work
    if (!item || (e.target.tagName === "INPUT" && e.target.type === "text") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[1-9]$/.test(e.key)) { add(Number(e.key) - 1); e.preventDefault(); }
    else if (e.key === "=") { tieNext = true; e.preventDefault(); }
    else if (e.key === "Backspace") { undo(); e.preventDefault(); }
    else if (e.key === "Enter") { submit(); e.preventDefault(); }
  });
  $("ranking").addEventListener("dragover", (e) => e.preventDefault());
  $("ranking").addEventListener("drop", (e) => { e.preventDefault(); dropAt(e.dataTransfer.getData("text/plain"), null); });
  $("submit").addEventListener("click", submit);
  $("undo").addEventListener("click", undo);
  $("all-bad").addEventListener("click", () => item && post({item_id: item.item_id, kind: "all_bad"}));
  $("skip").addEventListener("click", () => {
    if (!item) return;
    const reason = $("skip-reason").value.trim();
    if (!reason) { showError("say why you skip (a few words)"); return; }
    post({item_id: item.item_id, kind: "skip", reason: reason});
  });
  load();
})();
