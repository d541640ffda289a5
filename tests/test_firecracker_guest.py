"""The Firecracker guest: its listener driven byte for byte per docs/backends/firecracker-guest.md
(over a Unix socket, where the bytes from RUN on are the same as over vsock), its init run as
PID 1 of a PID namespace, and the image scripts/build-firecracker-guest.sh makes."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml

from tests.firecracker_guest_fixture import FirecrackerGuestImage
from tests.helpers import namespaces_missing, wait_for

ROOT = Path(__file__).resolve().parent.parent
GUEST = ROOT / "guest" / "firecracker"
GUEST_PATH = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- the bytes ---------------------------------------------------------------------------


def request(*args: bytes) -> bytes:
    return b"RUN %d\n" % len(args) + b"".join(b"%d\n" % len(arg) + arg for arg in args)


@dataclass(frozen=True)
class Response:
    output: bytes
    frames: list[int]  # each OUT frame's size, in order
    status: int


def parse(raw: bytes) -> Response:
    """OUT frames then one EXIT line, nothing after; fails on anything else."""
    at, output, frames = 0, bytearray(), []
    while raw.startswith(b"OUT ", at):
        end = raw.index(b"\n", at)
        size = raw[at + 4 : end]
        assert re.fullmatch(rb"[1-9][0-9]*", size), f"bad OUT header {raw[at:end]!r}"
        n = int(size)
        assert end + 1 + n <= len(raw), f"OUT {n} frame cut short"
        output += raw[end + 1 : end + 1 + n]
        frames.append(n)
        at = end + 1 + n
    tail = re.fullmatch(rb"EXIT (0|[1-9][0-9]*)\n", raw[at:])
    assert tail, f"expected EXIT <status>\\n at byte {at}, got {raw[at : at + 100]!r}"
    return Response(bytes(output), frames, int(tail.group(1)))


def connect(path: Path, timeout: float = 30) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:  # closed with bytes of ours unread: as final as EOF
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(path: Path, data: bytes, half_close: bool = False) -> bytes:
    """Everything the listener writes back to `data`, up to its close."""
    with connect(path) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def run(path: Path, *args: bytes) -> Response:
    return parse(exchange(path, request(*args)))


# --- processes ---------------------------------------------------------------------------


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of each child of `pid`, zombies included."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(stat.parent.name), fields[0]))
    return found


def with_cmdline(marker: bytes) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def nspid(pid: int) -> list[str]:
    """The pid of `pid` in each PID namespace it is in, outermost first ([] once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    return status.split("NSpid:")[1].split("\n")[0].split()


def read_line(stream: int, timeout: float) -> bytes:
    """One line from the pipe `stream`, waiting at most `timeout` for it."""
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], timeout)
        assert ready, f"no line within {timeout}s (so far {line!r})"
        byte = os.read(stream, 1)
        assert byte, f"end of output before a line (so far {line!r})"
        line += byte
    return line


def read_elf(data: bytes) -> tuple[int, int, int, set[int]]:
    """(class, e_type, e_machine, program header types) of a little-endian ELF64."""
    assert data[:4] == b"\x7fELF", f"not an ELF: {data[:16]!r}"
    assert data[4:6] == b"\x02\x01", "not a little-endian ELF64"
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    types = {struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)}
    return data[4], e_type, e_machine, types


ET_REL, ET_EXEC, EM_X86_64, PT_INTERP = 1, 2, 62, 3


def is_static_executable(data: bytes) -> bool:
    _, e_type, e_machine, segments = read_elf(data)
    return e_type == ET_EXEC and e_machine == EM_X86_64 and PT_INTERP not in segments


# --- the listener ------------------------------------------------------------------------


