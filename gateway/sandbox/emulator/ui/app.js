// The staging page. Mail is untrusted input: every value reaches the DOM through textContent or a
// checked URL, never as HTML; an HTML body is shown only in a sandboxed iframe served with its own CSP.
//
// One row per mail (contacts grouped by the mail's MESSAGE_ID header, else by sender, subject and minute),
// its contacts inside; the detail pane shows first what a staging user looks for: the attachments, what
// was left out of the contact, and the stored original.
"use strict";

(() => {
  const POLL_MS = 1000;
  const ORIGINAL = "Original email";
  const LEFT_OUT = "Not in this contact";
  const state = { contacts: [], refused: [], etags: {}, tab: "contacts", query: "", open: new Set() };
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

  const request = (contact) => (contact.Request && typeof contact.Request === "object" ? contact.Request : {});
  const raw = (contact) => request(contact).EmailMessage?.RawMessage ?? {};
  const mailbox = (box) => (box ? (box.DisplayName ? `${box.DisplayName} <${box.EmailAddress}>` : box.EmailAddress ?? "") : "");
  const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;

  // Dates and times that read at a glance and never wrap: "Nov 30 14:05:09"; the full moment in the title.
  const DAY = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
  const stamp = (iso) => `${DAY.format(new Date(iso))} ${CLOCK.format(new Date(iso))}`;
  const moment = (iso) => FULL.format(new Date(iso));

  // What the gateway said it left out: "name (reason); name (reason)", in the contact's references.
  function leftOut(contact) {
    const value = request(contact).References?.[LEFT_OUT]?.Value;
    if (typeof value !== "string" || !value) return [];
    return value.split("; ").map((item) => {
      const match = /^(.*) \(([^()]*)\)$/.exec(item);
      return match ? { name: match[1], reason: match[2] } : { name: item, reason: "" };
    });
  }

  const originalOf = (contact) => request(contact).References?.[ORIGINAL]?.Value;

  // -- the mail a contact came from ---------------------------------------------------------------

  function mailKey(contact) {
    const messageId = raw(contact).Headers?.MESSAGE_ID;
    if (messageId) return `id:${messageId}`;
    const minute = String(contact.ReceivedAt ?? "").slice(0, 16);
    return `mail:${request(contact).FromEmailAddress?.EmailAddress ?? ""}\n${raw(contact).Subject ?? ""}\n${minute}`;
  }

  // Mails newest first (state.contacts is newest first), each with its contacts in the order made.
  function mails(contacts) {
    const groups = new Map();
    for (const contact of contacts) {
      const key = mailKey(contact);
      if (!groups.has(key)) groups.set(key, { key, contacts: [] });
      groups.get(key).contacts.unshift(contact);
    }
    return [...groups.values()];
  }

  function matches(contact) {
    if (!state.query) return true;
    const asked = request(contact);
    const extra = asked.AdditionalRecipients ?? {};
    const haystack = [
      mailbox(asked.FromEmailAddress),
      asked.DestinationEmailAddress,
      ...(extra.ToAddresses ?? []).map(mailbox),
      ...(extra.CcAddresses ?? []).map(mailbox),
      raw(contact).Subject,
      contact.ContactId,
    ].join("\n").toLowerCase();
    return haystack.includes(state.query);
  }

  // -- polling --------------------------------------------------------------------------------------

  async function poll(path, key) {
    const headers = state.etags[key] ? { "If-None-Match": state.etags[key] } : {};
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 304) return null;
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    state.etags[key] = response.headers.get("ETag");
    return response.json();
  }

  function take(contacts, calls) {
    if (contacts) state.contacts = contacts.contacts.slice().reverse();
    if (calls) state.refused = calls.calls.slice().reverse();
  }

  async function refresh() {
    try {
      const contacts = await poll("/_emulator/contacts", "contacts");
      const calls = await poll("/_emulator/calls?refused=1", "calls");
      take(contacts, calls);
      if (contacts || calls) render();
      setLive();
    } catch (error) {
      setStatus("the emulator does not answer; trying again", true);
    } finally {
      setTimeout(refresh, POLL_MS);
    }
  }

  // The state the page was served with: the first paint shows the list, without waiting for a poll.
  function initialState() {
    try {
      const initial = JSON.parse($("initial-state").textContent);
      if (!initial) return false;
      take(initial.contacts, initial.calls);
      state.etags = { contacts: initial.etag, calls: initial.etag };
      return true;
    } catch {
      return false;
    }
  }

  function setStatus(text, down) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("down", down);
  }

  function setLive() {
    const count = mails(state.contacts).length;
    setStatus(`live · ${plural(state.contacts.length, "contact")} from ${plural(count, "mail")}`, false);
  }

  // -- the lists ------------------------------------------------------------------------------------

  function render() {
    const shown = state.contacts.filter(matches);
    const groups = mails(shown);
    const total = state.contacts.length;
    $("contact-count").textContent = state.query ? `${shown.length} of ${total}` : String(total);
    const refusedCount = $("refused-count");
    refusedCount.textContent = String(state.refused.length);
    refusedCount.classList.toggle("some", state.refused.length > 0);
    const selected = selectedId();
    const table = $("contacts");
    for (const body of [...table.tBodies]) body.remove();
    table.append(...groups.map((group) => mailRows(group, selected)));
    $("refused").tBodies[0].replaceChildren(...state.refused.map(refusedRow));
    table.hidden = state.tab !== "contacts";
    $("refused").hidden = state.tab !== "refused";
    const empty = $("empty");
    empty.hidden = state.tab === "contacts" ? shown.length > 0 : state.refused.length > 0;
    empty.textContent =
      state.tab === "refused"
        ? "No refused calls: Connect took every request."
        : total
          ? "No contact matches the search."
          : "No contacts yet. Send a mail to the gateway and it appears here.";
    renderDetail();
  }

  function mailRows(group, selected) {
    const first = group.contacts[0];
    const asked = request(first);
    const several = group.contacts.length > 1;
    const chosen = group.contacts.some((c) => c.ContactId === selected);
    const open = several && (state.open.has(group.key) || chosen || Boolean(state.query));
    const omitted = leftOut(first);
    const files = el("td", { className: "files", text: (asked.Attachments ?? []).length });
    if (omitted.length) {
      files.append(el("span", { className: "badge warn", text: `+${omitted.length} left out`, title: omitted.map((o) => o.name).join("\n") }));
    }
    const destination = asked.DestinationEmailAddress ?? "";
    const row = el(
      "tr",
      { className: "mail" },
      el("td", { text: stamp(first.ReceivedAt), className: "time", title: moment(first.ReceivedAt) }),
      el("td", { className: "from", title: mailbox(asked.FromEmailAddress) }, fromCell(asked.FromEmailAddress)),
      el(
        "td",
        { className: "to", title: group.contacts.map((c) => request(c).DestinationEmailAddress).join("\n") },
        el("span", { className: "name", text: destination }),
        several ? el("span", { className: "more", text: `and ${group.contacts.length - 1} more` }) : null,
      ),
      el("td", { text: raw(first).Subject ?? "", className: "subject", title: raw(first).Subject ?? "" }),
      files,
      several
        ? el("td", { text: `${group.contacts.length} contacts`, className: "contact" }, el("span", { text: open ? " ▾" : " ▸", className: "toggle" }))
        : el("td", { text: first.ContactId, className: "contact id", title: first.ContactId }),
    );
    row.dataset.contact = first.ContactId;
    row.dataset.contacts = String(group.contacts.length);
    if (chosen) row.classList.add("selected");
    row.addEventListener("click", () => {
      if (several && open && chosen) {
        state.open.delete(group.key);
        history.replaceState(null, "", location.pathname);
        render();
        return;
      }
      state.open.add(group.key);
      choose(first.ContactId);
    });
    const body = el("tbody", { className: "group" }, row);
    if (open) body.append(...group.contacts.map((contact, index) => contactRow(contact, index, group, selected)));
    return body;
  }

  function fromCell(box) {
    if (!box) return el("span", { text: "" });
    const name = box.DisplayName ? el("span", { className: "name", text: box.DisplayName }) : null;
    return el("span", {}, name, el("span", { className: box.DisplayName ? "address" : "name", text: box.EmailAddress ?? "" }));
  }

  function contactRow(contact, index, group, selected) {
    const nth = el("td", { className: "nth", text: `contact ${index + 1} of ${group.contacts.length}` });
    nth.colSpan = 2;
    const id = el("td", { text: contact.ContactId, className: "id", title: contact.ContactId });
    id.colSpan = 3;
    const row = el("tr", { className: "contact-row" }, nth, el("td", { text: request(contact).DestinationEmailAddress ?? "", className: "to" }), id);
    row.dataset.contact = contact.ContactId;
    if (contact.ContactId === selected) row.classList.add("selected");
    row.addEventListener("click", (event) => {
      event.stopPropagation();
      choose(contact.ContactId);
    });
    return row;
  }

  function refusedRow(call) {
    const asked = call.Request && typeof call.Request === "object" ? call.Request : {};
    const subject = asked.EmailMessage?.RawMessage?.Subject;
    const sender = mailbox(asked.FromEmailAddress);
    const mail = subject !== undefined || sender
      ? el(
          "td",
          { className: "mail-cell" },
          el("span", { className: "subject-line", text: subject || "(no subject)" }),
          el("span", { className: "route", text: `${sender || "?"} → ${asked.DestinationEmailAddress ?? "?"}` }),
        )
      : el("td", { className: "mail-cell note", text: asked.InstanceId ? `instance ${asked.InstanceId}` : "—" });
    return el(
      "tr",
      {},
      el("td", { text: stamp(call.ReceivedAt), className: "time", title: moment(call.ReceivedAt) }),
      el("td", {}, el("span", { className: "operation", text: call.Operation }), " ", el("span", { className: "badge bad", text: call.Status })),
      mail,
      el("td", { className: "error-cell" }, el("b", { text: call.Error ?? "" }), el("span", { className: "message", text: call.Response?.Message ?? "" })),
    );
  }

  function selectedId() {
    const match = /^#contact=(.+)$/.exec(location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  function choose(id) {
    location.hash = `contact=${encodeURIComponent(id)}`;
  }

  // -- the detail pane --------------------------------------------------------------------------------

  let shownDetail = null; // what is drawn, so that polling does not reload the iframe

  function renderDetail() {
    const detail = $("detail");
    const id = selectedId();
    const contact = state.contacts.find((c) => c.ContactId === id);
    const siblings = contact ? state.contacts.filter((c) => mailKey(c) === mailKey(contact)).reverse() : [];
    const key = contact ? `${id}|${siblings.length}|${JSON.stringify(contact.Attachments)}` : `hint|${state.contacts.length}`;
    if (shownDetail === key) return;
    shownDetail = key;
    detail.classList.toggle("empty-pane", !contact);
    detail.replaceChildren(...(contact ? detailParts(contact, siblings) : hint()).filter((part) => part !== null));
  }

  function hint() {
    return [
      el(
        "div",
        { className: "hint" },
        el("h2", { text: state.contacts.length ? "Choose a mail on the left" : "Waiting for mail" }),
        el("p", { text: "Here you see what Amazon Connect received for it, as a contact:" }),
        el(
          "ul",
          {},
          el("li", { text: "the attachments, and the files left out of the contact, with the reason" }),
          el("li", { text: "the stored original message, when the gateway kept one" }),
          el("li", { text: "the body as the agent sees it, and the threading headers" }),
          el("li", { text: "every field of the StartEmailContact request" }),
        ),
        el("p", { className: "note", text: "A mail to several recipients makes one contact each: they are listed inside its row." }),
      ),
    ];
  }

  function detailParts(contact, siblings) {
    const asked = request(contact);
    const message = raw(contact);
    const extra = asked.AdditionalRecipients ?? {};
    const close = el("button", { text: "Close", className: "close" });
    close.type = "button";
    close.addEventListener("click", () => { history.replaceState(null, "", location.pathname); render(); });
    const parts = [
      close,
      el("h2", { text: message.Subject ?? "(no subject)" }),
      meta("From", mailbox(asked.FromEmailAddress)),
      meta("Destination", asked.DestinationEmailAddress),
      meta("To", (extra.ToAddresses ?? []).map(mailbox).join(", ")),
      meta("Cc", (extra.CcAddresses ?? []).map(mailbox).join(", ")),
      meta("Received", moment(contact.ReceivedAt)),
      meta("ContactId", contact.ContactId),
      meta("RelatedContactId", asked.RelatedContactId),
      siblings.length > 1 ? siblingList(contact, siblings) : null,
      el("h3", { text: `Attachments (${(asked.Attachments ?? []).length})` }),
      attachments(contact, asked),
      omissions(contact),
      original(contact),
      checks(asked),
      el("h3", { text: `Body (${message.ContentType ?? "?"})` }),
      body(contact, message),
      el("h3", { text: "Headers" }),
      fields(Object.entries(message.Headers ?? {})),
      el("h3", { text: "Every field of the StartEmailContact request" }),
      fields(flatten(asked, "")),
    ];
    return parts;
  }

  function meta(label, value) {
    if (!value) return null;
    return el("p", { className: "meta" }, el("b", { text: `${label}: ` }), String(value));
  }

  function siblingList(contact, siblings) {
    const list = el("ol", { className: "siblings" });
    for (const sibling of siblings) {
      const item = el("li", {}, el("span", { text: request(sibling).DestinationEmailAddress ?? "" }), " ");
      if (sibling.ContactId === contact.ContactId) {
        item.append(el("span", { className: "note", text: "(this one)" }));
      } else {
        const open = el("a", { text: sibling.ContactId, className: "id" });
        open.href = `#contact=${encodeURIComponent(sibling.ContactId)}`;
        item.append(open);
      }
      list.append(item);
    }
    return el("details", { className: "siblings-box" }, el("summary", { text: `This mail made ${siblings.length} contacts` }), list);
  }

  function attachments(contact, asked) {
    const list = el("ul", { className: "files" });
    (asked.Attachments ?? []).forEach((attachment, index) => {
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
    if (!list.childElementCount) list.append(el("li", { text: "none in the contact", className: "note" }));
    return list;
  }

  function omissions(contact) {
    const items = leftOut(contact);
    if (!items.length) return null;
    const list = el("ul", {});
    for (const item of items) {
      list.append(el("li", {}, el("b", { text: item.name }), item.reason ? el("span", { className: "reason", text: ` ${item.reason}` }) : null));
    }
    return el(
      "div",
      { className: "left-out" },
      el("p", { className: "left-out-title", text: `Left out of this contact (${items.length})` }),
      list,
      el("p", {
        className: "note",
        text: originalOf(contact)
          ? "The agent does not get these; the original message below still has them."
          : "The agent does not get these, and the gateway kept no original that has them.",
      }),
    );
  }

  // The gateway's own checks (sender authentication, spam, virus), as the contact's attributes carry them.
  const CHECKS = [
    ["SPF", "gateway_spf", []],
    ["DKIM", "gateway_dkim", []],
    ["DMARC", "gateway_dmarc", [["policy", "gateway_dmarc_policy"]]],
    ["ARC", "gateway_arc", []],
    ["Spam", "gateway_spam", [["action", "gateway_spam_action"], ["score", "gateway_spam_score"]]],
    ["Virus", "gateway_virus", [["found", "gateway_virus_found"]]],
  ];

  function checks(asked) {
    const attributes = asked.Attributes ?? {};
    const list = el("ul", { className: "checks" });
    for (const [label, key, details] of CHECKS) {
      const value = attributes[key];
      if (typeof value !== "string") continue;
      const said = details.filter(([, detail]) => attributes[detail]).map(([name, detail]) => `${name} ${attributes[detail]}`);
      const outcome = /^pass$/i.test(value) ? "good" : /^(fail|softfail|permerror)$/i.test(value) ? "bad" : "other";
      list.append(
        el(
          "li",
          { className: `check ${outcome}` },
          el("b", { text: `${label}: ` }),
          el("span", { className: "verdict", text: value }),
          said.length ? el("span", { className: "note", text: ` (${said.join(", ")})` }) : null,
        ),
      );
    }
    if (!list.childElementCount) return null;
    const quarantine = attributes.gateway_quarantine;
    return el(
      "div",
      { className: "checks-box" },
      el("h3", { text: "The gateway's checks" }),
      list,
      quarantine ? el("p", { className: "left-out-title", text: `Delivered tagged: ${quarantine}` }) : null,
    );
  }

  function original(contact) {
    const locator = originalOf(contact);
    if (!locator) return null;
    const path = `/_emulator/contacts/${encodeURIComponent(contact.ContactId)}/original`;
    const show = el("button", { text: "Show the original", className: "show-original" });
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
    return el(
      "div",
      { className: "original" },
      el("p", {}, el("b", { text: "Original message: " }), link(path, "original.eml", "original.eml"), " ", show),
      el("p", { className: "note locator", text: `linked from the contact as "${ORIGINAL}": ${locator}` }),
      pre,
    );
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

  function flatten(value, path) {
    if (value !== null && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [`${path}[${i}]`, v]) : Object.entries(value).map(([k, v]) => [path ? `${path}.${k}` : k, v]);
      if (!entries.length) return [[path, Array.isArray(value) ? "[]" : "{}"]];
      return entries.flatMap(([p, v]) => flatten(v, p));
    }
    if (path === "EmailMessage.RawMessage.Body") return [[path, `(${String(value).length} characters, shown above)`]];
    return [[path, typeof value === "string" ? value : JSON.stringify(value)]];
  }

  // A field's path may break after its dots ("EmailMessage.RawMessage.<break>Subject"), never inside a name.
  function path(name) {
    return String(name).split(/(?<=\.)/).flatMap((part, index) => (index ? [el("wbr"), part] : [part]));
  }

  function fields(pairs) {
    const list = el("dl", { className: "fields" });
    for (const [name, value] of pairs) list.append(el("dt", {}, ...path(name)), el("dd", { text: value }));
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
      state.open.clear();
      history.replaceState(null, "", location.pathname);
      render();
      setLive();
    });
    $("tab-contacts").addEventListener("click", () => selectTab("contacts"));
    $("tab-refused").addEventListener("click", () => selectTab("refused"));
    window.addEventListener("hashchange", render);
    if (initialState()) setLive();
    render();
    setTimeout(refresh, state.etags.contacts ? POLL_MS : 0);
  });
})();
