"""The AWS edge: the clients, pooled per region and role (:mod:`.clients`), where each route's contacts go
(:mod:`.placement`), the one place where botocore and network errors become the
gateway's own (:mod:`.boundary`), attachments into S3 (:mod:`.attachments`), and the contact
(:mod:`.connect`)."""
