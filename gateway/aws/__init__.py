"""The AWS edge: the clients (:mod:`.clients`), the one place where botocore and network errors become the
gateway's own (:mod:`.boundary`), attachments into S3 (:mod:`.attachments`), and the contact
(:mod:`.connect`)."""
