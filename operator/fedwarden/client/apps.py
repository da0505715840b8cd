"""Apps: the user's model and data, named ``module:attr``, behind one interface.

An :class:`App` is what a client trains and what an aggregator takes its initial model (and,
when it can, its evaluation) from. ``fedwarden client --app module:attr`` and ``fedwarden
aggregator --app module:attr`` load one with :func:`load_app`; the attribute may be

- a **fedwarden app**: an object with ``layout``, ``initial_parameters()``, ``fit(parameters,
  round)`` and ``evaluate(parameters)`` on flat float32 vectors (:class:`App`); the built-in
  tasks are such apps (:func:`fedwarden.client.tasks.builtin_app`);
- a **Flower** ``NumPyClient``, written as Flower's documentation writes it: an instance, its
  class, a zero-argument factory, or a ``client_fn(context)``. The context carries what such
  code reads: ``context.node_config["partition-id"]`` / ``["num-partitions"]`` and
  ``context.run_config`` (a real ``flwr.common.Context`` when Flower is installed). A
  ``client_fn`` may return ``.to_client()`` of its ``NumPyClient``.
- a callable of the two kinds above (factory or ``client_fn``) that returns a fedwarden app.

Flower is never imported unless the app itself imports it. Everything an app returns is checked
before it is sent: shapes against the model's layout (they may not change between rounds),
finiteness, sizes. A broken app stops its own client with :class:`AppError`, one line that names
the cause; the aggregator never sees its output.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline import ParameterLayout, flatten
from fedwarden.pipeline.errors import PrivacyBudgetExhaustedError
from fedwarden.pipeline.evaluation import Evaluation

F32 = npt.NDArray[np.float32]
ConfigValue = bool | int | float | str


class AppError(ValueError):
    """A user's app could not be loaded, or returned something fedwarden cannot send."""


class FitResult(NamedTuple):
    """What a client's training returns: the update (new minus global parameters, flat
    float32), the number of examples it trained on (a claim; robust aggregators do not let it
    buy influence) and scalar metrics."""

    update: F32
    num_examples: int
    metrics: dict[str, float]


@runtime_checkable
class Task(Protocol):
    """The least a client runtime trains: a size and ``fit``. Every :class:`App` is a task;
    so are the demo's and the tests' adversaries, which need no model of their own."""

    @property
    def num_parameters(self) -> int: ...

    def fit(
        self, global_params: F32, round: int
    ) -> FitResult | tuple[npt.NDArray[Any], int, dict[str, float]]: ...


@runtime_checkable
class App(Protocol):
    """The interface every app is run through (see the module docstring).

    ``fit`` returns the *update* (new minus given parameters) as a flat vector, the number of
    examples it trained on (a claim) and scalar metrics; ``evaluate`` returns ``None`` when the
    app has no evaluation.
    """

    @property
    def layout(self) -> ParameterLayout: ...

    @property
    def num_parameters(self) -> int: ...

    def initial_parameters(self) -> F32: ...

    def fit(self, global_params: F32, round: int) -> FitResult: ...

    def evaluate(self, parameters: F32) -> Evaluation | None: ...


@dataclass
class AppContext:
    """What a Flower ``client_fn(context)`` reads, for when Flower is not installed."""

    node_config: dict[str, ConfigValue] = field(default_factory=dict)
    run_config: dict[str, ConfigValue] = field(default_factory=dict)
    run_id: int = 0
    node_id: int = 0
    state: Any = None


def parse_app_config(items: Sequence[str]) -> dict[str, ConfigValue]:
    """``["local-epochs=2", "lr=0.05", "name=x"]`` -> typed values, as Flower reads its
    ``run_config`` from TOML: ``true``/``false``, integers, floats, else the string."""
    config: dict[str, ConfigValue] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise AppError(f"--app-config takes KEY=VALUE, got {item!r}")
        config[key.strip()] = _typed(raw.strip())
    return config


def _typed(raw: str) -> ConfigValue:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def load_app(
    spec: str,
    *,
    run_config: Mapping[str, ConfigValue] | None = None,
    node_config: Mapping[str, ConfigValue] | None = None,
    search_path: Sequence[Path] | None = None,
) -> App:
    """Import ``module:attr`` and adapt it to :class:`App` (see the module docstring).

    ``node_config`` and ``run_config`` reach a ``client_fn``'s context; a fedwarden app made by
    a factory receives the same context. ``search_path`` (default: the working directory at
    the call) is put in front of ``sys.path`` so that an app next to the command (or in the
    image's working directory) imports.
    """
    target = _import(spec, [Path.cwd()] if search_path is None else search_path)
    context = _context(dict(node_config or {}), dict(run_config or {}))
    return _adapt(target, spec, context)


