"""A history checker for "many pods, one truth", with turso-server and a pod SIGKILLed.

Three pod processes (``tests/support/history_pod.py``) run seeded random operations against one
namespace for ``SECONDS`` while turso-server (with its tursodb children) is SIGKILLed and
restarted once, one pod is SIGKILLed and restarted once, and one pod is frozen (SIGSTOP) twice
until another pod has taken the namespace's write lease over, then thawed (a GC pause or a
stalled node: the frozen pod still believes it holds the lease): once at a moment it holds the
lease, so its next renewal or push must be fenced off, and once just before a batch it pushes
under the lease goes out, after every check the replica makes, so that only turso-server's fence
(``409 lease lost``) keeps the batch off the newer holder's writes. Then a fresh replica reads
what the server holds and the recorded history is checked:

* every acknowledged insert is present exactly once; nothing that failed is present; nothing at all
  is present twice;
* each counter equals the increments that landed (its ``incs`` log, written in the same
  transaction), which include every acknowledged increment and no failed one;
* no check-and-set version was accepted twice, and every acknowledged one is the one on record;
* no queue message was acknowledged twice, and every acknowledged ack is on record.

Unacknowledged operations (``unknown``, or cut short by a kill) may be missing, never duplicated.
The seed is printed on failure (``HISTORY_SEED`` reruns with one). Two self-tests show the checker
can fail: the opt-in offline mode (last push wins) under the same load, and a turso-server with
its push fence taken out (``tests/support/unfenced_turso_server.py``) under the push freeze.

Knobs for soak runs of ``test_history_with_server_and_pod_killed`` (environment; unset, each is
today's CI run of ~35 s):

* ``HISTORY_SEED`` — the seed of every pod's operations (default: a random one, printed);
* ``HISTORY_SECONDS`` — how long the pods run (default 30; the faults keep their share of it);
* ``HISTORY_PODS`` — how many pod processes (default 3, at least 3);
* ``HISTORY_SERVER_KILLS`` — how many times turso-server is SIGKILLed and restarted (default 1),
  spread over the first half of the run;
* ``HISTORY_PUSH_KILLS`` — how many times the first pod is SIGKILLed with a batch it pushes under
  its lease sent and its reply unread (``HISTORY_KILL_FLAG`` in ``history_pod``), then restarted
  on its replica (default 0);
* ``HISTORY_CHILD_KILLS`` — how many times the namespace's tursodb child alone is SIGKILLed
  mid-traffic, after the turso-server kills (turso-server restarts it; default 0);
* ``HISTORY_PUSH_FREEZES`` — how many times the third pod is frozen just before a push under a
  lease another pod then takes over (default 1); each such batch must be refused (``409``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from buntime.turso import TursoService, resolve_config
from tests.support.history_pod import THAWED_PUSH
from tests.support.tursoserver import TursoServer, kill_tree

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("HISTORY_SECONDS") or 30.0)
PODS = tuple(f"p{i}" for i in range(max(3, int(os.environ.get("HISTORY_PODS") or 3))))
SERVER_KILLS = int(os.environ.get("HISTORY_SERVER_KILLS") or 1)
PUSH_KILLS = int(os.environ.get("HISTORY_PUSH_KILLS") or 0)
CHILD_KILLS = int(os.environ.get("HISTORY_CHILD_KILLS") or 0)
PUSH_FREEZES = int(os.environ.get("HISTORY_PUSH_FREEZES") or 1)
NS = "history"
LEASE_TTL = 1.0  # the pods' TURSO_LEASE_TTL: a frozen holder blocks the others this long
UNFENCED_SERVER = [
    sys.executable,
    "-P",
    str(Path(__file__).parents[1] / "support" / "unfenced_turso_server.py"),
]


class Pod:
    def __init__(
        self, server: TursoServer, root: Path, name: str, seed: int, seconds: float, write_mode: str
    ) -> None:
        self.server, self.root, self.name, self.seed = server, root, name, seed
        self.log = root / f"{name}.history.jsonl"
        self.freeze_flag = root / f"{name}.freeze-push"
        self.kill_flag = root / f"{name}.kill-push"
        self.env = {
            **os.environ,
            "HISTORY_WRITE_MODE": write_mode,
            "HISTORY_LEASE_TTL": f"{LEASE_TTL}s",
            "HISTORY_FREEZE_FLAG": str(self.freeze_flag),
            "HISTORY_KILL_FLAG": str(self.kill_flag),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.start(seconds)

    def start(self, seconds: float) -> None:
        out = open(self.root / f"{self.name}.out", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.history_pod",
                self.server.url,
                self.server.data_token,
                str(self.root / self.name),
                self.name,
                str(self.seed),
                str(seconds),
                str(self.log),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            env=self.env,
        )
        out.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stopped(self) -> bool:
        """Whether the process is stopped (state ``T`` in ``/proc/<pid>/stat``)."""
        assert self.proc is not None
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] == "T"

    def holds(self, lease: dict[str, Any] | None) -> bool:
        """Whether ``lease`` (turso-server's admin view) is this pod's: ``<host>.<pid>.<random>``."""
        assert self.proc is not None
        return lease is not None and lease["holder"].split(".")[-2:-1] == [str(self.proc.pid)]


def thawed_pushes(log: Path) -> list[int]:
    """The HTTP status of every batch a pod sent after a push freeze, from its history log."""
    events = (json.loads(line) for line in log.read_text().splitlines())
    return [int(event["http"]) for event in events if event.get("status") == THAWED_PUSH]


def current_lease(server: TursoServer) -> dict[str, Any] | None:
    status, view = server.admin("GET", f"/v1/namespaces/{NS}")
    assert status == 200, view
    lease: dict[str, Any] | None = view["lease"]
    return lease


def taken_over(server: TursoServer, pod: Pod, lease: dict[str, Any] | None) -> bool:
    """Wait (a few TTLs at most) until another pod holds a lease newer than ``lease``, then a
    little longer, so that it writes before the frozen ``pod`` is thawed."""
    deadline = time.monotonic() + 4 * LEASE_TTL
    while time.monotonic() < deadline:
        now = current_lease(server)
        if now is not None and not pod.holds(now) and (lease is None or now["fence"] > lease["fence"]):
            time.sleep(0.3)
            return True
        time.sleep(0.05)
    return False


def freeze_while_holding(server: TursoServer, pod: Pod, until: float) -> bool:
    """SIGSTOP ``pod`` at a moment it holds the lease, SIGCONT it once another pod holds it.

    Tries until ``until``; ``True`` once a freeze saw the lease taken over under the frozen pod (it
    ran out, unrenewed, and the next holder's fence is newer): thawed, the pod carries on with a
    transaction under a lease it believes it holds, and its renewal or push is refused (409).
    """
    assert pod.proc is not None
    while time.monotonic() < until:
        lease = current_lease(server)
        if lease is None or not pod.holds(lease):
            time.sleep(0.002)
            continue
        pod.proc.send_signal(signal.SIGSTOP)
        try:
            if taken_over(server, pod, lease):
                return True
        finally:
            pod.proc.send_signal(signal.SIGCONT)
    return False


def freeze_before_push(server: TursoServer, pod: Pod, until: float) -> bool:
    """Have ``pod`` stop itself just before its next batch under a lease goes out, and SIGCONT it
    once another pod has taken the lease over; ``True`` when that happened before ``until``.

    The pod checked its lease before the freeze, so thawed it sends the batch at once with the
    stale token, and what happens to it is up to turso-server (:func:`thawed_pushes`).
    """
    assert pod.proc is not None
    pod.freeze_flag.touch()
    try:
        while not pod.stopped():
            if time.monotonic() >= until or pod.proc.poll() is not None:
                return False
            time.sleep(0.002)
    finally:
        pod.freeze_flag.unlink(missing_ok=True)
    try:
        lease = current_lease(server)
        # Nothing of the pod's may be on its way: a request in flight under its lease pins it.
        assert not (pod.holds(lease) and lease and lease["inUse"]), f"the batch went out: {lease}"
        return taken_over(server, pod, None)
    finally:
        pod.proc.send_signal(signal.SIGCONT)


def kill_during_push(pod: Pod, until: float) -> bool:
    """Have ``pod`` SIGKILL itself once its next batch under a lease is sent, before it reads the
    reply; ``True`` when it died that way before ``until`` (the caller restarts it)."""
    assert pod.proc is not None
    pod.kill_flag.touch()
    try:
        while pod.proc.poll() is None:
            if time.monotonic() >= until:
                return False
            time.sleep(0.002)
    finally:
        pod.kill_flag.unlink(missing_ok=True)
    return pod.proc.returncode == -signal.SIGKILL


def outcomes(logs: list[Path]) -> dict[str, dict[str, Any]]:
    """``uid -> {"op", "status", ...}``: the last thing each operation's log said."""
    seen: dict[str, dict[str, Any]] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("op") == "pod":
                continue
            entry = seen.setdefault(event["uid"], {"status": "unknown"})
            entry.update(event)
            if event["status"] == "invoke":
                entry["status"] = "unknown"
    return seen


async def read_server(server: TursoServer, root: Path) -> dict[str, list[dict[str, Any]]]:
    env = {
        "TURSO_SERVER_URL": server.url,
        "TURSO_SERVER_TOKEN": server.data_token,
        "TURSO_LOCAL_PATH": str(root / "checker" / "runtime.db"),
        "TURSO_SYNC_INTERVAL": "0",
    }
    service = TursoService(resolve_config(env=env))
    try:
        db = await service.connect(NS)
        return {
            table: await db.all(f"SELECT * FROM {table}")
            for table in ("ins", "counters", "incs", "cas", "cas_log", "q")
        }
    finally:
        await service.aclose()


def check(history: dict[str, dict[str, Any]], state: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every problem the server's ``state`` shows against the recorded ``history`` (see the module
    doc); an empty list when the history is consistent."""
    problems: list[str] = []
    by_status = Counter(entry["status"] for entry in history.values())

    def landed(table: str, column: str = "uid") -> Counter[str]:
        return Counter(str(row[column]) for row in state[table] if row.get(column))

    def judge(kind: str, present: Counter[str]) -> None:
        for uid, n in present.items():
            if n > 1:
                problems.append(f"{kind} {uid} is present {n} times")
            entry = history.get(uid)
            if entry is None or entry["op"] != kind:
                problems.append(f"{kind} {uid} is present but no such {kind} was ever made")
            elif entry["status"] == "fail":
                problems.append(f"{kind} {uid} failed ({entry.get('error')}) but is present")
        for uid, entry in history.items():
            if entry["op"] == kind and entry["status"] == "ok" and present[uid] != 1:
                problems.append(f"acknowledged {kind} {uid} is present {present[uid]} times")

    judge("insert", landed("ins"))
    judge("inc", landed("incs"))
    judge("cas", landed("cas_log"))
    judge("enqueue", landed("q", "mid"))

    # Counters: each equals the increments logged with it, which lie between the acknowledged
    # increments of that key and those plus the ones whose outcome is unknown.
    counters = {int(row["k"]): int(row["v"]) for row in state["counters"]}
    per_key = Counter(int(row["k"]) for row in state["incs"])
    for row in state["incs"]:
        op = history.get(str(row["uid"]))
        if op is not None and op["op"] == "inc" and int(op["k"]) != int(row["k"]):
            problems.append(f"inc {row['uid']} of counter {op['k']} landed on counter {row['k']}")
    for k in sorted(
        set(counters) | set(per_key) | {int(e["k"]) for e in history.values() if e["op"] == "inc"}
    ):
        value = counters.get(k)
        if value is None:
            problems.append(f"counter {k} is missing")
            continue
        if value != per_key[k]:
            problems.append(f"counter {k} is {value} but {per_key[k]} increments landed")
        incs = Counter(e["status"] for e in history.values() if e["op"] == "inc" and int(e["k"]) == k)
        if not incs["ok"] <= value <= incs["ok"] + incs["unknown"]:
            problems.append(
                f"counter {k} is {value}: {incs['ok']} acknowledged and {incs['unknown']} unknown increments"
            )

    # Check-and-set: per key, versions 1..top each accepted once, the key at top, and every
    # acknowledged one accepted at the version its caller was told.
    versions = Counter((int(row["k"]), int(row["version"])) for row in state["cas_log"])
    problems += [f"cas key {k} version {v} accepted {n} times" for (k, v), n in versions.items() if n > 1]
    for row in state["cas"]:
        accepted = sorted(v for (k, v) in versions if k == row["k"])
        top = accepted[-1] if accepted else 0
        if int(row["version"]) != top:
            problems.append(f"cas key {row['k']} is at version {row['version']}, its log ends at {top}")
        if accepted != list(range(1, top + 1)):
            problems.append(
                f"cas key {row['k']}: versions {sorted(set(range(1, top + 1)) - set(accepted))} missing"
            )
    cas_rows = {str(row["uid"]): row for row in state["cas_log"]}
    for uid, entry in history.items():
        row = cas_rows.get(uid)
        if entry["op"] != "cas" or row is None:
            continue
        if int(row["k"]) != int(entry["k"]):
            problems.append(f"cas {uid} of key {entry['k']} landed on key {row['k']}")
        if entry["status"] == "ok" and entry.get("result") != int(row["version"]):
            problems.append(
                f"cas {uid} was acknowledged at version {entry.get('result')}, recorded at {row['version']}"
            )

    # Queue: a message is leased by at most one acknowledged dequeue (there is no lease expiry
    # here, so once leased it stays with its consumer), it stays with that consumer, and it is
    # acknowledged at most once, by that consumer.
    queue = {str(row["mid"]): row for row in state["q"]}
    problems += [
        f"message {mid} acknowledged {row['acks']} times" for mid, row in queue.items() if row["acks"] > 1
    ]
    problems += [
        f"message {mid} has {row['acks']} acks on record in state {row['state']}"
        for mid, row in queue.items()
        if (row["state"] == "acked") != (row["acks"] == 1)
    ]
    dequeued: dict[str, list[str]] = {}
    for e in history.values():
        if e["op"] == "dequeue" and e["status"] == "ok" and e.get("result"):
            dequeued.setdefault(str(e["result"]), []).append(str(e["pod"]))
    for mid, consumers in dequeued.items():
        row = queue.get(mid)
        if len(consumers) > 1:
            problems.append(f"message {mid} was leased to {len(consumers)} consumers: {consumers}")
        elif row is None or row["state"] not in ("leased", "acked") or row["owner"] != consumers[0]:
            problems.append(f"message {mid} leased to {consumers[0]} is on record as {row}")
    acked = Counter(
        e["mid"] for e in history.values() if e["op"] == "ack" and e["status"] == "ok" and e.get("result")
    )
    for mid, n in acked.items():
        if n > 1:
            problems.append(f"message {mid}: {n} acks were acknowledged")
        if queue.get(mid, {}).get("acks") != 1:
            problems.append(f"message {mid}: an acknowledged ack is not on record")
    problems += [
        f"ack {uid} of message {e['mid']} leased to this pod found it gone (its lease or an ack was lost)"
        for uid, e in history.items()
        if e["op"] == "ack" and e["status"] == "ok" and not e.get("result")
    ]
    # What unacknowledged dequeues and acks may have left: no more leases per consumer than its
    # dequeues of unknown outcome, and an ack on record only where one was acknowledged or unknown.
    unknown_dequeues = Counter(
        str(e["pod"]) for e in history.values() if e["op"] == "dequeue" and e["status"] == "unknown"
    )
    unexplained = Counter(
        str(row["owner"]) for mid, row in queue.items() if row["state"] != "ready" and mid not in dequeued
    )
    problems += [
        f"{n} messages are leased to {owner} by no acknowledged dequeue, "
        f"and only {unknown_dequeues[owner]} of its dequeues have an unknown outcome"
        for owner, n in unexplained.items()
        if n > unknown_dequeues[owner]
    ]
    maybe_acked = {str(e["mid"]) for e in history.values() if e["op"] == "ack" and e["status"] == "unknown"}
    problems += [
        f"message {mid} is acked on record by no acknowledged or unknown ack"
        for mid, row in queue.items()
        if row["acks"] and mid not in acked and mid not in maybe_acked
    ]
    if by_status["ok"] < 50:
        problems.append(f"too little progress to mean anything: {dict(by_status)}")
    return problems


async def run_history(
    root: Path,
    *,
    seconds: float,
    faults: bool,
    write_mode: str = "serializable",
    push_freezes: int = 0,
    server_command: list[str] | None = None,
    pods_names: tuple[str, ...] = PODS[:3],
    server_kills: int = 1,
    push_kills: int = 0,
    child_kills: int = 0,
) -> tuple[int, dict[str, dict[str, Any]], list[str]]:
    """Run the pods (with ``server_kills`` kills of turso-server, ``child_kills`` of its tursodb
    child, ``push_kills`` kills of the first pod mid-push, a kill of the second pod and the freeze
    of the third while it holds the lease when ``faults``, then ``push_freezes`` push freezes of
    the third); return the seed, history and problems."""
    seed = int(os.environ.get("HISTORY_SEED") or random.randrange(1 << 30))
    server = TursoServer(root / "server", command=server_command).start()
    pods: list[Pod] = []
    try:
        started = time.monotonic()
        pods = [Pod(server, root, name, seed, seconds, write_mode) for name in pods_names]
        if faults:
            for i in range(server_kills):  # one kill: at 0.3 of the run; more: spread over 0.1-0.5
                time.sleep(
                    max(
                        0.0, started + seconds * (0.1 + 0.4 * (i + 1) / (server_kills + 1)) - time.monotonic()
                    )
                )
                kill_tree(server.data_dir, server.proc)  # the turso-server pod dies, children and all
                server.proc = None
                time.sleep(1.0)
                server.start()
            for _ in range(child_kills):  # the namespace's tursodb dies under turso-server
                children = server.pids()[1:]  # turso-server first, then its tursodb children
                assert children, "no tursodb child to kill"
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                time.sleep(1.0)
            for _ in range(push_kills):  # the first pod dies with a batch on its way
                dead = kill_during_push(pods[0], until=time.monotonic() + 10.0)
                assert dead, "pods[0] did not die with a push in flight: the fault did not happen"
                pods[0].start(max(3.0, started + seconds - time.monotonic()))
            time.sleep(max(0.0, started + seconds * 0.6 - time.monotonic()))
            victim = pods[1]
            victim.kill()  # a runtime pod dies mid-traffic and comes back on the same replica dir
            victim.start(max(3.0, started + seconds - time.monotonic()))
            time.sleep(max(0.0, started + seconds * 0.7 - time.monotonic()))
            frozen = freeze_while_holding(server, pods[2], until=started + seconds * 0.8)
            assert frozen, "no freeze caught pods[2] holding the lease: the fault did not happen"
        for _ in range(push_freezes):
            frozen = freeze_before_push(server, pods[2], until=started + seconds * 0.95)
            assert frozen, "pods[2] did not stop before a push under a taken-over lease: no fault"
        for pod in pods:
            assert pod.wait(timeout=seconds + 60) == 0, (pod.root / f"{pod.name}.out").read_text()[-3000:]
        history = outcomes([pod.log for pod in pods])
        state = await read_server(server, root)
        return seed, history, check(history, state)
    finally:
        for pod in pods:
            if pod.proc is not None and pod.proc.poll() is None:
                pod.kill()
        kill_tree(server.data_dir, server.proc)


async def test_history_with_server_and_pod_killed(tmp_path: Path) -> None:
    seed, history, problems = await run_history(
        tmp_path,
        seconds=SECONDS,
        faults=True,
        push_freezes=PUSH_FREEZES,
        pods_names=PODS,
        server_kills=SERVER_KILLS,
        push_kills=PUSH_KILLS,
        child_kills=CHILD_KILLS,
    )
    print(f"history seed={seed}: {dict(Counter(entry['status'] for entry in history.values()))}")
    assert not problems, f"seed {seed}: " + "; ".join(problems[:20])
    thawed = thawed_pushes(tmp_path / f"{PODS[2]}.history.jsonl")
    assert thawed == [409] * PUSH_FREEZES, f"seed {seed}: the batches pushed past their lease got {thawed}"


async def test_the_checker_catches_last_push_wins(tmp_path: Path) -> None:
    """The checker can fail: the opt-in offline mode (acknowledged locally, last push wins) loses
    acknowledged writes under the same load, and the checker must say so."""
    seed, _, problems = await run_history(tmp_path, seconds=8.0, faults=False, write_mode="offline")
    assert any("acknowledged" in problem for problem in problems), f"seed {seed}: {problems[:5]}"


async def test_the_checker_catches_a_push_past_its_lease(tmp_path: Path) -> None:
    """The checker can fail when the fence is gone: against a turso-server that forwards a stale
    lease token, the batch a thawed pod pushes lands over the other pods' writes (each freeze is
    ~1.5 s of the others' writes under a newer lease), and the checker must say so."""
    seed, _, problems = await run_history(
        tmp_path, seconds=12.0, faults=False, push_freezes=3, server_command=UNFENCED_SERVER
    )
    thawed = thawed_pushes(tmp_path / f"{PODS[2]}.history.jsonl")
    assert thawed == [200, 200, 200], f"seed {seed}: the unfenced server answered {thawed}"
    print(f"unfenced history seed={seed}: {len(problems)} problems, e.g. {problems[:3]}")
    assert problems, f"seed {seed}: three stale batches landed and the checker saw nothing wrong"


def consistent_run() -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """A small history and the server state it must leave, which :func:`check` accepts."""
    history: dict[str, dict[str, Any]] = {}
    state: dict[str, list[dict[str, Any]]] = {
        t: [] for t in ("ins", "counters", "incs", "cas", "cas_log", "q")
    }

    def op(uid: str, kind: str, status: str = "ok", **fields: Any) -> None:
        history[uid] = {"uid": uid, "op": kind, "status": status, "pod": "p0", "k": 0, "mid": None, **fields}

    for i in range(50):
        op(f"i{i}", "insert")
        state["ins"].append({"id": i + 1, "uid": f"i{i}"})
    op("u1", "inc")
    op("u2", "inc", status="unknown")  # landed
    op("u3", "inc", status="unknown")  # did not
    op("u4", "inc", status="fail")
    state["counters"] = [{"k": 0, "v": 2}]
    state["incs"] = [{"id": 1, "k": 0, "uid": "u1"}, {"id": 2, "k": 0, "uid": "u2"}]
    op("c1", "cas", result=1)
    op("c2", "cas", result=2)
    state["cas"] = [{"k": 0, "version": 2, "uid": "c2"}]
    state["cas_log"] = [
        {"id": 1, "k": 0, "version": 1, "uid": "c1"},
        {"id": 2, "k": 0, "version": 2, "uid": "c2"},
    ]
    op("m1", "enqueue")
    op("m2", "enqueue")
    op("d1", "dequeue", result="m1")
    op("d2", "dequeue", result="m2", pod="p1")
    op("a1", "ack", mid="m1", result=True)
    state["q"] = [
        {"id": 1, "mid": "m1", "state": "acked", "owner": "p0", "acks": 1},
        {"id": 2, "mid": "m2", "state": "leased", "owner": "p1", "acks": 0},
    ]
    return history, state


def test_the_checker_accepts_a_consistent_run() -> None:
    history, state = consistent_run()
    assert check(history, state) == []


History = dict[str, dict[str, Any]]
State = dict[str, list[dict[str, Any]]]


def ghost_insert(h: History, s: State) -> None:
    s["ins"].append({"id": 99, "uid": "ghost"})


def inc_on_another_counter(h: History, s: State) -> None:
    s["counters"] = [{"k": 0, "v": 1}, {"k": 1, "v": 1}]
    s["incs"][0]["k"] = 1


def counter_past_unknown(h: History, s: State) -> None:
    s["incs"] += [{"id": 3, "k": 0, "uid": "u3"}, {"id": 4, "k": 0, "uid": "u9"}]
    s["counters"][0]["v"] = 4


def counter_gone(h: History, s: State) -> None:
    s["counters"].clear()


def cas_acked_at_another_version(h: History, s: State) -> None:
    h["c1"]["result"] = 2


def cas_version_skipped(h: History, s: State) -> None:
    s["cas_log"][1]["version"] = s["cas"][0]["version"] = h["c2"]["result"] = 3


def leased_twice(h: History, s: State) -> None:
    h["d3"] = {**h["d2"], "uid": "d3", "pod": "p2"}


def lease_taken(h: History, s: State) -> None:
    s["q"][1]["owner"] = "p2"


def ack_found_lease_gone(h: History, s: State) -> None:
    h["a2"] = {**h["a1"], "uid": "a2", "pod": "p1", "mid": "m2", "result": False}


def acked_without_ack(h: History, s: State) -> None:
    h["a1"]["status"] = "unknown"
    s["q"][0]["acks"] = 0


def leased_by_a_failed_dequeue(h: History, s: State) -> None:
    h["d2"]["status"] = "fail"


def acked_by_a_failed_ack(h: History, s: State) -> None:
    h["a1"]["status"] = "fail"


BROKEN: dict[str, tuple[Callable[[History, State], None], str]] = {
    "an insert nobody made": (ghost_insert, "no such insert"),
    "an increment on another counter": (inc_on_another_counter, "landed on counter 1"),
    "a counter past its unknown increments": (counter_past_unknown, "2 unknown increments"),
    "a counter row gone": (counter_gone, "counter 0 is missing"),
    "a cas acknowledged at another version": (cas_acked_at_another_version, "recorded at 1"),
    "a cas version skipped": (cas_version_skipped, "versions [2] missing"),
    "a message leased to two consumers": (leased_twice, "leased to 2 consumers"),
    "a lease taken from its consumer": (lease_taken, "leased to p1 is on record"),
    "an ack that found its lease gone": (ack_found_lease_gone, "found it gone"),
    "an acked message without its ack": (acked_without_ack, "0 acks on record in state acked"),
    "a message leased by a failed dequeue": (leased_by_a_failed_dequeue, "by no acknowledged dequeue"),
    "a message acked by a failed ack": (acked_by_a_failed_ack, "by no acknowledged or unknown ack"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_checker_catches(name: str) -> None:
    """Each claim of the contract is checked: one broken fact, one problem naming it."""
    history, state = consistent_run()
    breaks, expected = BROKEN[name]
    breaks(history, state)
    problems = check(history, state)
    assert any(expected in problem for problem in problems), problems
