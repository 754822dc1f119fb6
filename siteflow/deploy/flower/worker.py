"""The site worker: a long-running process at a hospital that answers its ClientApp's messages.

Flower 1.41 starts a fresh ``flwr-clientapp`` process for every message (with either
``--isolation`` mode), and a site's step needs torch and Lightning: imported anew for every
message, they cost seconds to tens of seconds, twice a round. A SuperNode whose node config
names a worker (``worker="/path/site.sock"``) has its ClientApp hand each train and evaluate
message to the worker, which imported the training stack once when it started::

    python -m siteflow.deploy.flower.worker --socket /run/siteflow/site1.sock &
    flower-supernode ... --node-config 'task-id=1 worker="/run/siteflow/site1.sock"'

The ClientApp stays the process Flower knows (its mods, SecAgg+ included, run there); only
:func:`siteflow.deploy.flower.handlers.answer` runs in the worker, one message at a time. The
worker keeps the site it built at a run's first message (config, strategy, network, checked
data: :func:`~siteflow.deploy.flower.handlers.deployed_site`) for the run's next ones; what a
round leaves for the next is on the site's disk, as a fresh process would read it. On the socket (a Unix socket, readable by its owner only): the request is three frames,
the message type, the message content and the node's context, as Flower's own protobuf
(nothing is pickled); the answer is one frame, ``b"R"`` + the reply content's protobuf, or
``b"E"`` + the error in words.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Callable

from flwr.app import Context, RecordDict
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    recorddict_from_proto,
    recorddict_to_proto,
)
from flwr.proto.message_pb2 import Context as ContextProto
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto

log = logging.getLogger(__name__)

REPLY, ERROR = b"R", b"E"

Answer = Callable[[str, RecordDict, Context], RecordDict]


class SiteWorkerError(RuntimeError):
    """The site worker failed a message (its reason, in words), or could not be reached."""


def ask(path: Path, kind: str, content: RecordDict, context: Context) -> RecordDict:
    """The reply content of the site worker listening on ``path`` to a message of type
    ``kind`` with ``content``, for the node of ``context``."""
    try:
        connection = Client(str(path), family="AF_UNIX")
    except OSError as error:
        raise SiteWorkerError(
            f"no site worker listens on {path} ({error.strerror or error}): start it with "
            f"`python -m siteflow.deploy.flower.worker --socket {path}`, or drop worker= from the node config"
        ) from None
    with connection:
        connection.send_bytes(kind.encode())
        connection.send_bytes(recorddict_to_proto(content).SerializeToString())
        connection.send_bytes(context_to_proto(context).SerializeToString())
        try:
            answer = connection.recv_bytes()
        except EOFError:
            raise SiteWorkerError(f"the site worker on {path} stopped before it answered a {kind} message") from None
    if answer[:1] == ERROR:
        raise SiteWorkerError(answer[1:].decode())
    return recorddict_from_proto(RecordDictProto.FromString(answer[1:]))


def serve(path: Path) -> None:
    """Answer messages on the Unix socket ``path``, one at a time, until killed (SIGTERM or
    SIGINT); the socket file is removed at the end (by the listener's close). Refuses a
    ``path`` another worker listens on."""
    # the training stack, imported once
    from siteflow.deploy.flower.handlers import answer

    _clear(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with Listener(str(path), family="AF_UNIX") as listener:
        os.chmod(path, 0o600)
        log.info("site worker ready on %s", path)
        while True:
            with listener.accept() as connection:
                _serve_one(connection, answer)


def _serve_one(connection: Connection, answer: Answer) -> None:
    """Read one request from ``connection``, answer it (or say why not)."""
    try:
        kind = connection.recv_bytes().decode()
        content = recorddict_from_proto(RecordDictProto.FromString(connection.recv_bytes()))
        context = context_from_proto(ContextProto.FromString(connection.recv_bytes()))
    except EOFError:  # closed without a request (another worker's probe)
        return
    except (OSError, ValueError) as error:
        log.error("site worker: a request that could not be read: %r", error)
        return
    try:
        reply = REPLY + recorddict_to_proto(answer(kind, content, context)).SerializeToString()
    except Exception as error:  # the ClientApp raises it, and Flower returns it to the server
        log.error("site worker: a %s message failed\n%s", kind, traceback.format_exc())
        reply = ERROR + f"{type(error).__name__}: {error}".encode()
    try:
        connection.send_bytes(reply)
    except OSError as error:  # the ClientApp's process is gone (Flower stopped the run)
        log.error("site worker: the answer to a %s message could not be sent: %r", kind, error)


def _clear(path: Path) -> None:
    """Remove a socket file left by a worker that is gone; refuse one a worker listens on."""
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX) as probe:
        if probe.connect_ex(str(path)) == 0:
            raise SystemExit(f"a site worker already listens on {path}")
    path.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m siteflow.deploy.flower.worker",
        description="A hospital's long-running site worker: its SuperNode's ClientApp hands it the train and "
        "evaluate messages (node config worker=\"<socket>\").",
    )
    parser.add_argument("--socket", type=Path, required=True, help="the Unix socket to listen on (at most ~100 characters)")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)  # until a message's site logs to its own file too (log_to)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    siteflow = logging.getLogger("siteflow")
    siteflow.handlers, siteflow.propagate = [handler], False
    siteflow.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # close the listener: its socket file goes
    serve(args.socket)


if __name__ == "__main__":
    main()
