// Loopgate console: progressive enhancement over server-rendered pages. Every page works with
// plain forms; this adds live updates (SSE as a signal to re-fetch a server-rendered fragment),
// keyboard shortcuts, ticking countdowns and the JSON editor's validation. No framework, no build.
(function () {
  "use strict";

  document.documentElement.classList.add("js");
  const body = document.body;
  const page = body.dataset.page || "";
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  // ---------------------------------------------------------------- helpers

  function compact(secs) {
    const s = Math.max(0, Math.floor(secs));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) {
      const m = Math.floor((s % 3600) / 60);
      return Math.floor(s / 3600) + "h" + (m ? " " + m + "m" : "");
    }
    const h = Math.floor((s % 86400) / 3600);
    return Math.floor(s / 86400) + "d" + (h ? " " + h + "h" : "");
  }

  /** Keep ages ("5m ago") and SLA countdowns ("12m left") current. */
  function tickTimes(root) {
    const now = Date.now();
    (root || document).querySelectorAll("[data-since]").forEach(function (el) {
      const t = Date.parse(el.dataset.since);
      if (!isNaN(t)) el.textContent = compact((now - t) / 1000) + " ago";
    });
    (root || document).querySelectorAll("[data-due]").forEach(function (el) {
      const t = Date.parse(el.dataset.due);
      if (isNaN(t)) return;
      const left = (t - now) / 1000;
      el.textContent = left < 0 ? compact(-left) + " overdue" : compact(left) + " left";
      el.classList.toggle("sla-over", left < 0);
      el.classList.toggle("sla-soon", left >= 0 && left < 900);
    });
  }
  tickTimes();
  setInterval(tickTimes, 1000);

  /** Say something to screen readers (and tests) through the polite live region. */
  function announce(message) {
    const el = document.getElementById("live-status");
    if (!el) return;
    el.textContent = "";
    setTimeout(function () { el.textContent = message; }, 30);
  }

  function isTyping(e) {
    const t = e.target;
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }

  function hasModifier(e) {
    return e.ctrlKey || e.metaKey || e.altKey;
  }

  function submitForm(form) {
    if (!form) return;
    if (typeof form.requestSubmit === "function") form.requestSubmit();
    else form.submit();
  }

  /** Re-fetch `el`'s fragment (data-fragment) at most once at a time, coalescing bursts. */
  function refresher(el, apply) {
    let timer = null;
    let busy = false;
    let again = false;
    async function run() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const r = await fetch(el.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (r.status === 401) {
          location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
          return;
        }
        if (r.ok) apply(await r.text(), r);
      } catch (_) {
        // Offline for a moment: the next event or reconnect refreshes again.
      } finally {
        busy = false;
        if (again) { again = false; schedule(); }
      }
    }
    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(run, 100);
    }
    return schedule;
  }

  const EVENT_TYPES = [
    "review.created", "review.claimed", "review.released", "review.decided", "review.expired",
    "review.cancelled", "review.escalated", "review.approval_recorded",
    "action.created", "action.decided",
    "message.created", "message.delivered", "message.discarded",
    "conversation.created", "conversation.escalated", "conversation.taken_over",
    "conversation.handed_back", "conversation.closed", "feedback.created",
  ];

  /** Listen to the session's event stream; `onOpen` runs on every (re)connect. */
  function live(url, onEvent, onOpen) {
    if (!window.EventSource) return;
    const es = new EventSource(url);
    es.onopen = function () {
      body.classList.add("is-live");
      if (onOpen) onOpen();
    };
    es.onerror = function () { body.classList.remove("is-live"); };
    EVENT_TYPES.forEach(function (type) {
      es.addEventListener(type, function () { onEvent(type); });
    });
    window.addEventListener("pagehide", function () { es.close(); });
  }

  // ---------------------------------------------------------------- every page

  document.querySelectorAll("select[data-autosubmit]").forEach(function (s) {
    s.addEventListener("change", function () { submitForm(s.form); });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.dataset.confirm)) e.preventDefault();
    });
  });

  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      const input = document.querySelector(b.dataset.copy);
      if (!input) return;
      input.select();
      if (navigator.clipboard) navigator.clipboard.writeText(input.value).catch(function () {});
      b.textContent = "Copied";
    });
  });

  // Ctrl/Cmd + Enter sends the form a textarea belongs to.
  document.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && e.target.tagName === "TEXTAREA" && e.target.form) {
      e.preventDefault();
      submitForm(e.target.form);
    }
  });

  // ---------------------------------------------------------------- tables: j/k, Enter, click

  function tableNav(tbody) {
    let selected = null;
    function rows() { return Array.prototype.slice.call(tbody.querySelectorAll("tr[data-href]")); }
    function mark(row, focus) {
      rows().forEach(function (r) {
        r.classList.toggle("is-selected", r === row);
        r.removeAttribute("aria-selected");
      });
      if (!row) { selected = null; return; }
      row.setAttribute("aria-selected", "true");
      selected = row.dataset.reviewId || row.dataset.conversationId || null;
      if (focus) {
        const link = row.querySelector("a");
        if (link) link.focus({ preventScroll: true });
        row.scrollIntoView({ block: "nearest" });
      }
    }
    function current() {
      return rows().find(function (r) { return (r.dataset.reviewId || r.dataset.conversationId) === selected; }) || null;
    }
    document.addEventListener("keydown", function (e) {
      if (isTyping(e) || hasModifier(e)) return;
      const all = rows();
      if (!all.length) return;
      const i = all.indexOf(current());
      if (e.key === "j" || (e.key === "ArrowDown" && e.target === body)) {
        e.preventDefault();
        mark(all[Math.min(i + 1, all.length - 1)], true);
      } else if (e.key === "k" || (e.key === "ArrowUp" && e.target === body)) {
        e.preventDefault();
        mark(all[Math.max(i - 1, 0)], true);
      } else if (e.key === "Enter" && current() && !/^(A|BUTTON|SUMMARY)$/.test(e.target.tagName)) {
        e.preventDefault();
        location.href = current().dataset.href;
      }
    });
    tbody.addEventListener("click", function (e) {
      const row = e.target.closest("tr[data-href]");
      if (!row || e.target.closest("a, button, input, select, textarea")) return;
      location.href = row.dataset.href;
    });
    tbody.addEventListener("focusin", function (e) {
      const row = e.target.closest("tr[data-href]");
      if (row) mark(row, false);
    });
    return {
      /** After the rows were replaced: select the same row again, without moving focus. */
      restore: function () {
        const row = current();
        if (row) row.classList.add("is-selected");
      },
    };
  }

  // ---------------------------------------------------------------- inbox

  if (page === "inbox") {
    const tbody = document.getElementById("inbox-rows");
    const nav = tableNav(tbody);
    const ids = function () {
      return Array.prototype.map.call(tbody.querySelectorAll("tr[data-review-id]"), function (r) { return r.dataset.reviewId; });
    };
    const refresh = refresher(tbody, function (html, r) {
      const before = new Set(ids());
      const hadFocus = tbody.contains(document.activeElement);
      tbody.innerHTML = html;
      let added = 0;
      tbody.querySelectorAll("tr[data-review-id]").forEach(function (row) {
        if (!before.has(row.dataset.reviewId)) { row.classList.add("is-new"); added += 1; }
      });
      const count = r.headers.get("x-open-count");
      const countEl = document.getElementById("open-count");
      if (count !== null && countEl) countEl.textContent = count;
      const start = document.querySelector('[data-testid="start-next"]');
      if (start && count !== null) start.disabled = count === "0";
      nav.restore();
      if (hadFocus) {
        const sel = tbody.querySelector("tr.is-selected a");
        if (sel) sel.focus({ preventScroll: true });
      }
      tickTimes(tbody);
      if (added > 0) announce(added === 1 ? "1 new review" : added + " new reviews");
    });
    live("/console/events", function (type) {
      if (type.indexOf("review.") === 0) refresh();
    }, refresh);
  }

  // ---------------------------------------------------------------- conversations list

  if (page === "conversations") {
    const tbody = document.getElementById("conversation-rows");
    const nav = tableNav(tbody);
    const refresh = refresher(tbody, function (html) {
      tbody.innerHTML = html;
      nav.restore();
      tickTimes(tbody);
    });
    live("/console/events", function (type) {
      if (type.indexOf("message.") === 0 || type.indexOf("conversation.") === 0) refresh();
    }, refresh);
  }

  // ---------------------------------------------------------------- review

  /** Live validation of a JSON-object textarea: invalid input disables saving and says why. */
  function jsonEditor(form) {
    const area = form.querySelector("textarea");
    const status = form.querySelector(".json-status");
    const save = form.querySelector('[type="submit"]');
    if (!area || !status) return;
    function where(text, message) {
      const m = /position (\d+)/.exec(message);
      if (!m) return "";
      const pos = Math.min(parseInt(m[1], 10), text.length);
      const before = text.slice(0, pos).split("\n");
      return " (line " + before.length + ", column " + (before[before.length - 1].length + 1) + ")";
    }
    function check() {
      const text = area.value;
      let problem = null;
      let keys = 0;
      if (!text.trim()) {
        problem = "Empty: the arguments must be a JSON object.";
      } else {
        try {
          const v = JSON.parse(text);
          if (v === null || typeof v !== "object" || Array.isArray(v)) {
            problem = "The arguments must be a JSON object ({ ... }), not " + (Array.isArray(v) ? "an array" : v === null ? "null" : "a " + typeof v) + ".";
          } else {
            keys = Object.keys(v).length;
          }
        } catch (err) {
          const msg = String(err.message || err).replace(/^JSON\.parse: /, "");
          problem = "Invalid JSON: " + msg.replace(/\s*\(line \d+ column \d+\)$/, "") + where(text, msg) + ".";
        }
      }
      status.textContent = problem || "Valid JSON object with " + keys + (keys === 1 ? " key." : " keys.");
      status.classList.toggle("is-invalid", !!problem);
      area.classList.toggle("is-invalid", !!problem);
      area.setAttribute("aria-invalid", problem ? "true" : "false");
      if (save) save.disabled = !!problem;
      return !problem;
    }
    area.addEventListener("input", check);
    form.addEventListener("submit", function (e) { if (!check()) e.preventDefault(); });
    check();
  }

  function openPanel(id, focusSelector) {
    const panel = document.getElementById(id);
    if (!panel) return false;
    panel.open = true;
    const target = panel.querySelector(focusSelector || "textarea, input:not([type=hidden])");
    if (target) target.focus();
    return true;
  }

  if (page === "review") {
    document.querySelectorAll("form[data-json-editor]").forEach(jsonEditor);
    const grading = document.getElementById("grade-form");
    document.addEventListener("keydown", function (e) {
      if (hasModifier(e)) return;
      if (e.key === "Escape") {
        if (isTyping(e)) { e.target.blur(); return; }
        e.preventDefault();
        const release = document.getElementById("release-form");
        if (release) submitForm(release);
        else {
          const back = document.querySelector('[data-testid="back"]');
          location.href = back ? back.getAttribute("href") : "/";
        }
        return;
      }
      if (isTyping(e)) return;
      if (e.key === "a") {
        e.preventDefault();
        if (grading) {
          const c = grading.querySelector('[value="correct"]');
          if (c) { c.checked = true; submitForm(grading); }
          return;
        }
        const approve = document.querySelector('[data-testid="approve"]');
        if (approve && !approve.disabled) { approve.disabled = true; submitForm(approve.form); }
        else announce("You cannot approve this review now.");
      } else if (e.key === "r") {
        e.preventDefault();
        if (grading) {
          const i = grading.querySelector('[value="incorrect"]');
          if (i) i.checked = true;
          const c = grading.querySelector("textarea");
          if (c) c.focus();
          return;
        }
        openPanel("reject-panel");
      } else if (e.key === "e") {
        e.preventDefault();
        openPanel("edit-panel");
      }
    });
  }

  // ---------------------------------------------------------------- one conversation

  if (page === "conversation") {
    const box = document.getElementById("transcript");
    const state = box ? box.dataset.state : "";
    const scrollDown = function () {
      const list = box && box.querySelector(".transcript");
      if (list) list.scrollTop = list.scrollHeight;
    };
    scrollDown();
    if (box) {
      let pending = false;
      const refresh = refresher(box, function (html, r) {
        // Do not replace a rewrite the reviewer is typing; refresh when they leave it.
        if (box.contains(document.activeElement) && document.activeElement.tagName === "TEXTAREA") {
          pending = true;
          return;
        }
        const list = box.querySelector(".transcript");
        const atBottom = !list || list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
        box.innerHTML = html;
        tickTimes(box);
        if (atBottom) scrollDown();
        const newState = r.headers.get("x-conversation-state");
        if (newState && newState !== state) {
          const composer = document.getElementById("composer-text");
          if (!composer || !composer.value.trim()) location.reload();
          else announce("The conversation changed hands. Reload to update the controls.");
        }
      });
      box.addEventListener("focusout", function () { if (pending) { pending = false; refresh(); } });
      live("/console/events?conversation=" + encodeURIComponent(box.dataset.conversation), refresh, refresh);

      const composer = document.getElementById("composer");
      if (composer) {
        const text = composer.querySelector("textarea");
        const error = composer.querySelector('[data-testid="composer-error"]');
        const send = composer.querySelector('[type="submit"]');
        composer.addEventListener("submit", async function (e) {
          e.preventDefault();
          if (!text.value.trim()) { text.focus(); return; }
          send.disabled = true;
          try {
            const r = await fetch(composer.action, {
              method: "POST",
              credentials: "same-origin",
              headers: { "X-CSRF-Token": csrf, "Content-Type": "application/x-www-form-urlencoded" },
              body: new URLSearchParams(new FormData(composer)),
            });
            if (r.ok) {
              text.value = "";
              error.hidden = true;
              announce("Message sent");
              refresh();
            } else if (r.status === 401) {
              location.href = "/login?next=" + encodeURIComponent(location.pathname);
            } else {
              error.textContent = (await r.text()) || "The message was not sent.";
              error.hidden = false;
            }
          } catch (_) {
            error.textContent = "The message was not sent: the server cannot be reached.";
            error.hidden = false;
          } finally {
            send.disabled = false;
            text.focus();
          }
        });
      }
    }
  }

  // ---------------------------------------------------------------- policy editor

  if (page === "admin-policy") {
    const area = document.getElementById("policy-text");
    document.querySelectorAll("[data-goto-line]").forEach(function (a) {
      a.addEventListener("click", function (e) {
        if (!area) return;
        e.preventDefault();
        const line = parseInt(a.dataset.gotoLine, 10) || 1;
        const column = parseInt(a.dataset.gotoColumn, 10) || 1;
        const lines = area.value.split("\n");
        let pos = 0;
        for (let i = 0; i < Math.min(line - 1, lines.length); i++) pos += lines[i].length + 1;
        const lineText = lines[Math.min(line - 1, lines.length - 1)] || "";
        const start = pos + Math.min(column - 1, lineText.length);
        area.focus();
        area.setSelectionRange(start, pos + lineText.length);
        const lh = parseFloat(getComputedStyle(area).lineHeight) || 18;
        area.scrollTop = Math.max(0, (line - 4) * lh);
      });
    });
  }
})();
