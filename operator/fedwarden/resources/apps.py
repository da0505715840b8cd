"""What the processes of a training with a user's app (``spec.task.app``) are told about it."""

from __future__ import annotations


def app_config_args(config: dict[str, str] | None) -> list[str]:
    """``--app-config KEY=VALUE`` for each entry of an app's config, in key order (a stable
    command line: the same spec renders the same pod)."""
    args: list[str] = []
    for key, value in sorted((config or {}).items()):
        args += ["--app-config", f"{key}={value}"]
    return args
