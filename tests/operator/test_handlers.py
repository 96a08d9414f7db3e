"""The operator's wiring: nothing at import, everything loop-bound built at startup, closed at cleanup.

Feeds kopf's own objects (``OperatorSettings``, ``Memo``, ``OperatorRegistry``) to the handlers
the way ``kopf.run`` does; the login reads a real kubeconfig file; a reconcile that gets as far
as turso-server talks to a real one. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import kopf
import pytest

from tests.support.kopfcontext import drained_reasons, kopf_events
from tests.support.tursoserver import TursoServer
from turso_operator._config import OperatorConfig
from turso_operator._constants import INJECT_LABEL, INSTANCE_LABEL, WEBHOOK_ID, ConditionType, Phase, Reason
from turso_operator._handlers import (
    MEMO_STATE,
    OperatorState,
    _drift_loop,
    build_registry,
    close_clients,
    configure,
    inject_turso,
    login,
    operator_memo,
    reconcile_tursonamespace,
    repair_drift,
)

BASE_ENV = {"TURSO_SERVER_URL": "http://turso:8080", "TURSO_SERVER_ADMIN_URL": "http://turso-admin:8081"}


def test_importing_the_handlers_reads_no_config_and_registers_nothing() -> None:
    """With no variable set, the import used to fail (config read at import); now it cannot."""
    code = (
        "import kopf, turso_operator._handlers as h;"
        "r = kopf._core.intents.registries.get_default_registry();"
        "print(len(r._changing.get_all_handlers()) + len(r._activities.get_all_handlers()))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TURSO_", "POD_"))}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


@pytest.mark.parametrize("webhook", [True, False])
def test_the_registry_follows_the_config(webhook: bool) -> None:
    config = OperatorConfig.from_env(
        {**BASE_ENV, "TURSO_RESYNC_SECONDS": "90", "TURSO_WEBHOOK_ENABLED": str(webhook).lower()}
    )
    registry = build_registry(config)
    webhooks = [h.id for h in registry._webhooks.get_all_handlers()]
    assert webhooks == ([WEBHOOK_ID] if webhook else [])
    # No kopf timer or daemon: kopf would put its finalizer on every object they serve.
    assert registry._spawning.get_all_handlers() == []
    indexes = {h.id for h in registry._indexing.get_all_handlers()}
    assert "drift_objects" in indexes
    changing = sorted(h.id for h in registry._changing.get_all_handlers())
    assert changing == [
        "finalize_tursonamespace",
        "reconcile_tursonamespace",
        "reconcile_tursonamespace",
        "reconcile_tursonamespace/spec",
    ]
    activities = {h.id for h in registry._activities.get_all_handlers()}
    assert {"configure", "login", "close_clients", "serve_metrics", "watch_freshness"} <= activities


@pytest.mark.parametrize(("instance", "wanted"), [("", kopf.ABSENT), ("staging", "staging")])
async def test_an_instance_serves_only_its_labelled_objects_with_a_finalizer_of_its_own(
    instance: str, wanted: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = OperatorConfig.from_env({**BASE_ENV, "TURSO_INSTANCE": instance})
    registry = build_registry(config)
    served = [*registry._changing.get_all_handlers(), *registry._indexing.get_all_handlers()]
    assert served and all(h.labels == {INSTANCE_LABEL: wanted} for h in served)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", "t")))
    memo, settings = operator_memo(config), kopf.OperatorSettings()
    await configure(settings=settings, memo=memo)
    await close_clients(memo=memo)
    suffix = f"-{instance}" if instance else ""
    assert settings.persistence.finalizer == f"turso.buntime.io/finalizer{suffix}"


def _kubeconfig(path: Path, token: str, server: str = "https://127.0.0.1:6443") -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": server, "insecure-skip-tls-verify": True},
                    }
                ],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


async def test_startup_builds_the_clients_into_the_memo_and_cleanup_closes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", "first-token")))
    config = OperatorConfig.from_env({**BASE_ENV, "TURSO_RESYNC_SECONDS": "45", "TURSO_REQUEST_TIMEOUT": "3"})
    memo = operator_memo(config)
    settings = kopf.OperatorSettings()
    await configure(settings=settings, memo=memo)
    state = memo[MEMO_STATE]
    assert isinstance(state, OperatorState) and state.config is config
    assert (
        settings.watching.server_timeout == 90
        and settings.persistence.finalizer == "turso.buntime.io/finalizer"
    )
    assert settings.admission.server is not None, "the webhook is on by default"
    assert state.kube._token == "first-token" and state.reconciler.kube is state.kube

    # A re-login (kopf calls it again on a 401) hands our client the rotated token.
    _kubeconfig(tmp_path / "kubeconfig", "rotated-token")
    info = login(settings=settings, memo=memo)
    assert info.token == "rotated-token" and state.kube._token == "rotated-token"

    session = state.kube._session
    await close_clients(memo=memo)
    assert session.closed and MEMO_STATE not in memo
    await close_clients(memo=memo)  # a second cleanup is harmless


async def test_startup_without_a_config_in_the_memo_fails_permanently() -> None:
    with pytest.raises(kopf.PermanentError, match="operator_memo"):
        await configure(settings=kopf.OperatorSettings(), memo=kopf.Memo())


async def test_an_invalid_spec_is_ready_false_invalid_spec_and_permanent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec the CRD would refuse (validation bypassed): one status write, no retry, no I/O."""
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", "t")))
    memo = operator_memo(OperatorConfig.from_env(BASE_ENV))
    await configure(settings=kopf.OperatorSettings(), memo=memo)
    body = kopf.Body(
        {
            "apiVersion": "turso.buntime.io/v1alpha1",
            "kind": "TursoNamespace",
            "metadata": {"name": "bad", "namespace": "shop", "uid": "u1", "generation": 3},
            "spec": {"database": "Not A Name"},
        }
    )
    patch = kopf.Patch()
    try:
        with kopf_events() as events, pytest.raises(kopf.PermanentError, match="does not match"):
            await reconcile_tursonamespace(body=body, patch=patch, memo=memo, retry=0, database_claims={})
    finally:
        await close_clients(memo=memo)
    assert (patch.status["phase"], patch.status["phaseReason"]) == (Phase.FAILED, Reason.INVALID_SPEC)
    (ready,) = patch.status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        ConditionType.READY,
        "False",
        Reason.INVALID_SPEC,
    )
    assert ready["observedGeneration"] == 3
    assert drained_reasons(events) == [Reason.INVALID_SPEC]


