"""The running gateway, assembled from the stages (:mod:`.gateway`), with its HTTP health and metrics
(:mod:`.health`), each route's place (:mod:`.places`), reloading (:mod:`.reload`) and ``mail-gateway
check`` (:mod:`.preflight`)."""
