"""Everything on 127.0.0.1: the Connect emulator and its staging page (:mod:`.emulator`), an embedded S3
(:mod:`.s3server`), and ``mail-gateway sandbox`` (:mod:`.run`)."""
