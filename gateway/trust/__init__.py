"""Trust, verified: sender authentication (SPF, DKIM, DMARC, ARC), spam (rspamd) and viruses (clamd) at DATA.

The stage between the received mail and its 250: it does I/O (DNS, HTTP, sockets), so it sits below the
front door that calls it and above :mod:`gateway.observe`. Modules: :mod:`.dns` (one resolver, and the
bridge for the synchronous libraries), :mod:`.authentication` (pyspf and dkimpy, the one boundary for
them; DMARC on the public suffix list), :mod:`.upstream` (Authentication-Results read and written),
:mod:`.filters` (the rspamd and clamd clients), :mod:`.greylist`, :mod:`.policy` (verdicts into one
decision: pure), :mod:`.results` (the values, JSON), :mod:`.judge` (all of it for one mail),
:mod:`.infected` (the strip policy), :mod:`.probe` (``mail-gateway check``).

Integration (the front door, the spool and the delivery)::

    trust = Trust.from_settings(settings, metrics)      # gateway.trust.judge; `await trust.close()` at stop
    if trust.active:                                     # nothing configured: no call at all
        result = await trust.judge(
            mail.content,                                # MailContent: the bytes as received
            SessionFacts(client=peer_ip, helo=helo, sender=mail_from, recipients=rcpt_tos,
                         authenticated_as=auth_user_or_None, queue_id=queue_id),
            [target.route for target in targets],        # each route may set trust_mode
            parsed=parsed_mail_or_None,                  # the parse worker's ParsedMail, if it has one
        )

1. Before the 250: ``result.refusal`` is a :class:`~gateway.replies.Reply` (5xx or 4xx) or None. When it is
   set, answer it and keep nothing; it already takes every route into account (refused only when every
   route's mode refuses).
2. Otherwise store ``result.to_json()`` beside the raw mail (the raw bytes are never modified: the
   ClientToken and the stored original stay the bytes received) and get it back with
   :meth:`TrustResult.from_json`.
3. Building each request: ``build_request(..., verdicts=result.verdicts)`` adds ``X_SES_SPAM_VERDICT`` /
   ``X_SES_VIRUS_VERDICT`` to ``RawMessage.Headers`` and the ``gateway_*`` attributes, within Connect's
   model. ``result.authentication_results`` is the ``Authentication-Results`` value for the staging page.
4. ``result.strip`` (infected files of a mail delivered anyway: the ``strip`` policy, or a refusal waived by
   monitor mode or the allow list) must not reach S3 or Connect: parse, then
   ``mail, left_out = without_infected(parsed, result.strip)``, fit ``mail``, and add ``left_out`` to the
   fitted mail's omissions (``Not in this contact``). Never store the original of such a mail in S3 (it
   holds the virus), not even with ``store_original = "always"``.

:meth:`Trust.judge` never raises for what a mail, DNS or an engine does; it takes at most the longest of
``[authentication] timeout``, ``[filters] rspamd_timeout`` and the clamd scans (``clamd_timeout`` each).
"""

# No imports here: a reader process needs .infected and .results alone, without the engines' clients.
