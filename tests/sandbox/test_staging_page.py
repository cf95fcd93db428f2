"""The staging page in a real headless Chromium, against the real ``mail-gateway sandbox`` command.

Chromium and its driver come from Debian's packages (``.ci/run`` installs them); selenium drives them with
no browser download. Outside CI the test skips with the reason when they are missing.
``MAIL_GATEWAY_SCREENSHOT=path.png`` also saves the screenshot the README shows (from the test of what was
left out, with a forwarded mail opened).

What is "readable" is measured in the browser, never by eye: a word broken over two lines has two line
boxes (``Range.getClientRects``), a cut header is wider than its cell, an element "without scrolling" lies
inside the viewport while its pane is at the top.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import smtplib
import threading
import time
import urllib.request
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import pytest

from ..helpers import Sandbox, eventually, make_mail, open_page


class Beacon:
    """An HTTP server that counts every request: a payload that runs, or a remote load, would call it."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def send(port: int, message: EmailMessage, *recipients: str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("app.staging.test")
        client.mail("app@staging.test")
        for recipient in recipients or ("support@example.com",):
            client.rcpt(recipient)
        code, text = client.data(message.as_bytes())
    return f"{code} {text.decode()}"


def plain(subject: str, body: str, **attachments: bytes) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Order Service <orders@shop.test>"
    message["To"] = "support@example.com"
    message["Subject"] = subject
    message["Message-ID"] = f"<{abs(hash(subject))}@shop.test>"
    message.set_content(body)
    for name, data in attachments.items():
        filename = name.replace("_", ".")
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return message


POLLS = ["*/_emulator/contacts*", "*/_emulator/calls*"]


