// SmtpGateway dashboard: reads GET /api/v1/dashboard with the operator key every 10 seconds and draws it.
// Every value from the gateway goes into the page through textContent or an SVG attribute, never as markup.
"use strict";

(function () {
  const KEY = "smtpgw.operatorKey";
  const REFRESH_MS = 10000;
  const SVG = "http://www.w3.org/2000/svg";
  const COUNTERS = ["accepted", "delivered", "deferred", "bounced"];
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) { e.className = className; }
    if (text !== undefined) { e.textContent = String(text); }
    return e;
  }

  function svg(tag, attributes) {
    const e = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) { e.setAttribute(name, String(value)); }
    return e;
  }

  function status(text, error) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", !!error);
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "n/a" : (rate * 100).toFixed(1) + "%";
  }

  // One line chart of 60 per-minute values; the scale is the series' own maximum (at least 1).
  function sparkline(values, counter) {
    const width = 240, height = 28, pad = 2;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "spark " + counter, role: "img" });
    const max = Math.max(1, ...values);
    const title = svg("title");
    title.textContent = `${counter}: ${values.reduce((a, b) => a + b, 0)} in the last hour, at most ${max} in a minute`;
    chart.appendChild(title);
    chart.appendChild(svg("line", { class: "base", x1: 0, y1: height - pad, x2: width, y2: height - pad }));
    const step = values.length > 1 ? width / (values.length - 1) : width;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - pad - (v / max) * (height - 2 * pad)).toFixed(1)}`);
    chart.appendChild(svg("polyline", { points: points.join(" ") }));
    return chart;
  }

  // The pause rate against its threshold: track, complaints and bounces as stacked fills, the threshold as a mark.
  function rateBar(reputation) {
    const width = 240, height = 14;
    const bar = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "bar", role: "img" });
    const rate = reputation.rate || 0, threshold = reputation.threshold || 0;
    const scale = Math.min(1, Math.max(0.05, threshold * 2, rate));
    const x = (r) => Math.min(width, (r / scale) * width);
    const title = svg("title");
    title.textContent = `rate ${percent(reputation.rate)}, pause above ${threshold > 0 ? percent(threshold) : "(off)"}`;
    bar.appendChild(title);
    bar.appendChild(svg("rect", { class: "track", x: 0, y: 0, width, height }));
    const bounce = reputation.bounceRate || 0;
    bar.appendChild(svg("rect", { class: "fill" + (threshold > 0 && rate > threshold ? " over" : ""), x: 0, y: 2, width: x(bounce), height: height - 4 }));
    bar.appendChild(svg("rect", { class: "fill complaints", x: x(bounce), y: 2, width: Math.max(0, x(rate) - x(bounce)), height: height - 4 }));
    if (threshold > 0) {
      bar.appendChild(svg("line", { class: "threshold", x1: x(threshold), y1: 0, x2: x(threshold), y2: height }));
    }
    return bar;
  }

  function tenantCard(t) {
    const card = el("article", "tenant" + (t.paused ? " paused" : ""));
    card.dataset.tenant = t.tenant;
    const title = el("h3");
    title.appendChild(el("span", "name", t.tenant));
    if (t.paused) { title.appendChild(el("span", "badge", "paused")); }
    if (!t.configured) { title.appendChild(el("span", "badge neutral", "not a configured tenant")); }
    card.appendChild(title);

    if (t.configured) {
      const facts = el("div", "facts");
      const queue = el("span", "", "queue ");
      queue.appendChild(el("b", "queue-depth", t.queueDepth));
      facts.appendChild(queue);
      card.appendChild(facts);
    }

    for (const counter of COUNTERS) {
      const row = el("div", "chart " + counter);
      row.appendChild(el("span", "name", counter));
      row.appendChild(sparkline(t.series[counter], counter));
      const total = el("span", "total", t.totals[counter]);
      total.dataset.counter = counter;
      row.appendChild(total);
      card.appendChild(row);
    }

    if (t.reputation) {
      const r = t.reputation;
      const rate = el("div", "rate");
      const label = el("div", "label");
      label.textContent = `bounces ${percent(r.bounceRate)}, complaints ${percent(r.complaintRate)} of ${r.delivered + r.bounced}` +
        ` (pause above ${r.threshold > 0 ? percent(r.threshold) : "off"} once ${r.minimumVolume} outcomes in ${Math.round(r.windowSeconds / 60)} min)`;
      rate.appendChild(label);
      rate.appendChild(rateBar(r));
      card.appendChild(rate);
    }
    return card;
  }

  function render(data) {
    const tenants = $("tenants");
    tenants.replaceChildren(...data.tenants.map(tenantCard));

    const body = $("refusals").querySelector("tbody");
    body.replaceChildren(...data.crossTenantRefusals.map((r) => {
      const row = el("tr");
      row.appendChild(el("td", "", new Date(r.time).toISOString().replace("T", " ").slice(0, 19)));
      row.appendChild(el("td", "", r.tenant ?? ""));
      row.appendChild(el("td", "", r.action));
      row.appendChild(el("td", "", r.reason ?? ""));
      return row;
    }));
    $("refusals").hidden = data.crossTenantRefusals.length === 0;
    $("no-refusals").hidden = data.crossTenantRefusals.length !== 0;
    $("overview").hidden = false;
    status(`Updated ${new Date(data.generatedAt).toISOString().slice(11, 19)} UTC; refreshes every ${REFRESH_MS / 1000} s.`, false);
  }

  function showForm(message, error) {
    clearTimeout(timer);
    $("key-form").hidden = false;
    $("forget").hidden = true;
    $("overview").hidden = true;
    status(message, error);
  }

  async function refresh() {
    clearTimeout(timer);
    const key = sessionStorage.getItem(KEY);
    if (!key) {
      showForm("Enter the operator key to load the dashboard.", false);
      return;
    }
    $("key-form").hidden = true;
    $("forget").hidden = false;
    try {
      const response = await fetch("/api/v1/dashboard", { headers: { Authorization: "Bearer " + key, Accept: "application/json" }, cache: "no-store" });
      if (response.status === 401) {
        sessionStorage.removeItem(KEY);
        showForm("The gateway did not accept that key.", true);
        return;
      }
      if (response.status === 403) {
        sessionStorage.removeItem(KEY);
        showForm("That key is not an operator key.", true);
        return;
      }
      if (!response.ok) {
        status(`The gateway answered ${response.status}; trying again.`, true);
      } else {
        render(await response.json());
      }
    } catch (e) {
      status("The gateway did not answer; trying again.", true);
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("key");
      const key = input.value.trim();
      input.value = "";
      if (key) {
        sessionStorage.setItem(KEY, key);
        refresh();
      }
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      showForm("Key forgotten.", false);
    });
    refresh();
  });
})();
