"""A real Docker engine for the tests: the one DOCKER_HOST names, else a private dockerd.

The private engine is started as root like this (Debian's docker.io, see
scripts/install-docker.sh):

    dockerd --host unix://RUN/docker.sock --data-root CACHE/data --exec-root RUN/exec
            --storage-driver overlay2 --bridge=none --iptables=false ...

RUN is a new temporary directory, removed at the end with everything mounted under it.
CACHE (/var/cache/genisys-test-docker) keeps the images between runs, so they are built
once per machine (scripts/build-test-images.sh). One run at a time uses the cache (a lock
file); a concurrent run gets a data root of its own and builds its images again.
No default bridge and no iptables rules: containers use host networking, or a network
created for them (a compose project's), and the host's firewall is left alone.
"""

import contextlib
import fcntl
import functools
import hashlib
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import docker.errors

from tests.support import ROOT, wait_until

CACHE = Path(os.environ.get("GENISYS_TEST_DOCKER_CACHE", "/var/cache/genisys-test-docker"))
GENISYS_IMAGE = "genisys:latest"


class NoEngine(Exception):
    """No engine answers and none can be started here; the message says why."""


class DockerEngine:
    """An engine that answers at `url`; started (and cleaned up) by us when `private`."""

    def __init__(self):
        self.private = False
        self.timings: dict[str, float] = {}
        self._images: dict[str, str] = {}
        self._process = None
        self._lock = None
        self.url = os.environ.get("DOCKER_HOST", "")
        if self.url:
            if not _answers(self.url):
                raise NoEngine(f"no Docker engine answers at DOCKER_HOST={self.url}")
        else:
            self._start_private()
        self.client = docker.DockerClient(base_url=self.url, timeout=120)

    def _start_private(self) -> None:
        if shutil.which("dockerd") is None:
            raise NoEngine("dockerd is not installed (scripts/install-docker.sh installs it)")
        if os.geteuid() != 0:
            raise NoEngine("a private dockerd needs root; set DOCKER_HOST to an engine")
        started = time.monotonic()
        self.private = True
        self.run_dir = Path(tempfile.mkdtemp(prefix="genisys-dockerd-"))
        self.url = f"unix://{self.run_dir}/docker.sock"
        data_root = self._cache_data_root() or self.run_dir / "data"
        self.log_path = self.run_dir / "dockerd.log"
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                ["dockerd", "--host", self.url, "--data-root", str(data_root),
                 "--exec-root", str(self.run_dir / "exec"),
                 "--pidfile", str(self.run_dir / "docker.pid"),
                 "--storage-driver", "overlay2", "--bridge=none", "--iptables=false",
                 "--ip-forward=false", "--ip-masq=false"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run is not sent to it
                # dockerd holds the cache's lock too: should this run be killed, the
                # next one does not share the data root with the dockerd left running
                pass_fds=(self._lock.fileno(),) if self._lock else ())
        try:
            wait_until(self._private_answers, timeout=60, what="the private dockerd")
        except BaseException:
            self.stop()
            raise
        self.timings["engine start"] = time.monotonic() - started

    def _cache_data_root(self) -> Path | None:
        """The shared data root when no other run holds it, else None."""
        try:
            CACHE.mkdir(parents=True, exist_ok=True)
            self._lock = open(CACHE / "lock", "w")
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return CACHE / "data"
        except OSError:
            if self._lock:
                self._lock.close()
                self._lock = None
            return None

    def _private_answers(self) -> bool:
        if self._process.poll() is not None:
            raise NoEngine(f"dockerd exited with {self._process.returncode}: "
                           f"{self.log_path.read_text(errors='replace')[-2000:]}")
        return _answers(self.url)

    def image(self, name: str) -> str:
        """The tag of a test image (busybox, consul, base, nginx), built when missing."""
        if name not in self._images:
            result = subprocess.run(
                [str(ROOT / "scripts" / "build-test-images.sh"), name],
                env={**os.environ, "DOCKER_HOST": self.url}, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"building the test image {name} failed:\n{result.stderr}")
            _, tag, seconds = result.stdout.split()
            self.timings[f"image {name}"] = float(seconds)
            self._images[name] = tag
        return self._images[name]

    def containers(self, label: str, running_only: bool = False) -> list:
        """The containers with `label` ("key=value"), fully inspected."""
        while True:
            try:
                return self.client.containers.list(all=not running_only,
                                                   filters={"label": label})
            except docker.errors.NotFound:
                continue  # one was removed between the listing and its inspection

    def genisys_image(self) -> str:
        """Build Dockerfile on the local Debian base, its requirements from a wheelhouse."""
        if "genisys" not in self._images:
            base = self.image("base")
            started = time.monotonic()
            wheels = wheelhouse()
            self.timings["wheelhouse"] = time.monotonic() - started
            with serve_directory(wheels) as url:
                started = time.monotonic()
                self.client.images.build(path=str(ROOT), tag=GENISYS_IMAGE, rm=True,
                                         network_mode="host",
                                         buildargs=genisys_build_args(base, url))
            self.timings["image genisys"] = time.monotonic() - started
            self._images["genisys"] = GENISYS_IMAGE
        return self._images["genisys"]

    def stop(self) -> None:
        """Stop a private engine and leave nothing behind but the image cache."""
        if not self.private:
            return
        if self._process.poll() is None:
            if _answers(self.url):
                self._remove_everything()
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        _unmount_under(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._lock:
            self._lock.close()  # releases the cache

    def _remove_everything(self) -> None:
        # What a test left behind must not be in the cache for the next run.
        client = docker.DockerClient(base_url=self.url, timeout=120)
        for container in client.containers.list(all=True):
            container.remove(force=True, v=True)
        client.networks.prune()
        client.volumes.prune()
        client.images.prune(filters={"dangling": True})  # earlier builds of genisys:latest
        client.close()


def genisys_build_args(base: str, wheels_url: str) -> dict[str, str]:
    """Dockerfile's build arguments for a build without a registry or PyPI."""
    return {"BASE": base, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheels_url}


def wheelhouse() -> Path:
    """Wheels of requirements.txt, built on the host once per version of the file."""
    requirements = ROOT / "requirements.txt"
    directory = CACHE / "wheels" / hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "wheels" / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits for the same wheels
        if not (directory / "complete").exists():
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet",
                            "--disable-pip-version-check", "-r", str(requirements),
                            "-w", str(directory)], check=True)
            (directory / "complete").touch()
    return directory


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path):
    """Serve `directory` over HTTP on loopback (pip's --find-links reads its listing)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _answers(url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=5)
        try:
            return client.ping()
        finally:
            client.close()
    except Exception:  # no socket, no engine, no permission: all mean "does not answer"
        return False


def _unmount_under(directory: Path) -> None:
    """Unmount what the engine left mounted under `directory` (the netns nsfs mounts)."""
    prefix = str(directory) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)
