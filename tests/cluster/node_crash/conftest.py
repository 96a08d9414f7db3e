"""The node harness after a crash: a killed run's leftovers are removed by the next start.

Feeds in: the same binaries and images as ``tests/cluster/node``; runs after that folder (its
package-scoped node has stopped, so the machine-wide lock is free).
Checks: processes, mounts, iptables chains, the bridge and the cgroups a SIGKILLed
``python -m tests.support.node`` leaves behind (containerd's shims and the containers outlive it)
are gone once the next :class:`~tests.support.node.Node` has started and stopped.
Leaves unmocked: everything; the crash is a real SIGKILL.
"""