def blocking_polls(driver: Any, urls: list[str]) -> None:
    """Make the page's polls fail (or work again, with ``[]``): what it shows then came with the page."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": urls})


def rows(driver: Any) -> list[Any]:
    """One row per mail (its contacts are rows of their own, inside, when it is opened)."""
    from selenium.webdriver.common.by import By

    return [row for row in driver.find_elements(By.CSS_SELECTOR, "#contacts tr.mail") if row.is_displayed()]


# For each element, how many lines its text takes, or the words broken over two lines.
LINES = """
return [...document.querySelectorAll(arguments[0])].map((element) => {
  const range = document.createRange();
  range.selectNodeContents(element);
  return new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top))).size;
});
"""
BROKEN_WORDS = """
const broken = [];
for (const element of document.querySelectorAll(arguments[0])) {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const word of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, word.index);
      range.setEnd(node, word.index + word[0].length);
      const boxes = [...range.getClientRects()].filter((r) => r.width > 0);
      if (new Set(boxes.map((r) => Math.round(r.top))).size > 1) broken.push(word[0]);
    }
  }
}
return broken;
"""
CUT = (
    "return [...document.querySelectorAll(arguments[0])].filter((e) => e.scrollWidth > e.clientWidth)"
    ".map((e) => e.textContent)"
)
IN_VIEW = (
    "const box = arguments[0].getBoundingClientRect(); return box.top >= 0 && box.bottom <= innerHeight;"
)


def subjects(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.find_element(By.CSS_SELECTOR, "td.subject").text for row in rows(driver)]


def test_contacts_appear_live_open_and_download(browser: Any, sandbox: Sandbox) -> None:
    from selenium.webdriver.common.by import By

    page = f"http://127.0.0.1:{sandbox.http_port}/"
    open_page(browser, page)
    assert "No contacts yet" in browser.find_element(By.ID, "empty").text
    report = b"%PDF-1.4 quarterly report " + os.urandom(2048)
    send(sandbox.smtp_port, plain("Invoice 4711 is wrong", "Please check the amount.", invoice_pdf=report))
    eventually(lambda: subjects(browser) == ["Invoice 4711 is wrong"])  # no reload: the page polls
    send(sandbox.smtp_port, plain("Where is my parcel?", "Tracking says nothing."))
    eventually(lambda: subjects(browser) == ["Where is my parcel?", "Invoice 4711 is wrong"])  # newest first
    first = rows(browser)[1]
    cells = [cell.text for cell in first.find_elements(By.TAG_NAME, "td")]
    assert cells[1:5] == [
        "Order Service\norders@shop.test",
        "support@example.com",
        "Invoice 4711 is wrong",
        "1",
    ]

    first.click()
    detail = eventually(lambda: browser.find_element(By.ID, "detail"))
    eventually(lambda: "Invoice 4711 is wrong" in detail.text)
    text = detail.text
    assert "Please check the amount." in text
    for field in (
        "InstanceId",
        "sandbox-instance",
        "ClientToken",
        "FromEmailAddress.EmailAddress",
        "MESSAGE_ID",
    ):
        assert field in text
    link = detail.find_element(By.LINK_TEXT, "invoice.pdf")
    link.click()
    downloads = browser.downloads
    downloaded = eventually(lambda: [p for p in downloads.iterdir() if not p.name.endswith(".crdownload")])
    assert [p.read_bytes() for p in downloaded] == [report]

    search = browser.find_element(By.ID, "search")
    count = browser.find_element(By.ID, "contact-count")
    search.send_keys("parcel")
    eventually(lambda: subjects(browser) == ["Where is my parcel?"])
    assert count.text == "1 of 2"  # the count follows the search
    search.clear()
    search.send_keys("orders@shop")
    eventually(lambda: len(subjects(browser)) == 2)
    assert count.text == "2 of 2"

    browser.find_element(By.ID, "clear").click()
    eventually(lambda: subjects(browser) == [])
    with urllib.request.urlopen(f"{page}_emulator/contacts", timeout=10) as response:
        assert json.load(response)["contacts"] == []


def test_hostile_mail_runs_nothing_and_loads_nothing(browser: Any, sandbox: Sandbox) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    beacon = Beacon()
    try:
        payload = (
            f"<script>fetch('{beacon.url}/script');top.document.title='pwned';</script>"
            f"<img src=x onerror=\"new Image().src='{beacon.url}/onerror';alert(1)\">"
            f'<img src="{beacon.url}/remote.png">'
            f"<svg onload=\"fetch('{beacon.url}/svg')\"></svg>"
            f"<a href=\"javascript:fetch('{beacon.url}/js-link')\">link</a>"
            "<p style='color:#0a0'>Visible HTML content</p>"
        )
        message = EmailMessage()
        message["From"] = f"\"<img src=x onerror=fetch('{beacon.url}/name')>\" <evil@attacker.test>"
        message["To"] = "support@example.com"
        script = f"</script><script src='{beacon.url}/data.js'></script>"
        subject = f"{script}<img src=x onerror=fetch('{beacon.url}/s')>"
        message["Subject"] = subject
        message["Message-ID"] = "<xss-1@attacker.test>"
        message.set_content("plain part")
        message.add_alternative(payload, subtype="html")
        message.add_attachment(
            b"data", maintype="application", subtype="pdf", filename='"><img src=x onerror=alert(2)>.pdf'
        )
        open_page(browser, f"http://127.0.0.1:{sandbox.http_port}/")
        title = browser.title
        send(sandbox.smtp_port, message)
        eventually(lambda: len(rows(browser)) == 1)
        assert subjects(browser) == [subject]  # as text
        rows(browser)[0].click()
        frame = eventually(lambda: browser.find_element(By.CSS_SELECTOR, "#detail iframe.body"))
        assert frame.get_attribute("sandbox") == ""
        browser.switch_to.frame(frame)
        eventually(lambda: "Visible HTML content" in browser.find_element(By.TAG_NAME, "body").text)
        browser.switch_to.default_content()
        time.sleep(1.5)  # time for anything that could run to run
        assert beacon.hits == []
        assert browser.title == title
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018
        assert (
            browser.execute_script("return document.querySelectorAll('#detail img, #contacts img').length")
            == 0
        )
        detail = browser.find_element(By.ID, "detail").text
        assert '"><img src=x onerror=alert(2)>.pdf' in detail
        # A fresh load carries the hostile mail in the page itself (its first paint): still only data.
        browser.refresh()
        assert subjects(browser) == [subject]
        time.sleep(1.5)
        assert beacon.hits == [] and browser.title == title
        assert browser.execute_script("return document.scripts.length") == 2  # app.js and the data block
    finally:
        beacon.close()


def test_refused_calls_and_the_stored_original_are_shown(browser: Any, sandbox: Sandbox) -> None:
    from selenium.webdriver.common.by import By

    base = f"http://127.0.0.1:{sandbox.http_port}"
    faults = urllib.request.Request(
        f"{base}/_emulator/faults", data=b'{"error_rate": 1.0}', method="PUT",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(faults, timeout=10).close()
    open_page(browser, f"{base}/")
    reply = send(sandbox.smtp_port, plain("Refused by Connect", "x"))
    assert reply.startswith("451")
    count = browser.find_element(By.ID, "refused-count")
    eventually(lambda: int(count.text) >= 1)
    browser.find_element(By.ID, "tab-refused").click()
    refused = browser.find_element(By.ID, "refused")
    eventually(lambda: "InternalServiceException" in refused.text)
    [row] = refused.find_elements(By.CSS_SELECTOR, "tbody tr")
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1].split() == ["StartEmailContact", "500"]
    assert cells[2] == "Refused by Connect\nOrder Service <orders@shop.test> → support@example.com"
    assert cells[3] == "InternalServiceException\nInternal failure (injected by the emulator)"
    assert browser.execute_script(BROKEN_WORDS, "#refused td") == []  # readable: no word cut in two
    reset = urllib.request.Request(
        f"{base}/_emulator/faults", data=b'{"error_rate": 0}', method="PUT",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(reset, timeout=10).close()

    # A file type Connect does not take is left out of the contact: the original is stored and linked.
    send(sandbox.smtp_port, plain("With a program", "see attachment", setup_exe=b"MZ\x90\x00binary"))
    browser.find_element(By.ID, "tab-contacts").click()
    eventually(lambda: "With a program" in subjects(browser))
    [row] = [r for r in rows(browser) if "With a program" in r.text]
    row.click()
    detail = browser.find_element(By.ID, "detail")
    show = eventually(lambda: detail.find_element(By.XPATH, ".//button[text()='Show the original']"))
    show.click()
    eventually(lambda: 'filename="setup.exe"' in detail.text)
    assert "Subject: With a program" in detail.text


def forwarded() -> EmailMessage:
    """A colleague forwards a customer's mail as an attachment: Connect does not take .eml by default."""
    original = plain("Original complaint", "The parcel never came.")
    original.replace_header("From", "Kundin <kundin@client.test>")
    message = plain("Fwd: Original complaint", "See the customer's mail below.", scan_pdf=b"%PDF-1.4 scan")
    message.replace_header("From", "Agent Smith <smith@shop.test>")
    message.add_attachment(original)
    return message


