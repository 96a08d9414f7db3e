"""A small Kubernetes API client for the objects kopf does not hand us (Secrets, lookups).

It uses the credentials kopf logs in with (``kopf.ConnectionInfo``), so the operator has one
identity and one RBAC surface; the login handler hands it a refreshed token (:meth:`KubeClient.login`).
Every aiohttp failure is translated here (:func:`_mapped_errors`): unreachable, timed out or not a
JSON answer, or 5xx → :class:`KubeUnavailableError`, 404 → :class:`KubeNotFoundError`, 409 →
:class:`KubeConflictError`, any other status → :class:`KubeError`. Nothing of aiohttp escapes.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from ._constants import GROUP, PLURAL, VERSION
from ._errors import KubeConflictError, KubeError, KubeNotFoundError, KubeUnavailableError


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=_pem(info.ca_data).decode() if info.ca_data else None,
    )
    cert, key = info.certificate_path, info.private_key_path
    if info.certificate_data and info.private_key_data:
        # ssl wants files: write the client pair once, readable by us only.
        cert_file = tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False)  # noqa: SIM115
        key_file = tempfile.NamedTemporaryFile("wb", suffix=".key", delete=False)  # noqa: SIM115
        with cert_file, key_file:
            cert_file.write(_pem(info.certificate_data))
            key_file.write(_pem(info.private_key_data))
        cert, key = cert_file.name, key_file.name
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


def _pem(value: bytes | str) -> bytes:
    """kubeconfig ``*-data`` fields arrive base64-encoded; files and tokens arrive as PEM."""
    raw = value if isinstance(value, bytes) else value.encode()
    return raw if raw.lstrip().startswith(b"-----BEGIN") else base64.b64decode(raw)


@contextlib.contextmanager
def _mapped_errors(method: str, path: str, server: str) -> Iterator[None]:
    """aiohttp's and the socket layer's errors as :class:`KubeUnavailableError`, chained."""
    try:
        yield
    except KubeError:
        raise
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise KubeUnavailableError(
            f"{method} {path}: Kubernetes API unreachable at {server}: {type(exc).__name__}: {exc}"
        ) from exc
    except ValueError as exc:  # a body that is not JSON: a proxy's error page, a cut-off answer
        raise KubeUnavailableError(f"{method} {path}: not an API answer: {exc}") from exc


class KubeClient:
    """Just enough of the API: Secrets, TursoNamespaces, and the key names of the ConfigMaps and
    Secrets a pod's ``envFrom`` names (the webhook). Usage::

    kube = KubeClient(info, timeout=10)       # built in the operator's startup handler
    secret = await kube.get_secret("shop", "orders-turso")   # None when missing
    await kube.aclose()                       # in the cleanup handler

    Parameters:

    * ``info`` - the connection kopf logs in with (server, CA, client certificate or token).
    * ``timeout`` *(optional)* - seconds per request, connect included (default 10).
    """

    def __init__(self, info: kopf.ConnectionInfo, *, timeout: float = 10.0) -> None:
        self._server = info.server.rstrip("/")
        self._token = info.token
        self._session = aiohttp.ClientSession(
            headers={"Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info)),
        )

    def login(self, info: kopf.ConnectionInfo) -> None:
        """Use the token of a fresh login (a projected service-account token is rotated)."""
        self._token = info.token

    async def aclose(self) -> None:
        await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "",
        timeout: float | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        if content_type:
            headers["Content-Type"] = content_type
        # A shorter bound than the session's for this one call (the webhook's lookup). Never pass
        # None: to aiohttp that means no timeout at all, not the session's.
        bound = self._session.timeout if timeout is None else aiohttp.ClientTimeout(total=timeout)
        with _mapped_errors(method, path, self._server):
            async with self._session.request(
                method, f"{self._server}{path}", json=body, headers=headers, timeout=bound
            ) as resp:
                payload = await resp.json(content_type=None) if resp.content_length != 0 else None
                message = payload.get("message") if isinstance(payload, dict) else payload
                if resp.status == 404:
                    raise KubeNotFoundError(f"{method} {path}: not found", status=404)
                if resp.status == 409:
                    raise KubeConflictError(f"{method} {path}: conflict: {message}")
                if resp.status >= 500:
                    raise KubeUnavailableError(
                        f"{method} {path} failed ({resp.status}): {message}", status=resp.status
                    )
                if resp.status >= 400:
                    raise KubeError(f"{method} {path} failed ({resp.status}): {message}", status=resp.status)
                return payload

    @staticmethod
    def _secret_path(namespace: str, name: str = "") -> str:
        base = f"/api/v1/namespaces/{quote(namespace)}/secrets"
        return f"{base}/{quote(name)}" if name else base

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._request("GET", self._secret_path(namespace, name))
        except KubeNotFoundError:
            return None
        return result

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("POST", self._secret_path(namespace), body)
        return result

    async def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("PUT", self._secret_path(namespace, name), body)
        return result

    async def delete_secret(self, namespace: str, name: str) -> bool:
        try:
            await self._request("DELETE", self._secret_path(namespace, name))
        except KubeNotFoundError:
            return False
        return True

    async def env_source_keys(
        self, kind: str, namespace: str, name: str, *, timeout: float | None = None
    ) -> frozenset[str] | None:
        """The key names of ConfigMap or Secret ``name`` (``kind`` ``configmaps`` or ``secrets``), the
        variables an ``envFrom`` of it gives (its ``data``; the kubelet ignores a ConfigMap's
        ``binaryData``); ``None`` when it does not exist. A Secret's values are dropped here, unread."""
        if kind not in ("configmaps", "secrets"):
            raise ValueError(f"not an envFrom source kind: {kind!r}")
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/{kind}/{quote(name, safe='')}"
        try:
            result = await self._request("GET", path, timeout=timeout)
        except KubeNotFoundError:
            return None
        data = result.get("data") if isinstance(result, dict) else None
        return frozenset(data) if isinstance(data, dict) else frozenset()

    @staticmethod
    def _tursonamespace_path(namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}"

    async def patch_tursonamespace_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into the object's status subresource (the drift loop's writes)."""
        path = f"{self._tursonamespace_path(namespace, name)}/status"
        await self._request("PATCH", path, {"status": status}, content_type="application/merge-patch+json")

    async def get_tursonamespace(
        self, namespace: str, name: str, *, timeout: float | None = None
    ) -> dict[str, Any] | None:
        path = self._tursonamespace_path(namespace, name)
        try:
            result: dict[str, Any] = await self._request("GET", path, timeout=timeout)
        except KubeNotFoundError:
            return None
        return result


def decode_secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's ``data`` decoded to text (undecodable entries are skipped)."""
    decoded: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    return decoded