async def test_the_drift_loop_leaves_an_object_alone_right_after_its_handler_reconciled_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf writes the handler's status only after it returns, so the drift loop's copy of the
    object still shows the old status for a while; checked then, it would act on it again (mint
    again, and every mint revokes the token the handler just wrote). It waits instead."""
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", "t")))
    memo = operator_memo(OperatorConfig.from_env({**BASE_ENV, "TURSO_RESYNC_SECONDS": "30"}))
    await configure(settings=kopf.OperatorSettings(), memo=memo)
    raw = {
        "apiVersion": "turso.buntime.io/v1alpha1",
        "kind": "TursoNamespace",
        "metadata": {"name": "bad", "namespace": "shop", "uid": "u1", "generation": 3},
        "spec": {"database": "Not A Name"},
    }
    try:
        with kopf_events() as events:
            with pytest.raises(kopf.PermanentError):
                await reconcile_tursonamespace(
                    body=kopf.Body(raw), patch=kopf.Patch(), memo=memo, retry=0, database_claims={}
                )
            assert drained_reasons(events) == [Reason.INVALID_SPEC]
            await repair_drift(memo[MEMO_STATE], raw, {})  # the same stale copy, at once
            assert drained_reasons(events) == [], "the drift check acted on the stale copy"
    finally:
        await close_clients(memo=memo)


@pytest.fixture(scope="module")
def turso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TursoServer]:
    server = TursoServer(tmp_path_factory.mktemp("handlers") / "data").start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_drift_loop_forgets_deleted_objects_but_never_a_lock_in_use(
    turso: TursoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-object lock and quiet time used to stay for every object the operator ever
    reconciled. Now each drift period drops the idle ones, the deleted objects' with them — but
    not one a reconcile holds or awaits: a reconcile started after that period still waits its turn.

    Every reconcile creates its database on a real turso-server, then waits ``TURSO_REQUEST_TIMEOUT``
    (1 s) for a Kubernetes API that accepts connections and never answers, holding its lock.
    """
    timeout = 1.0
    with socket.create_server(("127.0.0.1", 0)) as silent:
        server = f"https://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", "t", server)))
        env = {
            "TURSO_SERVER_URL": turso.url,
            "TURSO_SERVER_ADMIN_URL": turso.admin_url,
            "TURSO_SERVER_ADMIN_TOKEN": turso.admin_token,
            "TURSO_RESYNC_SECONDS": "0.25",  # also the quiet time after a handler's reconcile
            "TURSO_REQUEST_TIMEOUT": str(timeout),
        }
        memo = operator_memo(OperatorConfig.from_env(env))
        await configure(settings=kopf.OperatorSettings(), memo=memo)
        state = memo[MEMO_STATE]
        assert isinstance(state, OperatorState)

        def tns(name: str) -> dict[str, Any]:
            return {
                "apiVersion": "turso.buntime.io/v1alpha1",
                "kind": "TursoNamespace",
                "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1},
                "spec": {},
            }

        async def reconciled(raw: dict[str, Any]) -> float:
            """kopf's handler on ``raw``; when it ended (it fails on the Secret, as it must here)."""
            with pytest.raises(kopf.TemporaryError, match="cannot write Secret"):
                await reconcile_tursonamespace(
                    body=kopf.Body(raw), patch=kopf.Patch(), memo=memo, retry=0, database_claims={}
                )
            return time.monotonic()

        gone = [("shop", f"gone-{i}") for i in range(20)]
        drift: asyncio.Task[None] | None = None
        try:
            with kopf_events():
                # Reconciled once each, then deleted: no longer in the drift loop's index. Five
                # at a time: twenty creates at once (each starts a tursodb) took 0.6 s on an idle
                # machine, and one on a busy CI machine outlasted the 1 s request timeout.
                for start in range(0, len(gone), 5):
                    await asyncio.gather(*(reconciled(tns(name)) for _, name in gone[start : start + 5]))
                assert set(gone) <= set(state.guards)
                # busy: one reconcile holds its lock, another waits for it, and the drift loop
                # (whose index lists busy alone) runs a period meanwhile.
                busy = tns("busy")
                first = asyncio.create_task(reconciled(busy))
                await asyncio.sleep(0.05)
                second = asyncio.create_task(reconciled(busy))
                await asyncio.sleep(0)
                guard = state.guards[("shop", "busy")]
                assert guard.lock.locked() and guard.users == 2
                index = cast(kopf.Index[Any, dict[str, Any]], {("shop", "busy"): [busy]})
                drift = asyncio.create_task(_drift_loop(state, index, cast(Any, {})))
                deadline = time.monotonic() + 5
                while set(gone) & set(state.guards) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert not set(gone) & set(state.guards), "the deleted objects' guards are still kept"
                assert not first.done(), "the drift period came too late to check the held lock"
                assert state.guards[("shop", "busy")] is guard, "a lock in use was dropped"
                third = asyncio.create_task(reconciled(busy))
                ends = await asyncio.gather(first, second, third)
        finally:
            if drift is not None:
                drift.cancel()
                await asyncio.gather(drift, return_exceptions=True)
            await close_clients(memo=memo)
    # One at a time, each waiting out the API server's timeout: the third started after the
    # drift period and still waited for the lock the first two shared.
    assert ends[1] - ends[0] > 0.8 * timeout and ends[2] - ends[1] > 0.8 * timeout, ends


