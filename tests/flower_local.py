"""A Flower federation on 127.0.0.1 for the tests: a real SuperLink and SuperNodes.

Every process starts in a session of its own; Flower's own children (``flower-superexec``
in a session of its own too, ``flwr-serverapp``, ``flwr-clientapp``) are found through the
parent links in ``/proc``. :meth:`LocalFederation.close` kills the whole tree and checks that
nothing is left alive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _processes() -> dict[int, tuple[int, int]]:
    """Live (not zombie) processes: pid -> (parent pid, process group), from ``/proc``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        state, ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z":
            found[int(entry.name)] = (int(ppid), int(group))
    return found


def descendants(pids: list[int]) -> list[int]:
    """The live descendants of ``pids`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in _processes().items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], list(pids)
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class LocalFederation:
    """A SuperLink and one SuperNode per node config, on free ports of 127.0.0.1, insecure.

    Args:
        folder: holds ``FLWR_HOME`` (Flower's config and installed apps) and the processes' logs.
        node_configs: one ``--node-config`` string per SuperNode.
        workers: start a site worker (``siteflow.deploy.flower.worker``) for every SuperNode
            and name it in its node config (``worker=...``), so that the ClientApps hand it
            their train and evaluate messages.
        env: extra environment variables of every process.
        credentials: a folder of :func:`make_credentials`: the SuperLink then serves TLS
            (``ca.crt``, ``server.pem``, ``server.key``) with SuperNode authentication, and
            every SuperNode verifies it and signs in with its key of ``node_keys`` (file names
            there, one per node); the keys of ``members`` (``<name>.pub``) are registered with
            ``flwr supernode register`` before any SuperNode starts. None: no TLS, no
            authentication (``--insecure``).
    """

    def __init__(
        self,
        folder: Path,
        node_configs: list[str],
        *,
        workers: bool = False,
        env: dict[str, str] | None = None,
        credentials: Path | None = None,
        node_keys: list[str] | None = None,
        members: list[str] | None = None,
    ) -> None:
        self.folder = folder
        self.logs = folder / "flower-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        home = folder / "flwr-home"
        self.env = {
            **os.environ,
            "FLWR_HOME": str(home),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # Flower starts its helpers by name
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self._commands: dict[str, tuple[str, ...]] = {}
        self._groups: set[int] = set()  # the process groups of everything started here
        self.sockets = Path(tempfile.mkdtemp(prefix="sf-", dir="/tmp")) if workers else None  # short: a Unix socket path
        link_port, *node_ports = free_ports(1 + len(node_configs))
        try:
            if self.sockets is not None:
                sockets = [self.sockets / f"site{index}.sock" for index in range(1, len(node_configs) + 1)]
                for index, path in enumerate(sockets, 1):
                    self._start(f"worker{index}", "python", "-m", "siteflow.deploy.flower.worker", "--socket", str(path))
                node_configs = [f'{node_config} worker="{path}"' for node_config, path in zip(node_configs, sockets)]
            if credentials is None:
                link_security, node_security = ["--insecure"], [["--insecure"]] * len(node_configs)
                connection = "insecure = true"
            else:  # TLS, and only the SuperNodes whose public keys are registered may join
                link_security = ["--ssl-ca-certfile", str(credentials / "ca.crt"), "--ssl-certfile", str(credentials / "server.pem"),
                                 "--ssl-keyfile", str(credentials / "server.key"), "--enable-supernode-auth"]
                node_security = [["--root-certificates", str(credentials / "ca.crt"), "--auth-supernode-private-key", str(credentials / key)]
                                 for key in node_keys or []]
                connection = f'root-certificates = "{credentials / "ca.crt"}"'
            home.mkdir(parents=True, exist_ok=True)
            (home / "config.toml").write_text(
                f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{link_port}"\n{connection}\n'
            )
            self._start("superlink", "flower-superlink", *link_security, "--disable-runtime-dependency-installation",
                        "--port", str(link_port))
            self._wait_for_port(link_port)
            for member in members or []:
                result = self.flwr("supernode", "register", str(credentials / f"{member}.pub"), "test", "--name", member, timeout=120)
                assert result.returncode == 0, f"registering {member}: {result.stdout}\n{self.log_tails()}"
            if self.sockets is not None:
                for path in sockets:
                    self._wait_for(path.exists, f"the site worker on {path}", seconds=180)
            for index, (port, node_config, security) in enumerate(zip(node_ports, node_configs, node_security), 1):
                self._start(f"supernode{index}", "flower-supernode", *security, "--superlink", f"127.0.0.1:{link_port}",
                            "--port", str(port), "--node-config", node_config)
        except BaseException:
            self.close()
            raise

    def flwr(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this federation."""
        process = subprocess.Popen([str(BIN / "flwr"), *args], env=self.env, cwd=self.folder, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_tree([process.pid])
            output, _ = process.communicate()
            raise AssertionError(f"flwr {' '.join(args)} ran over {timeout} s:\n{output[-4000:]}\n{self.log_tails()}") from None
        return subprocess.CompletedProcess(process.args, process.returncode, output)

    def submit(self, app: Path, run_config: str) -> None:
        """Start a run of ``app`` without waiting for it."""
        result = self.flwr("run", str(app), "test", "--run-config", run_config, "--format", "json", timeout=120)
        assert result.returncode == 0 and json.loads(result.stdout[result.stdout.index("{"):])["success"], (
            f"{result.stdout}\n{self.log_tails()}"
        )

    def kill_server_app(self) -> None:
        """SIGKILL the running ServerApp process: a crash."""
        link = self.processes["superlink"].pid
        (pid,) = [p for p in descendants([link]) if "flwr-serverapp" in _command_line(p)]
        os.kill(pid, signal.SIGKILL)

    def log_tails(self, characters: int = 3000) -> str:
        """The end of every process's log, for failure messages."""
        logs = sorted(self.logs.glob("*.log"))
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-characters:]}" for path in logs)

    def close(self) -> None:
        """Kill every process started here and their descendants; fail if any stays alive."""
        self._kill_tree([process.pid for process in self.processes.values()])
        for process in self.processes.values():
            process.wait(timeout=30)
        if self.sockets is not None:
            shutil.rmtree(self.sockets, ignore_errors=True)
        deadline = time.monotonic() + 30  # a killed process takes a moment to go
        while left := [pid for pid, (_, group) in _processes().items() if group in self._groups]:
            assert time.monotonic() < deadline, f"processes left alive: {[(pid, _command_line(pid)) for pid in left]}"
            time.sleep(0.1)

    # -- helpers ------------------------------------------------------------------------------

    def restart(self, name: str) -> None:
        """SIGKILL the process ``name`` (``supernode2``, ...) and its children, and start it
        again as it was started (a hospital's machine that crashed and came back)."""
        self._kill_tree([self.processes[name].pid])
        self.processes[name].wait(timeout=30)
        self._start(name, *self._commands[name])

    def _start(self, name: str, program: str, *args: str) -> None:
        self._commands[name] = (program, *args)
        with open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen([str(BIN / program), *args], env=self.env, cwd=self.folder,
                                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_for_port(self, port: int, seconds: float = 60) -> None:
        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        self._wait_for(listening, f"the SuperLink on port {port}", seconds)

    def _wait_for(self, ready, what: str, seconds: float) -> None:
        """Wait until ``ready()`` is true; fail with the logs after ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} was not ready within {seconds} s\n{self.log_tails()}")

    def _kill_tree(self, roots: list[int]) -> None:
        """SIGKILL ``roots``, their descendants and their process groups (so that a child
        started meanwhile goes too); Flower's helpers start sessions of their own."""
        processes = _processes()
        pids = roots + descendants(roots)
        groups = {processes[pid][1] for pid in pids if pid in processes} - {os.getpgrp()}
        self._groups |= groups
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass


APP = Path(__file__).resolve().parent.parent / "flower-app"


def simulated_and_deployed(folder: Path, config: Path, sites: int = 2):
    """Run ``config`` simulated (in ``folder/simulated``, on one thread as the sites'
    processes: the same arithmetic, bit for bit) and on a local federation of ``sites``
    SuperNodes (hospital i serves task i, its files in ``folder/hospital<i>``; the server's
    run in ``folder/server``); checks that every row of the site matrices is the same (the
    sites tested the same models, bit for bit) and returns the two ``ExperimentRun``s
    (simulated, deployed)."""
    import torch

    from siteflow.config import load_config
    from siteflow.datasets.pooling import build_dataset
    from siteflow.engine.runner import ExperimentRun

    loaded = load_config(config)
    build_dataset(loaded.sites[0], "test")  # writes the synthetic sites, once
    simulated = ExperimentRun(loaded, folder / "simulated")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        simulated.execute()
    finally:
        torch.set_num_threads(threads)
    nodes = [f'task-id={i} exps-root="{folder / f"hospital{i}"}"' for i in range(1, sites + 1)]
    local = LocalFederation(folder, nodes)
    try:
        run_config = f"config='{config}' note='t' exps-root='{folder / 'server'}' wait-for-sites=120"
        result = local.flwr("run", str(APP), "test", "--run-config", run_config, "--stream", timeout=400)
        assert result.returncode == 0, f"{result.stdout[-4000:]}\n{local.log_tails()}"
    finally:
        local.close()
    deployed = ExperimentRun(load_config(config), folder / "server" / loaded.strategy.name / "t")
    tested = {row.stage: row.values for row in simulated.folder.results}
    assert {row.stage: row.values for row in deployed.folder.results} == tested, "the sites tested other models than the simulation"
    return simulated, deployed


def make_credentials(folder: Path, keys: list[str]) -> Path:
    """Write into ``folder`` what a consortium with SuperNode authentication holds: a CA
    (``ca.crt``), the SuperLink's TLS certificate for 127.0.0.1 signed by it (``server.pem``,
    ``server.key``), and per name of ``keys`` a P-384 key pair in OpenSSH format (``<name>``,
    ``<name>.pub``), as ``ssh-keygen -t ecdsa -b 384`` writes them; returns ``folder``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, key, issuer: str, signer, extension, critical: bool):
        name = lambda text: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])  # noqa: E731
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=2)).add_extension(extension, critical=critical)
                .sign(signer, hashes.SHA256()))

    authority = ec.generate_private_key(ec.SECP384R1())
    ca = certificate("test consortium CA", authority, "test consortium CA", authority, x509.BasicConstraints(ca=True, path_length=None), True)
    server = ec.generate_private_key(ec.SECP384R1())
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(certificate("127.0.0.1", server, "test consortium CA", authority, names, False).public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(server.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for name in keys:
        key = ec.generate_private_key(ec.SECP384R1())
        (folder / name).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        (folder / f"{name}.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return folder
