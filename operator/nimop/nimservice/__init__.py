"""The NimService pipeline: models (the API and its CRD), params, validation, rollout decisions
and status (pure), and reconcile, which sequences them over the shared runtime."""
