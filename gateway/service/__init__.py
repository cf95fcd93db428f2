"""The running gateway, assembled from the stages (:mod:`.gateway`), with its HTTP health and metrics
(:mod:`.health`) and ``mail-gateway check`` (:mod:`.preflight`)."""
