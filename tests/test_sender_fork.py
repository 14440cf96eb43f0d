"""Fork: the child starts over and sends only its own events; the parent carries on."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ingest_fakes import WRITE_KEY, FakeIngest, _http_server, ingest, senders

__all__ = ["_http_server", "ingest", "senders"]

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = f"""
import ctypes, json, os, sys, threading, warnings
# Python 3.12+ warns on any fork of a threaded process (this script's own holder
# thread is enough); the warning is not the sender's output, which must be none.
warnings.filterwarnings("ignore", "This process .* multi-threaded", DeprecationWarning)
from traket._sender import BatchSender
from traket._transport import HttpTransport

url, how = sys.argv[1], sys.argv[2]
transport = HttpTransport(url, {WRITE_KEY!r})
sender = BatchSender(transport, flush_interval=3600, exit_timeout=3)

def event(name):
    return {{"provider": "openai", "idempotencyKey": name}}

for i in range(30):  # fewer than a batch: still queued in the parent at fork time
    sender.submit(event(f"parent-{{i}}"))

# Another thread holds the sender's lock across the fork.
held, release = threading.Event(), threading.Event()
def hold():
    with sender._lock:
        held.set()
        release.wait()
holder = threading.Thread(target=hold)
holder.start()
held.wait()

session = transport._session
if how == "os.fork":
    pid = os.fork()
else:  # a server that forks without running Python's fork hooks
    pid = ctypes.CDLL(None, use_errno=True).fork()

if pid == 0:
    for i in range(20):
        sender.submit(event(f"child-{{i}}"))
    ok = sender.flush(5)
    fresh = transport._session is not session
    stats = sender.stats()
    os._exit(0 if ok and fresh and stats.enqueued == stats.delivered == 20 else 3)

release.set()
holder.join()
for i in range(30, 40):
    sender.submit(event(f"parent-{{i}}"))
child_status = os.waitpid(pid, 0)[1]
print(json.dumps({{"child": child_status, "parent": sender.flush(5)}}))
"""


@pytest.mark.parametrize("how", ["os.fork", "raw-fork"])
def test_a_forked_child_sends_its_own_events_and_never_the_parents(
    ingest: FakeIngest, how: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), ingest.url, how],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout) == {"child": 0, "parent": True}
    expected = {f"parent-{i}" for i in range(40)} | {f"child-{i}" for i in range(20)}
    assert set(ingest.store.events) == expected
    assert set(ingest.store.arrivals.values()) == {1}


KEYS_SCRIPT = """
import ctypes, json, os, sys
from traket._event import build_event

how = sys.argv[1]
fork = os.fork if how == "os.fork" else ctypes.CDLL(None, use_errno=True).fork
build_event({"provider": "openai"})  # the parent has made keys before forking
read, write = os.pipe()
children = []
for _ in range(3):
    pid = fork()
    if pid == 0:
        keys = [build_event({"provider": "openai"})["idempotencyKey"]
                for _ in range(50)]
        os.write(write, (json.dumps(keys) + "\\n").encode())
        os._exit(0)
    children.append(pid)
keys = [build_event({"provider": "openai"})["idempotencyKey"] for _ in range(50)]
for pid in children:
    os.waitpid(pid, 0)
os.close(write)
with os.fdopen(read) as lines:
    for line in lines:
        keys += json.loads(line)
print(json.dumps({"keys": len(keys), "distinct": len(set(keys))}))
"""


@pytest.mark.parametrize("how", ["os.fork", "raw-fork"])
def test_processes_forked_with_or_without_hooks_never_share_idempotency_keys(
    how: str,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KEYS_SCRIPT, how],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"keys": 200, "distinct": 200}
