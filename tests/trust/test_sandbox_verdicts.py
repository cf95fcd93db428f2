"""``mail-gateway sandbox --verdicts``, run as a user runs it: the checks on this machine's mail, an engine
that is not there said once at start, and the verdicts on the staging page (in a real headless Chromium)."""

from __future__ import annotations

import json
import smtplib
import urllib.request
from pathlib import Path
from typing import Any

from ..helpers import make_mail, open_page, running_sandbox
from .servers import Rspamd, TestDns

ABSENT_CLAMD = "/nonexistent/clamd.ctl"


def test_the_sandbox_shows_the_verdicts(
    browser: Any, test_dns: TestDns, rspamd_server: Rspamd, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    test_dns.add("sandbox-shop.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    config = tmp_path / "staging.toml"
    config.write_text(
        '[attachments]\nbucket = "staging-files"\n[[routes]]\nmatch = "*"\ninstance_id = "i-1"\n'
        f'[dns]\nnameservers = ["127.0.0.1:{test_dns.port}"]\ntimeout = "1s"\n'
        f'[filters]\nrspamd_url = "{rspamd_server.url}"\nclamd_address = "unix:{ABSENT_CLAMD}"\n'
    )
    with running_sandbox("--config", str(config), "--mode", "sync", "--verdicts") as sandbox:
        said = [line for line in sandbox.started.splitlines() if line.startswith("Verdicts")]
        assert len(said) == 3, sandbox.started
        assert f"127.0.0.1:{test_dns.port}: answers" in said[0]
        assert f"rspamd {rspamd_server.url}: answers /ping" in said[1]
        assert said[2].startswith(
            f"Verdicts   clamd unix:{ABSENT_CLAMD}: not there (clamd: no such file or directory)"
        )
        assert said[2].endswith("; no virus verdict")

        mail = make_mail(sender="orders@sandbox-shop.test", subject="Your order", message_id="<v1@shop.test>")
        with smtplib.SMTP("127.0.0.1", sandbox.smtp_port, timeout=60) as client:
            client.sendmail("orders@sandbox-shop.test", ["support@example.com"], mail.as_bytes())

        base = f"http://127.0.0.1:{sandbox.http_port}"
        with urllib.request.urlopen(f"{base}/_emulator/contacts", timeout=10) as response:
            [contact] = json.load(response)["contacts"]
        request = contact["Request"]
        assert request["Attributes"]["gateway_spf"] == "pass"  # judged although it came from this machine
        assert request["Attributes"]["gateway_spam"] == "PASS"
        headers = request["EmailMessage"]["RawMessage"]["Headers"]
        assert headers["X_SES_SPAM_VERDICT"] == "PASS"
        assert "X_SES_VIRUS_VERDICT" not in headers  # no clamd: no verdict, rather than a failure

        open_page(browser, f"{base}/#contact={contact['ContactId']}")
        box = browser.find_element(By.CSS_SELECTOR, ".checks-box")
        checks = [item.text for item in box.find_elements(By.CSS_SELECTOR, "li.check")]
        assert checks[0] == "SPF: pass"
        assert "DKIM: none" in checks
        assert any(check.startswith("Spam: PASS (action no action, score") for check in checks)
        assert not any(check.startswith("Virus") for check in checks)
        passed = box.find_element(By.CSS_SELECTOR, "li.check.good")
        assert passed.text == "SPF: pass"
