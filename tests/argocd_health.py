"""Run fedwarden's Argo CD health checks (examples/gitops/argocd/argocd-cm-health.yaml) on a
resource the way Argo CD does (argo-cd util/lua/lua.go, ``ExecuteHealthLua``).

Argo CD runs a health check in gopher-lua, a Lua 5.1, with only the base, package and table
libraries open (no ``string``, no ``math``: those need ``resource.customizations.useOpenLibs``),
the resource as the global ``obj`` (JSON objects as tables, arrays as 1-based tables, ``null``
as nil), and reads ``status`` and ``message`` from the table the chunk returns; a status that is
not one of Argo CD's becomes ``Unknown``. Here the same chunk runs in lupa's Lua 5.1 with the
same libraries taken away, so a script that works here works there. One difference stays:
Lua 5.1 prints a number with ``%.14g``, gopher-lua with Go's shortest form, so a message with a
long fraction (an ε) can differ in its last digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ARGOCD_CM_PATCH = (
    Path(__file__).resolve().parents[1] / "examples" / "gitops" / "argocd" / "argocd-cm-health.yaml"
)
HEALTH_KEY_PREFIX = "resource.customizations.health.fedwarden.io_"
HEALTH_STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")

# gopher-lua as Argo CD opens it has none of these; lupa's Lua has them all
_LIBRARIES_ARGOCD_LEAVES_CLOSED = ("string", "math", "io", "os", "debug", "coroutine")


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def health_scripts() -> dict[str, str]:
    """The health check of each kind (``FederatedTraining``, ``FLClient``) in the argocd-cm
    patch users apply."""
    config_map = yaml.safe_load(ARGOCD_CM_PATCH.read_text())
    return {
        key.removeprefix(HEALTH_KEY_PREFIX): script
        for key, script in config_map["data"].items()
        if key.startswith(HEALTH_KEY_PREFIX)
    }


def argocd_health(obj: dict[str, Any]) -> Health:
    """What Argo CD shows as the health of ``obj`` (a fedwarden resource as the API server
    returns it); a Lua error is raised (Argo CD would show it as the resource's health error)."""
    # imported here: lupa is a test dependency only this helper needs
    from lupa.lua51 import LuaRuntime, lua_type

    lua = LuaRuntime(register_eval=False, register_builtins=False)
    # strings lose their methods (("x"):upper()) with the string library: gopher-lua sets the
    # string metatable only when it opens that library
    lua.execute("debug.setmetatable('', nil)")
    sandbox = lua.globals()
    for name in (*_LIBRARIES_ARGOCD_LEAVES_CLOSED, "python"):
        sandbox[name] = None
        sandbox.package.loaded[name] = None
    sandbox.obj = _to_lua(lua, obj)
    result = lua.execute(health_scripts()[obj["kind"]])
    if lua_type(result) != "table":
        raise TypeError(f"expect table output from Lua script, not {lua_type(result) or result!r}")
    status, message = result["status"], result["message"]
    if status not in HEALTH_STATUSES:
        return Health("Unknown", "Lua returned an invalid health status")
    if message is not None and not isinstance(message, str):
        # Argo CD decodes the table as JSON into a struct whose message is a string
        raise TypeError(f"the health message is a {type(message).__name__}, not a string")
    return Health(status, message or "")


def _to_lua(lua: Any, value: Any) -> Any:
    """``value`` as Argo CD's decodeValue hands it to Lua: a nil in an array or an object is
    left out (gopher-lua's Append and RawSetH skip nil)."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = _to_lua(lua, item)
        return table
    if isinstance(value, list):
        return lua.table(*(_to_lua(lua, item) for item in value if item is not None))
    return value
