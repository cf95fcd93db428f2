"""From an accepted mail to its contacts: one delivery path (:mod:`.deliverer`) for every mode, the queue
and its SQLite spool (:mod:`.queue`, :mod:`.spool`), the workers and their governor (:mod:`.workers`,
:mod:`.governor`), notifications to senders (:mod:`.dsn`) and the operator's commands (:mod:`.admin`)."""
