"""The shared queue (``[queue] mode = "sqs"``): any number of stateless gateways, one queue, one budget.

Raw mail waits in S3 under ``[queue] prefix``, work items in SQS, each mail's state in a DynamoDB item
(:mod:`.records`); :class:`~.queue.SharedQueue` is a :class:`~gateway.delivery.queue.MailQueue`, so the
same workers and the one delivery path serve it. :class:`~.pacer.SharedPacer` is the token bucket all
gateways draw on; :mod:`.admin` is ``mail-gateway queue`` in this mode, ``queue move --to sqs`` included.
"""
