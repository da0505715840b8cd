"""Pure functions from the custom resources to the Kubernetes objects that run them.

No I/O and no API calls: the controller gathers the inputs (the parsed resource, certificates,
the API server's addresses), calls these, and applies the result with server-side apply.
"""
