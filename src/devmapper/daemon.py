"""devmapperd: the engine daemon, the kernel's place for programs that use the engine.

It owns one :class:`Engine` and answers the v4 command buffers on a Unix socket (framing in
control/socket.py), as the kernel answers them on /dev/mapper/control:

- root only: the socket is mode 0600 and every connection's SO_PEERCRED is checked; a caller
  whose uid is not 0 gets EACCES for every command (the kernel's CAP_SYS_ADMIN check).
- one thread per connection, so a slow or stuck client (half-sent frame, DEV_WAIT) holds up
  nobody else; a DEV_WAIT is cancelled when its client closes the connection.
- anything malformed gets an errno reply; an exception escaping the engine is logged and
  answered EINVAL, never allowed to take the daemon down.
- DEV_ARM_POLL: each connection has its own control session; its eventfd is handed to the
  client over SCM_RIGHTS on request (CMD_EVENT_FD), so poll() works as on the kernel's node.

``devmapperd --foreground`` is for systemd (packaging/devmapperd.service, Type=notify);
without it the daemon double-forks and the first process exits once the socket is listening,
printing the daemon's pid. SIGTERM stops accepting, cancels waits, closes sessions, runs the
shutdown hooks and removes every device.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import logging
import logging.handlers
import os
import select
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING

from devmapper.control.socket import (
    CMD_EVENT_FD,
    MAX_FRAME,
    REPLY,
    REQ,
    default_socket_path,
    needed_length,
    recv_into_exact,
    send_parts,
)
from devmapper.engine.core import ControlSession, Engine
from devmapper.uapi import Cmd

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.engine.core import Exposure

log = logging.getLogger("devmapper.daemon")

EXIT_RUNNING = 3  # another daemon already serves this socket
PR_SET_IO_FLUSHER = 57
_PEERCRED = struct.Struct("=3i")  # struct ucred: pid, uid, gid
_SMALL = 1 << 20
_JOIN_TIMEOUT = 5.0


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"already running (pid {pid})" if pid else "already running")
        self.pid = pid


class ConnectionSession(ControlSession):
    """The control session of one connection; ``cancelled`` is set when the peer hangs up.

    ControlSession itself orders notify, arm and close under one lock, so an event raised
    in another thread never writes to a closed (or reused) eventfd.
    """

    def __init__(self, engine: Engine) -> None:
        self.cancelled = threading.Event()
        super().__init__(engine)

    def close(self) -> None:
        self.cancelled.set()
        super().close()


class HangupMonitor:
    """One thread that cancels a connection's DEV_WAIT when its peer closes the socket.

    Only a full close (EPOLLHUP) counts: a client that half-closes after sending its request
    still gets the answer.
    """

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._lock = threading.Lock()
        self._watched: dict[int, ConnectionSession] = {}
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._ep.register(self._wake, select.EPOLLIN)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="hangup-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, sock: socket.socket, session: ConnectionSession) -> None:
        fd = sock.fileno()
        with self._lock:
            self._watched[fd] = session
            self._ep.register(fd, select.EPOLLHUP)

    def unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        with self._lock:
            if self._watched.pop(fd, None) is not None:
                with contextlib.suppress(OSError):
                    self._ep.unregister(fd)

    def _run(self) -> None:
        while not self._stop:
            try:
                events = self._ep.poll()
            except OSError as e:
                log.error("hang-up monitor: %s", e)
                return
            for fd, _ in events:
                if fd == self._wake:
                    continue
                with self._lock:
                    # The event may predate an unwatch, and the fd a new connection: re-check.
                    session = self._watched.get(fd)
                    if session is None or not _hung_up(fd):
                        continue
                    del self._watched[fd]
                    self._ep.unregister(fd)
                session.cancelled.set()

    def stop(self) -> None:
        self._stop = True
        os.eventfd_write(self._wake, 1)
        self._thread.join(_JOIN_TIMEOUT)
        self._ep.close()
        os.close(self._wake)


def _hung_up(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLHUP)
    return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in p.poll(0))


class Daemon:
    """The socket server around one engine."""

    def __init__(self, socket_path: str, pidfile: str | None = None,
                 engine: Engine | None = None, exposure: Exposure | None = None) -> None:
        self.socket_path = socket_path
        self.pidfile = pidfile
        self.engine = engine if engine is not None else Engine(exposure=exposure)
        #: Called (newest first) by on_shutdown before devices are removed.
        self.shutdown_hooks: list[Callable[[Daemon], None]] = []
        self._listener: socket.socket | None = None
        self._socket_ino = 0
        self._pid_fd = -1
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, ConnectionSession] = {}
        self._threads: set[threading.Thread] = set()
        self._monitor = HangupMonitor()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    # ---- start
    def start(self) -> None:
        """Take the pidfile lock, bind and listen. Raises AlreadyRunning or OSError."""
        os.makedirs(os.path.dirname(self.socket_path) or ".", 0o755, exist_ok=True)
        if self.pidfile:
            os.makedirs(os.path.dirname(self.pidfile) or ".", 0o755, exist_ok=True)
            self._pid_fd = _lock_pidfile(self.pidfile)
        try:
            self._listener = self._bind()
            if self._pid_fd >= 0:
                os.ftruncate(self._pid_fd, 0)
                os.pwrite(self._pid_fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            self._release_pidfile()
            raise
        if os.geteuid() != 0:
            log.warning("not running as root: every caller that is not root gets EACCES")
        self._monitor.start()
        log.info("engine %d.%d.%d listening on %s", *self.engine.version, self.socket_path)

    def _bind(self) -> socket.socket:
        path = self.socket_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # left by a daemon that died: nobody listens
            else:
                raise AlreadyRunning(None)
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # born 0600: no window in which others could connect
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:  # another daemon bound it since we looked
                raise AlreadyRunning(None) from None
            raise
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._socket_ino = os.lstat(path).st_ino
        sock.listen(128)
        return sock

    # ---- serve
    def request_stop(self) -> None:
        """Safe from a signal handler or any thread."""
        self._stopping.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):  # full pipe: a wake-up is pending anyway
                os.write(self._wake_w, b"x")

    def serve_forever(self) -> None:
        assert self._listener is not None, "start() first"
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._listener and not self._stopping.is_set():
                        self._accept()
        finally:
            sel.close()
            self._shutdown()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:  # EMFILE and friends: back off instead of spinning
            log.error("accept: %s", e)
            time.sleep(0.1)
            return
        pid, uid, _gid = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        log.debug("connection from pid %d uid %d", pid, uid)
        session = ConnectionSession(self.engine)
        t = threading.Thread(target=self._serve_connection, args=(conn, session, uid == 0),
                             name=f"client-{pid}", daemon=True)
        with self._lock:
            self._conns[conn] = session
            self._threads.add(t)
        t.start()

    def _serve_connection(self, conn: socket.socket, session: ConnectionSession,
                          privileged: bool) -> None:
        try:
            while self._serve_one(conn, session, privileged):
                pass
        except OSError as e:  # the peer went away mid-frame or mid-reply
            log.debug("connection dropped: %s", e)
        except Exception:
            log.exception("connection handler failed")
        finally:
            session.close()
            with self._lock:
                self._conns.pop(conn, None)
                self._threads.discard(threading.current_thread())
            conn.close()

    def _serve_one(self, conn: socket.socket, session: ConnectionSession,
                   privileged: bool) -> bool:
        """One request and its reply. False when the connection is to be closed."""
        head = bytearray(REQ.size)
        got = conn.recv_into(head)
        if not got:
            return False
        if got < REQ.size:
            recv_into_exact(conn, memoryview(head)[got:])
        cmd, length = REQ.unpack(head)
        if length > MAX_FRAME:
            log.warning("frame of %d bytes (command %d) exceeds %d: closing", length, cmd,
                        MAX_FRAME)
            send_parts(conn, REPLY.pack(errno.EINVAL, 0))
            return False
        if not privileged:
            _discard(conn, length)
            send_parts(conn, REPLY.pack(errno.EACCES, 0))
            return True
        if cmd == CMD_EVENT_FD:
            _discard(conn, length)
            _send_with_fd(conn, REPLY.pack(0, 0), session.fileno())
            return True
        body = _recv_request(conn, length)
        err, reply = self._call(conn, cmd, body, session)
        send_parts(conn, REPLY.pack(err, len(reply)), reply)
        return True

    def _call(self, conn: socket.socket, cmd: int, body: bytearray,
              session: ConnectionSession) -> tuple[int, bytes]:
        wait = cmd == Cmd.DEV_WAIT  # the one command that blocks until someone else acts
        if wait:
            self._monitor.watch(conn, session)
        try:
            return self.engine.ioctl(cmd, body, session)
        except Exception:
            # An engine bug must not take the daemon down: the kernel would answer an errno.
            log.exception("internal error answering command %d on %d bytes: %s", cmd,
                          len(body), bytes(body[:512]).hex())
            return errno.EINVAL, b""
        finally:
            if wait:
                self._monitor.unwatch(conn)

    # ---- stop
    def _shutdown(self) -> None:
        log.info("shutting down")
        sd_notify("STOPPING=1")
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                if os.lstat(self.socket_path).st_ino == self._socket_ino:
                    os.unlink(self.socket_path)
        with self._lock:
            conns = list(self._conns.items())
            threads = list(self._threads)
        for conn, session in conns:
            session.cancelled.set()  # DEV_WAITs return EINTR
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # blocked reads and writes return
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.warning("%d connection(s) still busy at shutdown: %s", len(stuck),
                        ", ".join(stuck))
        self.on_shutdown()
        self._monitor.stop()
        # -1 first: a second SIGTERM now must not write to a closed (or reused) fd.
        wake_w, self._wake_w = self._wake_w, -1
        os.close(wake_w)
        os.close(self._wake_r)
        self._release_pidfile()
        log.info("stopped")

    def on_shutdown(self) -> None:
        """Release every device, as unloading dm-mod would find them all gone.

        The shutdown hooks run first, newest first: the exposure layer registers one that
        detaches loops, removes /dev/mapper nodes and unmounts its FUSE filesystem, so the
        devices are no longer open when they are removed.
        """
        for hook in reversed(self.shutdown_hooks):
            try:
                hook(self)
            except Exception:
                log.exception("shutdown hook %r failed", hook)
        before = len(self.engine.mapped_devices())
        try:
            self.engine.remove_all(False, False)
        except Exception:
            log.exception("removing devices at shutdown failed")
        left = self.engine.mapped_devices()
        if before:
            log.info("removed %d device(s) at shutdown", before - len(left))
        if left:
            log.warning("still open at shutdown, not removed: %s",
                        ", ".join(f"{md.name} (open count {md.open_count})" for md in left))

    def _release_pidfile(self) -> None:
        if self._pid_fd < 0:
            return
        assert self.pidfile is not None
        # Unlink while still holding the lock: the next daemon re-checks the inode it locked.
        with contextlib.suppress(OSError):
            if os.stat(self.pidfile).st_ino == os.fstat(self._pid_fd).st_ino:
                os.unlink(self.pidfile)
        os.close(self._pid_fd)
        self._pid_fd = -1


# ---------------------------------------------------------------- frame helpers


def _recv_request(conn: socket.socket, length: int) -> bytearray:
    """The part of a request the engine reads (data_size bytes); the rest is discarded."""
    prefix = bytearray(min(length, 16))
    recv_into_exact(conn, memoryview(prefix))
    keep = needed_length(bytes(prefix), length)
    if keep <= _SMALL:
        body = prefix + bytes(keep - len(prefix))
        recv_into_exact(conn, memoryview(body)[len(prefix):])
    else:
        # Grow as bytes arrive: a client that announces 1 GiB and stalls costs no 1 GiB.
        body = prefix
        while len(body) < keep:
            chunk = conn.recv(min(keep - len(body), _SMALL))
            if not chunk:
                raise ConnectionError("client closed the connection mid-frame")
            body += chunk
    _discard(conn, length - keep)
    return body


def _discard(conn: socket.socket, length: int) -> None:
    if not length:
        return
    scratch = memoryview(bytearray(min(length, _SMALL)))
    while length:
        got = conn.recv_into(scratch[:min(length, len(scratch))])
        if not got:
            raise ConnectionError("client closed the connection mid-frame")
        length -= got


def _send_with_fd(conn: socket.socket, data: bytes, fd: int) -> None:
    sent = conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  struct.pack("=i", fd))])
    if sent < len(data):
        conn.sendall(data[sent:])


def _lock_pidfile(path: str) -> int:
    """Open and flock the pidfile; AlreadyRunning if another daemon holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 32, 0)
            os.close(fd)
            raise AlreadyRunning(int(raw) if raw.strip().isdigit() else None)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # unlinked by a daemon that was exiting: lock the new file instead


