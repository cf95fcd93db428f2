"""A parsed mail and its route into a ``StartEmailContact`` request: which instance and address
(:mod:`.routing`), what fits into a contact (:mod:`.fitting`), the request itself (:mod:`.request`), all
within the Connect model (:mod:`.contract`). Pure: no sockets, no clocks, no AWS calls."""