def _import(spec: str, search_path: Sequence[Path]) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppError(f"--app takes MODULE:ATTR (e.g. my_app.client:client_fn), got {spec!r}")
    for entry in reversed([str(p) for p in search_path]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing == module_name or module_name.startswith(f"{missing}."):
            raise AppError(f"app {spec}: no module named {missing!r}") from exc
        raise AppError(
            f"app {spec}: importing {module_name} failed: it needs {missing!r}, "
            "which is not installed"
        ) from exc
    except Exception as exc:
        raise AppError(
            f"app {spec}: importing {module_name} raised {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(f"app {spec}: {module_name} has no attribute {attr!r}") from None
    return target


def _context(node_config: dict[str, ConfigValue], run_config: dict[str, ConfigValue]) -> Any:
    try:
        from flwr.common import Context, RecordDict
    except ImportError:
        return AppContext(node_config=node_config, run_config=run_config)
    return Context(
        run_id=0, node_id=0, node_config=node_config, state=RecordDict(), run_config=run_config
    )


def _adapt(target: Any, spec: str, context: Any) -> App:
    obj = target
    if inspect.isclass(obj):
        obj = _call(obj, spec, ())
    elif _is_flower_client_app(obj):
        raise AppError(
            f"app {spec} is a Flower ClientApp; point --app at the client_fn it wraps "
            "(module:client_fn) or at the NumPyClient"
        )
    elif callable(obj) and not _is_app(obj) and not _is_numpy_client(obj):
        obj = _call(obj, spec, (context,) if _takes_one_argument(obj) else ())
    obj = getattr(obj, "numpy_client", obj)  # NumPyClient.to_client() wraps it
    if _is_app(obj):
        return obj  # type: ignore[no-any-return]
    if _is_numpy_client(obj):
        return NumPyClientApp(obj)
    raise AppError(
        f"app {spec} gave a {type(obj).__name__}, which is neither a fedwarden app (layout, "
        "initial_parameters, fit, evaluate) nor a Flower NumPyClient (get_parameters, fit): "
        "name a NumPyClient instance or class, a factory or client_fn(context), or an app"
    )


def _call(factory: Callable[..., Any], spec: str, args: tuple[Any, ...]) -> Any:
    try:
        return factory(*args)
    except AppError:
        raise
    except Exception as exc:
        raise AppError(
            f"app {spec}: {getattr(factory, '__name__', 'the factory')} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


def _is_app(obj: Any) -> bool:
    return not inspect.isclass(obj) and all(
        hasattr(obj, name) for name in ("layout", "initial_parameters", "fit", "evaluate")
    )


def _is_numpy_client(obj: Any) -> bool:
    return not inspect.isclass(obj) and all(
        callable(getattr(obj, name, None)) for name in ("get_parameters", "fit")
    )


def _is_flower_client_app(obj: Any) -> bool:
    return any(
        f"{c.__module__}.{c.__qualname__}" == "flwr.clientapp.client_app.ClientApp"
        for c in type(obj).__mro__
    )


def check_finite(vector: F32, what: str) -> None:
    """An :class:`AppError` naming how many values of ``vector`` are NaN or infinite."""
    bad = int(vector.size - np.count_nonzero(np.isfinite(vector)))
    if bad:
        raise AppError(f"{what}: {bad} of {vector.size} values are NaN or infinite")


def scalar_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The finite int/float entries of an app's metrics (Flower allows str and bytes too)."""
    out: dict[str, float] = {}
    for key, value in dict(metrics or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[str(key)] = float(value)
    return out


class NumPyClientApp:
    """A Flower ``NumPyClient`` as an :class:`App`.

    The global model arrives as one flat float32 vector and is cut into the client's arrays
    (in their own dtypes); ``fit``'s returned arrays minus the global ones are the update.
    The layout is the client's ``get_parameters`` (arrays named by position), or, when it
    returns none (Flower's quickstarts leave the initial model to the server), the layout the
    aggregator announces (:meth:`adopt_layout`).
    """

    def __init__(self, client: Any, config: Mapping[str, ConfigValue] | None = None) -> None:
        self.client = client
        self.config = dict(config or {})
        try:
            initial = list(client.get_parameters(config={}) or [])
        except Exception as exc:
            raise AppError(
                f"the NumPyClient's get_parameters raised {type(exc).__name__}: {exc}"
            ) from exc
        self._initial = initial
        self._layout: ParameterLayout | None = (
            ParameterLayout.of_arrays(initial) if initial else None
        )
        self._dtypes = [np.asarray(a).dtype for a in initial]

    @property
    def layout(self) -> ParameterLayout:
        if self._layout is None:
            raise AppError(
                "the NumPyClient's get_parameters returns no arrays, so the model's shapes "
                "come from the aggregator, which has not announced them (give the aggregator "
                "--app or --initial-model)"
            )
        return self._layout

    @property
    def num_parameters(self) -> int:
        return 0 if self._layout is None else self._layout.size

    def adopt_layout(self, layout: ParameterLayout) -> None:
        """Take the aggregator's layout when the client has none of its own; when it has,
        the two must agree in shapes (names are positional here)."""
        if self._layout is None:
            self._layout = ParameterLayout.of_arrays([np.empty(s) for s in layout.shapes])
            self._dtypes = [np.dtype(np.float32)] * len(layout.shapes)
        elif self._layout.shapes != layout.shapes:
            raise AppError(
                f"the aggregator's model ({layout.describe()}) does not match the "
                f"NumPyClient's parameters ({self._layout.describe()})"
            )

    def initial_parameters(self) -> F32:
        if not self._initial:
            raise AppError(
                "the NumPyClient's get_parameters returns no arrays: it has no initial model "
                "to give (give the aggregator --initial-model FILE)"
            )
        vector = flatten(self._initial).astype(np.float32)
        check_finite(vector, "the initial model")
        return vector

    def _arrays(self, vector: F32) -> list[npt.NDArray[Any]]:
        return [
            a.astype(dtype, copy=False)
            for a, dtype in zip(self.layout.split(vector).values(), self._dtypes, strict=True)
        ]

    def _checked(self, arrays: Any, what: str) -> F32:
        try:
            got = ParameterLayout.of_arrays(list(arrays))
        except TypeError as exc:
            raise AppError(
                f"{what} returned {type(arrays).__name__}, not a list of arrays"
            ) from exc
        if got.shapes != self.layout.shapes:
            raise AppError(
                f"{what} changed the parameter shapes: got {got.describe() or 'nothing'}, "
                f"the model is {self.layout.describe()}"
            )
        vector = flatten(list(arrays)).astype(np.float32)
        check_finite(vector, f"the parameters from {what}")
        return vector

    def fit(self, global_params: F32, round: int) -> FitResult:
        arrays = self._arrays(global_params)
        config = {**self.config, "server_round": round}
        try:
            new, num_examples, metrics = self.client.fit(arrays, config)
        except PrivacyBudgetExhaustedError:
            raise  # the site refuses to train past its record-level budget: not a failure
        except Exception as exc:
            raise AppError(f"the NumPyClient's fit raised {type(exc).__name__}: {exc}") from exc
        vector = self._checked(new, "the NumPyClient's fit")
        update = (vector - np.asarray(global_params, np.float32)).astype(np.float32)
        return FitResult(update, int(num_examples), scalar_metrics(metrics))

    def evaluate(self, parameters: F32) -> Evaluation | None:
        if not self._offers_evaluate():
            return None
        try:
            loss, num_examples, metrics = self.client.evaluate(self._arrays(parameters), {})
        except Exception as exc:
            raise AppError(
                f"the NumPyClient's evaluate raised {type(exc).__name__}: {exc}"
            ) from exc
        return Evaluation(int(num_examples), {"loss": float(loss), **scalar_metrics(metrics)})

    def _offers_evaluate(self) -> bool:
        method = getattr(type(self.client), "evaluate", None)
        if method is None:
            return False
        # Flower's base class defines an evaluate that does nothing useful: only an override
        # is an evaluation
        return not any(
            f"{c.__module__}.{c.__qualname__}" == "flwr.compat.client.numpy_client.NumPyClient"
            and c.__dict__.get("evaluate") is method
            for c in type(self.client).__mro__
        )
