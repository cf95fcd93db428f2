"""A faithful stand-in for Amazon Connect's email API, for tests and for staging.

:mod:`.connect` decides what the service would answer (as strictly as the service: the botocore model
plus the documented limits); :mod:`.server` speaks HTTP the way botocore expects (rest-json). Nothing
offline implements ``StartEmailContact`` (moto answers "not yet implemented"), hence this package.
"""

from gateway.sandbox.emulator.connect import Answer, EmulatedConnect
from gateway.sandbox.emulator.server import EmulatorServer

__all__ = ["Answer", "EmulatedConnect", "EmulatorServer"]