async def test_the_webhooks_lookup_gives_up_after_half_the_webhook_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API server that accepts the connection and never answers: the webhook answers (here:
    admitted with a warning, Ignore) after half of TURSO_WEBHOOK_TIMEOUT, not after the 10 s
    TURSO_REQUEST_TIMEOUT, which the API server's own 2 s wait would have cut short first."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        server = f"https://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", "t", server)))
        env = {**BASE_ENV, "TURSO_WEBHOOK_TIMEOUT": "2", "TURSO_INJECT_FAILURE_POLICY": "Ignore"}
        memo = operator_memo(OperatorConfig.from_env(env))
        await configure(settings=kopf.OperatorSettings(), memo=memo)
        pod = kopf.Body(
            {
                "metadata": {"name": "app", "namespace": "shop", "labels": {INJECT_LABEL: "orders"}},
                "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
            }
        )
        warnings: list[str] = []
        patch = kopf.Patch()
        started = time.monotonic()
        try:
            await inject_turso(spec=pod.spec, meta=pod.meta, patch=patch, warnings=warnings, memo=memo)
        finally:
            await close_clients(memo=memo)
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.9, elapsed
    assert len(warnings) == 1 and "cannot read TursoNamespace shop/orders" in warnings[0]
    assert not patch, "nothing injected"
