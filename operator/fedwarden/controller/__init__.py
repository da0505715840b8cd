"""The operator: kopf handlers (:mod:`.handlers`, registration only) over reconcilers that read
the cluster, call :mod:`fedwarden.resources` and :mod:`fedwarden.pki`, and apply the result."""
