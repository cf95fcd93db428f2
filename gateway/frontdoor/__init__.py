"""The SMTP front door: the session (:mod:`.smtp`), the DATA reader (:mod:`.data`), who may come in and how
much (:mod:`.admission`), the header checks before the 250 (:mod:`.triage`), AUTH (:mod:`.credentials`)
and TLS (:mod:`.tls`)."""