def compile_listener(target: Path) -> None:
    if not shutil.which("gcc"):
        pytest.skip("gcc is missing (scripts/test.sh installs it)")
    built = subprocess.run(
        [
            "gcc",
            "-static",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(target),
            str(GUEST / "listener.c"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"the listener does not compile:\n{built.stderr}")


@pytest.fixture(scope="session")
def listener_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("listener") / "sandbox-guest"
    compile_listener(binary)
    return binary


@dataclass
class Listener:
    path: Path
    process: subprocess.Popen[bytes]


def start_listener(binary: Path, path: Path) -> Listener:
    process = subprocess.Popen(
        [str(binary), "--unix", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    line = read_line(process.stderr.fileno(), 10)
    assert line == f"sandbox-guest: listening on {path}\n".encode()
    return Listener(path, process)


def stop_listener(listener: Listener) -> None:
    """Stops it after checking that it still runs and that every connection's child is
    gone, zombies included."""
    pid = listener.process.pid
    try:
        wait_for(lambda: not children(pid), 10, "the listener's children to be reaped")
        assert listener.process.poll() is None, "the listener itself has exited"
    finally:
        listener.process.kill()
        listener.process.wait()
        assert listener.process.stderr is not None
        listener.process.stderr.close()


@pytest.fixture
def listener(listener_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    started = start_listener(listener_binary, tmp_path_factory.mktemp("sock") / "guest.sock")
    yield started
    stop_listener(started)


def test_the_contracts_example(listener: Listener) -> None:
    sent = request(b"sh", b"-c", b"echo hello; exit 3")
    assert sent == b"RUN 3\n2\nsh2\n-c18\necho hello; exit 3"
    assert exchange(listener.path, sent) == b"OUT 6\nhello\nEXIT 3\n"


def test_echo_hello(listener: Listener) -> None:
    assert exchange(listener.path, request(b"echo", b"hello")) == b"OUT 6\nhello\nEXIT 0\n"


def test_the_exit_code_is_the_status(listener: Listener) -> None:
    assert exchange(listener.path, request(b"sh", b"-c", b"exit 3")) == b"EXIT 3\n"
    assert exchange(listener.path, request(b"false")) == b"EXIT 1\n"


@pytest.mark.parametrize(("signal_name", "status"), [("TERM", 143), ("KILL", 137)])
def test_killed_by_a_signal_is_128_plus_it(
    listener: Listener, signal_name: str, status: int
) -> None:
    sent = request(b"sh", b"-c", b"kill -%s $$" % signal_name.encode())
    assert exchange(listener.path, sent) == b"EXIT %d\n" % status


def test_a_command_that_cannot_run_is_127_with_the_reason(
    listener: Listener, tmp_path: Path
) -> None:
    reason = b"sandbox-guest: cannot run nosuch: No such file or directory\n"
    assert exchange(listener.path, request(b"nosuch")) == b"OUT %d\n%sEXIT 127\n" % (
        len(reason),
        reason,
    )
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    got = run(listener.path, str(not_executable).encode())
    assert (got.output, got.status) == (
        b"sandbox-guest: cannot run %s: Permission denied\n" % str(not_executable).encode(),
        127,
    )
    got = run(listener.path, b"echo", b"a\0b")  # exec cannot pass it
    assert (got.output, got.status) == (
        b"sandbox-guest: cannot run echo: argument 2 has a NUL byte\n",
        127,
    )


def test_stdout_and_stderr_keep_their_order(listener: Listener) -> None:
    got = run(listener.path, b"sh", b"-c", b"echo 1; echo 2 >&2; echo 3; echo 4 >&2; echo 5")
    assert (got.output, got.status) == (b"1\n2\n3\n4\n5\n", 0)


def test_it_runs_in_root_with_the_guest_path_and_no_input(listener: Listener) -> None:
    got = run(listener.path, b"sh", b"-c", b'pwd; echo "$PATH"; cat; echo end')
    assert got.output == b"/\n" + GUEST_PATH + b"\nend\n"


def test_arguments_are_bytes_as_sent(listener: Listener) -> None:
    args = [
        b"",
        b"with space",
        b"new\nline",
        b"quotes '\" $HOME `x` \\",
        b"\xff\xfe not utf-8",
        b"-",
    ]
    got = run(listener.path, b"sh", b"-c", b'for a; do printf "%s\\0" "$a"; done', b"sh", *args)
    assert got.output == b"".join(arg + b"\0" for arg in args)


def test_at_the_bounds_256_arguments_and_one_of_65536_bytes(listener: Listener) -> None:
    args = [b"x" * 65536, *(b"%d" % i for i in range(251))]
    sent = request(b"sh", b"-c", b'for a; do printf "%s\\n" "$a"; done', b"sh", *args)
    assert sent.startswith(b"RUN 256\n")
    got = parse(exchange(listener.path, sent))
    assert (got.output, got.status) == (b"".join(arg + b"\n" for arg in args), 0)


def test_large_output_comes_whole_in_many_frames(listener: Listener, tmp_path: Path) -> None:
    data = os.urandom(6 * 1024 * 1024 + 17)
    (tmp_path / "data").write_bytes(data)
    got = run(listener.path, b"cat", str(tmp_path / "data").encode())
    assert got.status == 0
    assert len(got.output) == len(data)
    assert got.output == data
    assert len(got.frames) > 1


def test_output_is_streamed_as_it_comes(listener: Listener, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    with connect(listener.path) as sock:
        sock.sendall(request(b"sh", b"-c", b'echo first; cat "$0"; echo last', str(gate).encode()))
        first = b""
        while len(first) < len(b"OUT 6\nfirst\n"):
            first += sock.recv(100)
        assert first == b"OUT 6\nfirst\n"  # while the command still waits on the gate
        with open(gate, "wb") as opened:
            opened.write(b"second\n")
        got = parse(first + read_all(sock))
    assert (got.output, got.status) == (b"first\nsecond\nlast\n", 0)


@pytest.mark.parametrize(
    ("sent", "why"),
    [
        pytest.param(b"HELLO 1\n", b"header", id="not RUN"),
        pytest.param(b"run 1\n2\nls", b"header", id="lower case"),
        pytest.param(b"RUN \n", b"argc", id="no number"),
        pytest.param(b"RUN -1\n", b"argc", id="negative"),
        pytest.param(b"RUN 1\r\n2\nls", b"argc", id="CRLF"),
        pytest.param(b"RUN 0\n", b"argc", id="argc 0"),
        pytest.param(b"RUN 257\n", b"argc over 256", id="argc over 256"),
        pytest.param(b"RUN 99999999999999999999999\n", b"argc over 256", id="argc overflowing"),
        pytest.param(b"RUN 1\n65537\n", b"length over 65536", id="length over 65536"),
        pytest.param(b"RUN 1\n1x\nl", b"length", id="length not a number"),
        pytest.param(b"RUN 1\n\n", b"length", id="empty length"),
    ],
)
def test_a_malformed_request_gets_err_and_a_close(
    listener: Listener, sent: bytes, why: bytes
) -> None:
    answer = exchange(listener.path, sent)
    assert re.fullmatch(rb"ERR [^\n]+\n", answer), answer
    assert why in answer


@pytest.mark.parametrize(
    "sent",
    [b"R", b"RUN 1", b"RUN 1\n", b"RUN 1\n5", b"RUN 1\n5\nab", b"RUN 2\n2\nsh", b"RUN 2\n2\nsh2\n"],
)
def test_end_of_file_inside_a_request_gets_err(listener: Listener, sent: bytes) -> None:
    assert exchange(listener.path, sent, half_close=True) == b"ERR end of file inside the request\n"


def test_end_of_file_before_a_request_is_closed_without_a_word(listener: Listener) -> None:
    assert exchange(listener.path, b"", half_close=True) == b""
    with connect(listener.path):  # the exporter's readiness check: connect, close
        pass
    assert run(listener.path, b"echo", b"still here").output == b"still here\n"


def test_connections_are_served_at_once(listener: Listener, tmp_path: Path) -> None:
    """Each command waits on its own FIFO; all are running before any is let go, in reverse."""
    gates = [tmp_path / f"gate{i}" for i in range(6)]
    socks = []
    try:
        for i, gate in enumerate(gates):
            os.mkfifo(gate)
            sock = connect(listener.path)
            socks.append(sock)
            sock.sendall(
                request(b"sh", b"-c", b'cat "$0"; echo "$1"', str(gate).encode(), b"%d" % i)
            )

        def reader_on(gate: Path) -> int | None:
            try:  # a FIFO opens for writing without blocking only once its reader is there
                return os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return None

        writers = [
            wait_for(partial(reader_on, gate), 10, f"a reader on {gate.name}") for gate in gates
        ]
        for i in reversed(range(len(gates))):
            os.write(writers[i], b"go %d\n" % i)
            os.close(writers[i])
            got = parse(read_all(socks[i]))
            assert (got.output, got.status) == (b"go %d\n%d\n" % (i, i), 0)
    finally:
        for sock in socks:
            sock.close()


def test_no_child_is_left_behind(listener: Listener) -> None:
    for i in range(20):
        assert run(listener.path, b"echo", b"%d" % i).output == b"%d\n" % i
    exchange(listener.path, b"RUN 0\n")
    exchange(listener.path, b"", half_close=True)
    wait_for(lambda: not children(listener.process.pid), 10, "the listener's children to be reaped")


def test_a_lost_connection_ends_the_command(listener: Listener) -> None:
    marker = f"fc-guest-{uuid.uuid4()}".encode()
    with connect(listener.path) as sock:
        # `yes` fills the connection; the `sh` beside it only waits, in the same process group
        script = b'sh -c "sleep 1000; true" "$0" & exec yes "$0"'
        sock.sendall(request(b"sh", b"-c", script, marker))
        assert sock.recv(4).startswith(b"OUT")
        wait_for(lambda: len(with_cmdline(marker)) == 2, 10, "both commands to run")
    wait_for(lambda: not with_cmdline(marker), 10, "the command of a closed connection to end")


# --- the init ----------------------------------------------------------------------------

# Inside the new mount and PID namespaces: a read-only /proc (so that the init's write to
# kernel.ctrl-alt-del, a setting of the whole machine, fails here), a kernel command line
# of our own, then the init as PID 1 of the namespace.
INIT_WRAPPER = 'mount -t proc -o ro proc "$1/proc" && mount --bind "$2" "$1/proc/cmdline" && exec chroot "$1" /sbin/init'


@pytest.mark.namespace
def test_the_init_mounts_starts_the_listener_and_reboots_on_ctrl_alt_del(tmp_path: Path) -> None:
    """SIGINT is what Linux sends PID 1 on Ctrl-Alt-Del (kernel.ctrl-alt-del=0); `reboot -f`
    in a PID namespace ends its init with SIGHUP (in a VM, with reboot=k, the VMM exits)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, chroot)")
    if why := namespaces_missing():
        pytest.skip(why)
    busybox = Path("/bin/busybox")
    if not busybox.exists() or not is_static_executable(busybox.read_bytes()):
        pytest.skip("needs Debian's busybox-static at /bin/busybox (scripts/test.sh installs it)")
    root = tmp_path / "root"
    for directory in ("bin", "sbin", "usr/local/bin", "proc", "sys", "dev", "tmp", "run"):
        (root / directory).mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    shutil.copy(GUEST / "init", root / "sbin" / "init")
    stub = root / "usr" / "local" / "bin" / "sandbox-guest"  # no vsock listener on this machine
    stub.write_text(  # and leaves an orphan, for the init to reap
        '#!/bin/sh\nsh -c \'true & echo "orphan $!"\'\necho "sandbox-guest $*"\nsleep 600\n'
    )
    stub.chmod(0o755)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 reboot=k panic=1 sandbox_guest.port=1234 quiet\n")

    process = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            INIT_WRAPPER,
            "sh",
            str(root),
            str(cmdline),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    init = 0
    try:
        lines: list[bytes] = []
        while not lines or lines[-1] != b"sandbox-guest --port 1234\n":
            lines.append(read_line(process.stdout.fileno(), 10))
        assert any(b"ctrl-alt-del" in line for line in lines), lines  # it tried to set it to 0
        [orphan] = [line.split()[1].decode() for line in lines if line.startswith(b"orphan ")]

        [(init, _)] = wait_for(lambda: children(process.pid), 10, "the namespace's init")
        assert nspid(init)[1:] == ["1"], f"not PID 1 of a PID namespace: {nspid(init)}"
        mounts = {
            tuple(line.split()[1:3])
            for line in Path(f"/proc/{init}/mounts").read_text().splitlines()
        }
        for mount in [
            ("/proc", "proc"),
            ("/sys", "sysfs"),
            ("/dev", "devtmpfs"),
            ("/tmp", "tmpfs"),
            ("/run", "tmpfs"),
        ]:
            assert mount in mounts, sorted(mounts)

        wait_for(
            lambda: not [pid for pid, _ in children(init) if nspid(pid)[1:] == [orphan]],
            10,
            "the init to reap the orphan",
        )

        os.kill(init, signal.SIGINT)
        assert process.wait(timeout=10) == -signal.SIGHUP  # unshare dies as its child did
    finally:
        if process.poll() is None:
            if init:
                os.kill(init, signal.SIGKILL)  # and with it the whole namespace
            process.kill()
            process.wait()
        process.stdout.close()


# --- the image ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CpioEntry:
    mode: int
    data: bytes
    rdev: tuple[int, int]


def read_newc(data: bytes) -> dict[str, CpioEntry]:
    entries: dict[str, CpioEntry] = {}
    at = 0
    while True:
        assert data[at : at + 6] == b"070701", f"no newc header at {at}"
        fields = [int(data[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name = data[at + 110 : at + 110 + namesize - 1].decode()
        at = (at + 110 + namesize + 3) & ~3
        content = data[at : at + size]
        at = (at + size + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name.removeprefix(".").removeprefix("/")] = CpioEntry(mode, content, rdev)


# What Debian 12's kernel has as modules, each after what it needs
BOOKWORM_MODULES = [
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "crc32c_generic",
    "crc16",
    "mbcache",
    "jbd2",
    "ext4",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
]
LOADED_AFTER = {
    "virtio_mmio": ["virtio", "virtio_ring"],
    "virtio_blk": ["virtio", "virtio_ring"],
    "ext4": ["jbd2", "mbcache", "crc16", "crc32c_generic"],
    "vmw_vsock_virtio_transport_common": ["vsock"],
    "vmw_vsock_virtio_transport": ["vmw_vsock_virtio_transport_common", "vsock", "virtio"],
}


def test_the_kernel_is_an_elf64_x86_64_executable(
    firecracker_guest_image: FirecrackerGuestImage,
) -> None:
    with open(firecracker_guest_image.kernel, "rb") as kernel:
        head = kernel.read(1 << 16)
    elf_class, e_type, e_machine, _ = read_elf(head)
    assert (elf_class, e_type, e_machine) == (2, ET_EXEC, EM_X86_64)


def test_the_initramfs_has_its_init_busybox_and_the_modules_in_order(
    firecracker_guest_image: FirecrackerGuestImage,
) -> None:
    entries = read_newc(firecracker_guest_image.initrd.read_bytes())
    init = entries["init"]
    assert init.data == (GUEST / "initramfs-init").read_bytes()
    assert init.mode & 0o100111 == 0o100111
    assert is_static_executable(entries["bin/busybox"].data)
    for applet in (
        "bin/sh",
        "sbin/insmod",
        "sbin/switch_root",
        "bin/mount",
        "sbin/reboot",
        "bin/usleep",
    ):
        assert entries[applet].data == b"/bin/busybox", applet  # a symbolic link's target
    assert entries["dev/console"].rdev == (5, 1)
    assert "newroot" in entries

    order = entries["modules/order"].data.decode().split()
    loaded = [name.removesuffix(".ko") for name in order]
    for name in order:
        assert read_elf(entries[f"modules/{name}"].data)[1] == ET_REL, f"{name} is not a plain .ko"
    assert set(BOOKWORM_MODULES) <= set(loaded), loaded
    for module, needs in LOADED_AFTER.items():
        for need in needs:
            assert loaded.index(need) < loaded.index(module), f"{need} after {module}: {loaded}"


def debugfs(image: Path, command: str) -> str:
    done = subprocess.run(
        ["debugfs", "-R", command, str(image)], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_the_rootfs_has_the_init_and_the_static_listener(
    firecracker_guest_image: FirecrackerGuestImage, tmp_path: Path
) -> None:
    if not shutil.which("debugfs"):
        pytest.skip("debugfs is missing (e2fsprogs; scripts/test.sh installs it)")
    rootfs = firecracker_guest_image.rootfs
    assert rootfs.stat().st_size <= 64 * 1024 * 1024
    for path in ("/sbin/init", "/usr/local/bin/sandbox-guest", "/bin/busybox"):
        stat = debugfs(rootfs, f"stat {path}")
        kind, mode = re.search(r"Type: (\w+)\s+Mode:\s+(\d+)", stat).groups()  # type: ignore[union-attr]
        assert (kind, int(mode, 8) & 0o111) == ("regular", 0o111), f"{path}: {stat[:200]}"
    assert '"/bin/busybox"' in debugfs(rootfs, "stat /bin/sh")
    assert "root:x:0:0:" in debugfs(rootfs, "cat /etc/passwd")
    for directory in ("/proc", "/sys", "/dev", "/tmp", "/run"):
        assert "Type: directory" in debugfs(rootfs, f"stat {directory}"), directory

    debugfs(rootfs, f"dump /sbin/init {tmp_path / 'init'}")
    assert (tmp_path / "init").read_bytes() == (GUEST / "init").read_bytes()
    listener = tmp_path / "sandbox-guest"
    debugfs(rootfs, f"dump /usr/local/bin/sandbox-guest {listener}")
    assert is_static_executable(listener.read_bytes())
    listener.chmod(0o755)
    started = start_listener(listener, tmp_path / "guest.sock")  # the very one, answering
    try:
        assert run(started.path, b"echo", b"from the rootfs").output == b"from the rootfs\n"
    finally:
        stop_listener(started)


def test_target_yaml_names_the_image(firecracker_guest_image: FirecrackerGuestImage) -> None:
    [target] = yaml.safe_load(firecracker_guest_image.target_yaml.read_text())
    assert (target["name"], target["backend"]) == ("firecracker", "firecracker")
    settings = target["firecracker"]
    assert Path(settings["kernel"]) == firecracker_guest_image.kernel
    assert Path(settings["initrd"]) == firecracker_guest_image.initrd
    assert Path(settings["rootfs"]) == firecracker_guest_image.rootfs
    assert Path(settings["binary"]).is_absolute()
    assert settings["guest_port"] == 52
