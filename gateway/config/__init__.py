"""The configuration file into :class:`~gateway.settings.Settings`: :func:`load_config` reads the file and
the machine, :func:`parse_config` checks every rule as a pure function (:mod:`.parse`, :mod:`.frontdoor`,
:mod:`.placement`), each error naming its key (:mod:`.table`)."""

from gateway.config.machine import physical_memory, read_memory_limit
from gateway.config.parse import Host, load_config, parse_config
from gateway.config.table import split_host_port

__all__ = ["Host", "load_config", "parse_config", "physical_memory", "read_memory_limit", "split_host_port"]
