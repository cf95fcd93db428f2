// The staging page. Mail is untrusted input: every value reaches the DOM through textContent or a
// checked URL, never as HTML; an HTML body is shown only in a sandboxed iframe served with its own CSP.
"use strict";

(() => {
  const POLL_MS = 1000;
  const state = { contacts: [], refused: [], etags: {}, tab: "contacts", query: "" };
  const $ = (id) => document.getElementById(id);

  function el(tag, options = {}, ...children) {
    const node = document.createElement(tag);
    if (options.text !== undefined) node.textContent = String(options.text);
    if (options.className) node.className = options.className;
    if (options.title) node.title = String(options.title);
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function safeUrl(value) {
    try {
      const url = new URL(String(value), location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function link(href, text, download) {
    const url = safeUrl(href);
    if (url === null) return el("span", { text });
    const a = el("a", { text });
    a.href = url;
    a.rel = "noopener noreferrer";
    if (download) a.download = download;
    return a;
  }

  const raw = (contact) => contact.Request?.EmailMessage?.RawMessage ?? {};
  const mailbox = (box) => (box ? (box.DisplayName ? `${box.DisplayName} <${box.EmailAddress}>` : box.EmailAddress) : "");
  const time = (iso) => new Date(iso).toLocaleString();
  const shortTime = (iso) => {
    const moment = new Date(iso);
    const today = moment.toDateString() === new Date().toDateString();
    return today ? moment.toLocaleTimeString() : moment.toLocaleString();
  };

  async function poll(path, key) {
    const headers = state.etags[key] ? { "If-None-Match": state.etags[key] } : {};
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 304) return null;
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    state.etags[key] = response.headers.get("ETag");
    return response.json();
  }

  async function refresh() {
    try {
      const contacts = await poll("/_emulator/contacts", "contacts");
      const calls = await poll("/_emulator/calls?refused=1", "calls");
      if (contacts) state.contacts = contacts.contacts.slice().reverse();
      if (calls) state.refused = calls.calls.slice().reverse();
      if (contacts || calls) render();
      setStatus(`live · ${state.contacts.length} contact(s)`, false);
    } catch (error) {
      setStatus("the emulator does not answer; trying again", true);
    } finally {
      setTimeout(refresh, POLL_MS);
    }
  }

  function setStatus(text, down) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("down", down);
  }

  function matches(contact) {
    if (!state.query) return true;
    const request = contact.Request ?? {};
    const extra = request.AdditionalRecipients ?? {};
    const haystack = [
      mailbox(request.FromEmailAddress),
      request.DestinationEmailAddress,
      ...(extra.ToAddresses ?? []).map(mailbox),
      ...(extra.CcAddresses ?? []).map(mailbox),
      raw(contact).Subject,
      contact.ContactId,
    ].join("\n").toLowerCase();
    return haystack.includes(state.query);
  }

  function render() {
    const shown = state.contacts.filter(matches);
    $("contact-count").textContent = String(state.contacts.length);
    const refusedCount = $("refused-count");
    refusedCount.textContent = String(state.refused.length);
    refusedCount.classList.toggle("some", state.refused.length > 0);
    const selected = selectedId();
    $("contacts").tBodies[0].replaceChildren(...shown.map((contact) => contactRow(contact, selected)));
    $("refused").tBodies[0].replaceChildren(...state.refused.map(refusedRow));
    $("contacts").hidden = state.tab !== "contacts";
    $("refused").hidden = state.tab !== "refused";
    const empty = $("empty");
    empty.hidden = state.tab !== "contacts" || shown.length > 0;
    empty.textContent = state.contacts.length
      ? "No contact matches the search."
      : "No contacts yet. Send a mail to the gateway and it appears here.";
    renderDetail();
  }

  function contactRow(contact, selected) {
    const request = contact.Request ?? {};
    const row = el(
      "tr",
      {},
      el("td", { text: shortTime(contact.ReceivedAt), className: "time", title: time(contact.ReceivedAt) }),
      el("td", { text: mailbox(request.FromEmailAddress) }),
      el("td", { text: request.DestinationEmailAddress ?? "" }),
      el("td", { text: raw(contact).Subject ?? "", className: "subject", title: raw(contact).Subject ?? "" }),
      el("td", { text: (request.Attachments ?? []).length }),
      el("td", { text: contact.ContactId, className: "id", title: contact.ContactId }),
      el("td", { text: request.RelatedContactId ?? "", className: "id", title: request.RelatedContactId ?? "" }),
    );
    row.dataset.contact = contact.ContactId;
    if (contact.ContactId === selected) row.classList.add("selected");
    row.addEventListener("click", () => { location.hash = `contact=${encodeURIComponent(contact.ContactId)}`; });
    return row;
  }

  function refusedRow(call) {
    const request = call.Request && typeof call.Request === "object" ? call.Request : {};
    return el(
      "tr",
      {},
      el("td", { text: shortTime(call.ReceivedAt), className: "time", title: time(call.ReceivedAt) }),
      el("td", { text: call.Operation }),
      el("td", { text: call.Status, className: "bad" }),
      el("td", { text: call.Error ?? "" }),
      el("td", { text: call.Response?.Message ?? "" }),
      el("td", { text: request.DestinationEmailAddress ?? "" }),
    );
  }

  function selectedId() {
    const match = /^#contact=(.+)$/.exec(location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  let shownDetail = null; // the contact id and version drawn, so that polling does not reload the iframe

  function renderDetail() {
    const detail = $("detail");
    const id = selectedId();
    const contact = state.contacts.find((c) => c.ContactId === id);
    if (!contact) {
      detail.hidden = true;
      detail.replaceChildren();
      shownDetail = null;
      return;
    }
    const key = `${id}|${JSON.stringify(contact.Attachments)}`;
    if (shownDetail === key) return;
    shownDetail = key;
    detail.hidden = false;
    detail.replaceChildren(...detailParts(contact).filter((part) => part !== null));
  }

  function detailParts(contact) {
    const request = contact.Request ?? {};
    const message = raw(contact);
    const extra = request.AdditionalRecipients ?? {};
    const close = el("button", { text: "Close", className: "close" });
    close.type = "button";
    close.addEventListener("click", () => { history.replaceState(null, "", location.pathname); render(); });
    const parts = [
      close,
      el("h2", { text: message.Subject ?? "(no subject)" }),
      meta("From", mailbox(request.FromEmailAddress)),
      meta("Destination", request.DestinationEmailAddress),
      meta("To", (extra.ToAddresses ?? []).map(mailbox).join(", ")),
      meta("Cc", (extra.CcAddresses ?? []).map(mailbox).join(", ")),
      meta("Received", time(contact.ReceivedAt)),
      meta("ContactId", contact.ContactId),
      meta("RelatedContactId", request.RelatedContactId),
      el("h3", { text: `Body (${message.ContentType ?? "?"})` }),
      body(contact, message),
      el("h3", { text: `Attachments (${(request.Attachments ?? []).length})` }),
      attachments(contact, request),
    ];
    const original = request.References?.["Original email"]?.Value;
    if (original) parts.push(el("h3", { text: "Original message" }), originalView(contact, original));
    parts.push(
      el("h3", { text: "Headers" }),
      fields(Object.entries(message.Headers ?? {}).map(([name, value]) => [name, value])),
      el("h3", { text: "Every field of the StartEmailContact request" }),
      fields(flatten(request, "")),
    );
    return parts;
  }

  function meta(label, value) {
    if (!value) return null;
    return el("p", { className: "meta" }, el("b", { text: `${label}: ` }), String(value));
  }

  function body(contact, message) {
    if (message.ContentType === "text/html") {
      const frame = el("iframe", { className: "body", title: "HTML body (sandboxed: no scripts, no remote content)" });
      frame.setAttribute("sandbox", "");
      frame.setAttribute("referrerpolicy", "no-referrer");
      frame.src = `/_emulator/contacts/${encodeURIComponent(contact.ContactId)}/body`;
      return frame;
    }
    return el("pre", { text: message.Body ?? "" });
  }

  function attachments(contact, request) {
    const list = el("ul", { className: "files" });
    (request.Attachments ?? []).forEach((attachment, index) => {
      const fetched = (contact.Attachments ?? [])[index];
      const note = !fetched
        ? ""
        : fetched.fetched
          ? `fetched by Connect, ${fetched.size} bytes`
          : fetched.error
            ? `Connect could not fetch it: ${fetched.error}`
            : "not fetched yet";
      list.append(
        el(
          "li",
          {},
          link(attachment.S3Url, attachment.FileName, attachment.FileName),
          el("span", { text: note, className: fetched && fetched.error ? "note bad" : "note" }),
        ),
      );
    });
    if (!list.childElementCount) list.append(el("li", { text: "none", className: "note" }));
    return list;
  }

  function originalView(contact, locator) {
    const path = `/_emulator/contacts/${encodeURIComponent(contact.ContactId)}/original`;
    const box = el("div", {});
    const show = el("button", { text: "Show the original" });
    show.type = "button";
    const pre = el("pre", {});
    pre.hidden = true;
    show.addEventListener("click", async () => {
      const response = await fetch(path, { cache: "no-store" });
      pre.textContent = response.ok
        ? new TextDecoder("utf-8").decode(await response.arrayBuffer())
        : `Not available here (${response.status}); it is stored at ${locator}`;
      pre.hidden = false;
    });
    box.append(el("p", { className: "meta" }, link(path, "original.eml", "original.eml"), el("span", { text: locator, className: "note" })), show, pre);
    return box;
  }

  function flatten(value, path) {
    if (value !== null && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [`${path}[${i}]`, v]) : Object.entries(value).map(([k, v]) => [path ? `${path}.${k}` : k, v]);
      if (!entries.length) return [[path, Array.isArray(value) ? "[]" : "{}"]];
      return entries.flatMap(([p, v]) => flatten(v, p));
    }
    if (path === "EmailMessage.RawMessage.Body") return [[path, `(${String(value).length} characters, shown above)`]];
    return [[path, typeof value === "string" ? value : JSON.stringify(value)]];
  }

  function fields(pairs) {
    const list = el("dl", { className: "fields" });
    for (const [name, value] of pairs) list.append(el("dt", { text: name }), el("dd", { text: value }));
    if (!pairs.length) list.append(el("dd", { text: "none", className: "note" }));
    return list;
  }

  function selectTab(tab) {
    state.tab = tab;
    $("tab-contacts").setAttribute("aria-selected", String(tab === "contacts"));
    $("tab-refused").setAttribute("aria-selected", String(tab === "refused"));
    render();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("search").addEventListener("input", (event) => {
      state.query = event.target.value.trim().toLowerCase();
      render();
    });
    $("clear").addEventListener("click", async () => {
      await fetch("/_emulator/contacts", { method: "DELETE" });
      state.contacts = [];
      state.refused = [];
      history.replaceState(null, "", location.pathname);
      render();
    });
    $("tab-contacts").addEventListener("click", () => selectTab("contacts"));
    $("tab-refused").addEventListener("click", () => selectTab("refused"));
    window.addEventListener("hashchange", render);
    refresh();
  });
})();
