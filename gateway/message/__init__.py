"""Bytes into a parsed mail: the MIME tree read (:mod:`.mime`, :mod:`.structure`), headers and charsets
decoded (:mod:`.decoding`), winmail.dat opened (:mod:`.tnef`), automatic mail told apart
(:mod:`.automatic`). Pure: no sockets, no clocks, no AWS."""
