"""One exception tree for the runtime: every error ``buntime`` raises is a ``BuntimeError``.

Feeds in: every module of the ``buntime`` package, imported for real. Checks: each exception
class they define (but the few control-flow signals that never leave their module) is under
``BuntimeError``, has a stable ``code``, is drawn in a tree docstring (``buntime/_errors.py`` or
its own module's), and an ``ApiError`` also carries an HTTP ``status``; what the admin middleware
answers for a subclass it never heard of. Leaves unmocked: the modules, aiohttp's test client.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

import buntime
from buntime import BuntimeError
from buntime.plugins import ApiError, PluginConfigError, PluginError
from buntime.plugins._http import json_errors
from buntime.plugins.keyval import KeyValConfigError, KeyValNotFoundError
from buntime.plugins.proxy import RuleError
from buntime.turso import TursoCommitUnknownError, TursoConfigError, TursoError, TursoUnavailableError

#: Signals caught inside the module that raises them; never seen by a caller.
INTERNAL = {
    "buntime.turso._leases.LeaseLost",
    "buntime.turso._backends._Dirty",
    "buntime.turso._backends._Speculation",
    "buntime.plugins._settings._Invalid",
}


def _error_classes() -> list[type[BaseException]]:
    for info in pkgutil.walk_packages(buntime.__path__, "buntime."):
        importlib.import_module(info.name)
    found: dict[str, type[BaseException]] = {}
    for name, module in list(sys.modules.items()):
        if name == "buntime" or name.startswith("buntime."):
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__.startswith("buntime"):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [cls for path, cls in sorted(found.items()) if path not in INTERNAL]


def test_every_runtime_error_is_in_the_one_tree_with_a_code() -> None:
    classes = _error_classes()
    assert len(classes) > 20, classes  # the walk found the plugins' errors too
    tree = sys.modules["buntime._errors"].__doc__ or ""
    for cls in classes:
        assert issubclass(cls, BuntimeError), f"{cls.__module__}.{cls.__qualname__} is outside the tree"
        assert isinstance(cls.code, str) and cls.code and cls.code.upper() == cls.code, cls
        own = sys.modules[cls.__module__].__doc__ or ""
        assert cls.__name__ in tree or cls.__name__ in own, f"{cls.__name__} is not drawn in a tree"
        if issubclass(cls, ApiError):
            assert isinstance(cls.status, int) and 400 <= cls.status <= 599, cls


def test_the_branches_keep_their_built_in_bases() -> None:
    assert issubclass(TursoError, BuntimeError) and issubclass(PluginError, BuntimeError)
    assert issubclass(TursoConfigError, ValueError) and issubclass(PluginConfigError, ValueError)
    assert issubclass(RuleError, ApiError) and issubclass(RuleError, ValueError)
    assert issubclass(KeyValConfigError, PluginConfigError) and issubclass(KeyValNotFoundError, LookupError)
    error = PluginConfigError("X_Y must be one of a, b (got 'c')", variable="X_Y")
    assert (error.code, error.variable, error.message) == ("INVALID_X_Y", "X_Y", str(error))
    assert RuleError("shadows", code="PROXY_RULE_SHADOWS_RESERVED").status == 409
    keyval = KeyValConfigError("KEYVAL_X must be more than 0s", variable="KEYVAL_X")
    assert (keyval.code, keyval.variable, keyval.status) == ("INVALID_KEYVAL_X", "KEYVAL_X", 500)


async def test_the_admin_middleware_answers_any_api_error_with_its_status_and_code(
    aiohttp_client: AiohttpClient,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "rule":
            raise RuleError("bad target", code="PROXY_INVALID_TARGET")
        if kind == "keyval":
            raise KeyValNotFoundError("no such key", code="KEY_NOT_FOUND")
        if kind == "down":
            raise TursoUnavailableError("turso-server unreachable")
        if kind == "unknown":
            raise TursoCommitUnknownError("the push may or may not have landed")
        raise ApiError("nope", code="TEAPOT", status=418)

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/{kind}", handler)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    for kind, status, code in (
        ("rule", 400, "PROXY_INVALID_TARGET"),
        ("keyval", 404, "KEY_NOT_FOUND"),
        ("down", 503, "TURSO_UNAVAILABLE"),
        ("unknown", 504, "TURSO_COMMIT_OUTCOME_UNKNOWN"),
        ("x", 418, "TEAPOT"),
    ):
        response = await client.get(f"/{kind}")
        assert response.status == status
        assert (await response.json())["code"] == code