# ---------------------------------------------------------------- process setup


def set_io_flusher() -> None:
    """PR_SET_IO_FLUSHER: reclaim must not wait on I/O through our own devices.

    Task flags are inherited by threads created later, so call this before starting any.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    if libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0:
        log.debug("marked as an I/O flusher (PR_SET_IO_FLUSHER)")
        return
    err = ctypes.get_errno()
    if err == errno.EINVAL:
        log.info("PR_SET_IO_FLUSHER is not supported by this kernel (5.6 or later needed)")
    else:
        log.warning("PR_SET_IO_FLUSHER failed: %s", os.strerror(err))


def sd_notify(state: str) -> None:
    """systemd's readiness protocol (Type=notify), without libsystemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), addr)
    except OSError as e:
        log.warning("sd_notify(%s): %s", state, e)


EXPOSE_ENV = "DEVMAPPER_EXPOSE"


def attach_exposure(daemon: Daemon, runtime_dir: str) -> None:
    """Serve every mapped device as a block device: a FUSE file, a loop device, a node.

    Started after the pidfile lock is ours, so only one daemon ever cleans up after a crash
    and mounts the FUSE filesystem.
    """
    from devmapper.expose.engine_hooks import EngineExposure
    from devmapper.expose.exposer import Exposer

    engine = daemon.engine
    # DEVMAPPER_FUSE=uring: FUSE over io_uring where the kernel offers it (BENCHMARKS.md).
    exposer = Exposer(os.path.join(runtime_dir, "fuse"), on_removed=engine.exposure_released,
                      fuse=os.environ.get("DEVMAPPER_FUSE", "raw"))
    report = exposer.start()
    if report.detached or report.deferred or report.removed_nodes or report.unmounted \
            or report.lazy_unmounted:
        log.info("cleaned up after a previous daemon: %s", report)
    engine.exposure = EngineExposure(exposer)
    daemon.shutdown_hooks.append(lambda _d: exposer.close())