def test_what_was_left_out_and_the_original_show_beside_the_attachments(
    browser: Any, sandbox: Sandbox
) -> None:
    """The issue's check: a forwarded mail's left-out .eml and the original's link, without scrolling through
    fields; and, around it, the list as a staging user reads it at the first paint."""
    from selenium.webdriver.common.by import By

    port = sandbox.smtp_port
    send(port, plain("Invoice 4711 is wrong", "Please check the amount.", invoice_pdf=b"%PDF-1.4 invoice"))
    send(port, forwarded())
    team = [f"agent{n}@example.com" for n in range(61)]
    assert send(port, plain("Outage notice to every agent", "All hands."), *team).startswith("250 2.0.0 ")
    send(port, plain("Where is my parcel?", "Tracking says nothing."), "help@example.com")

    # The first paint shows the list: no waiting for a poll (the page came with it; its polls fail here).
    blocking_polls(browser, POLLS)
    open_page(browser, f"http://127.0.0.1:{sandbox.http_port}/")
    assert subjects(browser) == [
        "Where is my parcel?",
        "Outage notice to every agent",
        "Fwd: Original complaint",
        "Invoice 4711 is wrong",
    ]
    blocking_polls(browser, [])
    status = browser.find_element(By.ID, "status")
    eventually(lambda: status.text == "live · 64 contacts from 4 mails")  # after a failed poll, the next one
    assert browser.find_element(By.ID, "contact-count").text == "64"
    # One row per mail: the 61 contacts of one mail are inside its row.
    outage = rows(browser)[1]
    assert outage.find_element(By.CSS_SELECTOR, "td.contact").text.startswith("61 contacts")
    # The empty detail pane says what it is for.
    assert "Choose a mail on the left" in browser.find_element(By.ID, "detail").text
    # Dates and times read at a glance: a date, a time to the second, on one line.
    times = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#contacts tr.mail td.time")]
    today = datetime.now().astimezone()
    assert all(str(today.day) in text and re.search(r"\d\d:\d\d:\d\d$", text) for text in times), times
    assert browser.execute_script(LINES, "#contacts td.time") == [1, 1, 1, 1]
    # Columns fit: no header cut, nothing wider than the pane.
    assert browser.execute_script(CUT, "#contacts th, .list .scroll") == []

    [row] = [r for r in rows(browser) if "Fwd:" in r.text]
    assert "+1 left out" in row.text
    row.click()
    detail = browser.find_element(By.ID, "detail")
    left_out = eventually(lambda: detail.find_element(By.CSS_SELECTOR, ".left-out"))
    assert left_out.text.splitlines()[:2] == [
        "Left out of this contact (1)",
        "Original complaint.eml file type .eml is not accepted",
    ]
    original = detail.find_element(By.LINK_TEXT, "original.eml")
    attachment = detail.find_element(By.LINK_TEXT, "scan.pdf")
    assert browser.execute_script("return arguments[0].scrollTop", detail) == 0
    for element in (attachment, left_out, original):
        assert browser.execute_script(IN_VIEW, element), element.text
    eventually(lambda: "fetched by Connect" in detail.text)  # what the screenshot shows

    screenshot = os.environ.get("MAIL_GATEWAY_SCREENSHOT")
    if screenshot:
        browser.save_screenshot(screenshot)

    # The downloaded original still has the .eml the contact left out.
    with urllib.request.urlopen(original.get_attribute("href"), timeout=10) as response:
        stored = response.read()
    assert b"Subject: Original complaint" in stored and b"The parcel never came." in stored

    # The 61: opened, one row each, inside the mail's row.
    outage = rows(browser)[1]
    outage.click()
    inside = eventually(lambda: browser.find_elements(By.CSS_SELECTOR, "#contacts tr.contact-row"))
    assert len(inside) == 61
    assert sorted(r.find_element(By.CSS_SELECTOR, "td.to").text for r in inside) == sorted(team)
    inside[5].click()
    eventually(lambda: "This mail made 61 contacts" in detail.text)
    assert "Destination: agent5@example.com" in detail.text


def test_page_and_body_carry_a_restrictive_policy(sandbox: Sandbox) -> None:
    """Checked without a browser, so that it runs everywhere."""
    base = f"http://127.0.0.1:{sandbox.http_port}"
    with urllib.request.urlopen(f"{base}/", timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert '<script src="/_emulator/ui/app.js"' in page and "http" not in page.replace("http-equiv", "")
    send(sandbox.smtp_port, html_mail())
    with urllib.request.urlopen(f"{base}/_emulator/contacts", timeout=10) as response:
        [contact] = json.load(response)["contacts"]
    with urllib.request.urlopen(
        f"{base}/_emulator/contacts/{contact['ContactId']}/body", timeout=10
    ) as response:
        body_policy = response.headers["Content-Security-Policy"]
        assert response.read().decode().strip() == "<p>hi</p>"
    assert body_policy.startswith("sandbox;") and "default-src 'none'" in body_policy
    assert "script-src" not in body_policy


def html_mail() -> EmailMessage:
    message = make_mail(sender="a@shop.test", subject="html")
    message.set_content("<p>hi</p>\n", subtype="html")
    return message
