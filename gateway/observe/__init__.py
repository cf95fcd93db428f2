"""What an operator sees: Prometheus metrics (:mod:`.metrics`) and one log line per mail
(:mod:`.mail_log`)."""
