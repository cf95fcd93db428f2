"""An SMTP gateway for Amazon Connect's email channel.

The tree is the journey of a mail, each package a stage, lower layers never importing higher ones
(``.importlinter`` in ``pyproject.toml`` enforces it):

* base: :mod:`~gateway.mail` (the mail as every stage names it), :mod:`~gateway.settings`,
  :mod:`~gateway.errors`, :mod:`~gateway.replies`, :mod:`~gateway.addresses`;
* :mod:`gateway.message`: bytes into a parsed mail (pure);
* :mod:`gateway.contact`: a parsed mail and its route into a ``StartEmailContact`` request (pure);
* :mod:`gateway.config`: the configuration file into settings;
* :mod:`gateway.observe`: metrics and the mail log;
* :mod:`gateway.frontdoor`: the SMTP session, and :mod:`gateway.aws`: the AWS edge (S3, Connect, the one
  error boundary);
* :mod:`gateway.delivery`: from the accepted mail to its contacts (the queue, the spool, the workers);
* :mod:`gateway.service`: the running gateway assembled; :mod:`gateway.sandbox`: the emulator and the
  embedded S3 beside it; :mod:`~gateway.cli`: the command line.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