def _detach() -> int:
    """Double fork. Returns, in the daemon, the pipe on which to report readiness.

    The original process waits on that pipe and exits 0 (printing the daemon's pid) once the
    socket listens, EXIT_RUNNING if another daemon serves it, 1 on any other failure.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
        os.waitpid(pid, 0)
        word, _, rest = b"".join(chunks).decode(errors="replace").strip().partition(" ")
        if word == "ready":
            print(rest, flush=True)
            os._exit(0)
        if word == "running":
            print(f"devmapperd: {rest}", file=sys.stderr, flush=True)
            os._exit(EXIT_RUNNING)
        print(f"devmapperd: {rest or 'daemon exited during startup'}", file=sys.stderr,
              flush=True)
        os._exit(1)
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return w


def _tell(fd: int, message: str) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.write(fd, message.encode() + b"\n")
        os.close(fd)


class _JournalFormatter(logging.Formatter):
    """stderr under systemd: "<N>" syslog priority prefixes the journal understands."""

    _PRIO = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIO.get(record.levelno, 6)}>{super().format(record)}"


def _setup_logging(foreground: bool, log_file: str | None, level: int,
                   runtime_dir: str) -> None:
    handler: logging.Handler
    fmt = "%(name)s: %(message)s"
    if log_file or not foreground:
        if log_file is None and os.path.exists("/dev/log"):
            handler = logging.handlers.SysLogHandler("/dev/log")
            fmt = "devmapperd[%(process)d]: %(name)s: %(message)s"
        else:
            handler = logging.handlers.WatchedFileHandler(
                log_file or os.path.join(runtime_dir, "devmapperd.log"))
            fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
    else:
        handler = logging.StreamHandler(sys.stderr)
        if os.environ.get("JOURNAL_STREAM"):
            handler.setFormatter(_JournalFormatter(fmt))
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s " + fmt))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="devmapperd",
                                description="device-mapper engine daemon")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground, log to stderr (for systemd)")
    p.add_argument("--socket", help="control socket (default: $DEVMAPPER_SOCKET or "
                                    "/run/devmapper/control.sock)")
    p.add_argument("--pidfile", help="pid file (default: devmapperd.pid beside the socket)")
    p.add_argument("--log-file", help="log here instead of stderr/syslog")
    p.add_argument("--no-expose", action="store_true",
                   help="no block devices (FUSE + loop), control commands only")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging (-v: debug)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    socket_path = os.path.abspath(args.socket or default_socket_path())
    runtime_dir = os.path.dirname(socket_path)
    pidfile = os.path.abspath(args.pidfile or os.path.join(runtime_dir, "devmapperd.pid"))
    ready = -1 if args.foreground else _detach()
    level = logging.DEBUG if args.verbose else logging.INFO
    try:
        os.makedirs(runtime_dir, 0o755, exist_ok=True)
        _setup_logging(args.foreground, args.log_file, level, runtime_dir)
    except OSError as e:
        _tell(ready, f"error {e}")
        print(f"devmapperd: {e}", file=sys.stderr)
        return 1
    set_io_flusher()  # before any thread exists
    daemon = Daemon(socket_path, pidfile)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.request_stop())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        daemon.start()
    except AlreadyRunning as e:
        log.error("%s: %s", socket_path, e)
        _tell(ready, f"running {e}")
        return EXIT_RUNNING
    except Exception as e:
        log.exception("cannot start")
        _tell(ready, f"error {e}")
        return 1
    if os.environ.get(EXPOSE_ENV, "1") != "0" and not args.no_expose:
        try:
            attach_exposure(daemon, runtime_dir)
        except Exception:
            log.exception("cannot serve block devices; control commands only")
    _tell(ready, f"ready {os.getpid()}")
    sd_notify(f"READY=1\nMAINPID={os.getpid()}")
    daemon.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
