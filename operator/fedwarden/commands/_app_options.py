"""``--app`` / ``--app-config`` / ``--task``: which app a client or an aggregator runs.

A built-in task is the built-in app (:func:`fedwarden.client.tasks.builtin_app`) with the task's
settings in its ``run_config``, so the two options take one path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

BUILTIN_APP = "fedwarden.client.tasks:builtin_app"


def app_selection(
    app: str | None,
    app_config: Sequence[str],
    task: str | None,
    task_settings: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """``(MODULE:ATTR, run_config)``; ``--app-config`` values win over a task's settings."""
    from fedwarden.client import AppError, parse_app_config

    if (app is None) == (task is None):
        raise click.UsageError("give --app MODULE:ATTR (your app) or --task NAME (a built-in task)")
    try:
        run_config: dict[str, Any] = dict(parse_app_config(app_config))
    except AppError as exc:
        raise click.BadParameter(str(exc), param_hint="--app-config") from exc
    if app is not None:
        return app, run_config
    return BUILTIN_APP, {"task": task, **task_settings, **run_config}
