"""The NimCache pipeline: models, params and status (pure), and reconcile."""
