"""The package as a user installs it, from its wheel: the sandbox starts, takes a mail over SMTP, and serves
the staging page with its script and styles (package data that a move could lose). Run from outside the
source tree, with the wheel's own interpreter: `.ci/run` does it."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
import urllib.request
from email.message import EmailMessage


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback URL it printed
        return bytes(response.read())


def main() -> int:
    command = [sys.executable, "-m", "gateway", "sandbox", "--smtp-port", "0", "--http-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603
    assert process.stdout is not None
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ready"):
                break
        text = "".join(lines)
        smtp = re.search(r"SMTP\s+127\.0\.0\.1:(\d+)", text)
        http = re.search(r"Connect\s+(http://127\.0\.0\.1:\d+)", text)
        assert smtp, text
        assert http, text
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@client.test", "support@example.com", "Smoke"
        message.set_content("from the wheel")
        with smtplib.SMTP("127.0.0.1", int(smtp.group(1)), timeout=30) as client:
            client.send_message(message)
        contacts = json.loads(fetch(f"{http.group(1)}/_emulator/contacts"))["contacts"]
        assert [c["Request"]["EmailMessage"]["RawMessage"]["Subject"] for c in contacts] == ["Smoke"]
        page = fetch(f"{http.group(1)}/").decode()
        for asset in ("app.js", "style.css"):
            assert f"/_emulator/ui/{asset}" in page, asset
            assert len(fetch(f"{http.group(1)}/_emulator/ui/{asset}")) > 500, asset
        print("smoke: the wheel's sandbox took a mail and served the staging page")
        return 0
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
