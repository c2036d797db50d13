"""The performance figures of the app, measured against two bare Starlette apps.

    .venv/bin/python -m bench.run              # about 2 minutes
    .venv/bin/python -m bench.run --scale 0.3  # a quicker, rougher look

Starts, on loopback ports and under the same uvicorn settings (the Procfile's
`web:` flags, one worker; wrk comes from Debian's package, installed if missing):

- the app on a fresh SQLite database in a temporary directory, with 1,000 seeded
  users and production bcrypt cost (12), and a second copy with 100,000 users;
- `bare_hello.py`, a Starlette route answering "hello";
- `bare_jwt.py`, a Starlette route that only verifies the JWT cookie.

The servers are pinned to one core and the load (wrk, and this process) to
another, so "cores" below is the one core the server may use. It prints one
table and writes every number to `artifacts/benchmark.json` (git-ignored).
This is a tool, not a test: nothing fails on a slow figure.

What each figure means:

1. wrk, 16 connections, signed-in `GET /` (session and browser cookies,
   Accept-Encoding as a browser sends them) on the app and on the bare JWT app,
   in alternating rounds: requests/s and their ratio.
2. One e-mail change as the page's htmx form sends it (every input of
   `#partial-form`, the headers htmx 4 adds, Origin, cookies; not the
   User-Agent, Accept-Language or sec-* headers every browser adds on its own)
   over a warm keep-alive connection: the bytes the server sends back as on the
   wire (status line, headers, compressed body), and the HTTP round trips until
   the new address is shown (redirects and HX-Redirect / HX-Location /
   HX-Refresh are followed and counted). The request's bytes are printed beside
   them but not judged: most of them are the browser's own (cookies, htmx's
   headers; a real browser adds User-Agent and sec-* headers worth another
   kilobyte), so no server could bring request + response under 1,200 B.
3. A first visit as a guest: `GET /` with `Accept-Encoding: gzip, deflate, br`,
   then every same-origin stylesheet, script, icon and `<use href>` sprite it
   references (and `url()`s in the CSS), each once: response *body* bytes as
   served (compressed where the server compresses); header bytes beside them.
4. wrk at a light steady rate (2 connections, 10 ms between requests) on
   signed-in `GET /`: p99 alone, then p99 while 4 clients sign in non-stop (as
   distinct accounts), 3 rounds of each; the median round counts.
5. Then, without the probe, the storm's successful sign-ins/s against
   cores / (time of one bcrypt check at the same cost, measured in this process
   on the server's core before and after the storm: its CPU time, which is its
   wall time on an idle core). Any 401/429 is
   reported: throttling must not be what limits the rate.
6. Signed-in `GET /` requests/s and the median latency of one sign-in on the
   100,000-user copy against the 1,000-user one, in alternating rounds; the
   worse of the two ratios counts.
7. VmRSS of the app's worker process at the end.

Beside the table: the CPU time the server spent per request (steadier than
req/s when other processes share the machine) and how much of the server's core
other processes took; a run with more than 5% taken is called noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from sqlalchemy import create_engine, insert
from sqlmodel import SQLModel

import webapp.models  # noqa: F401  (registers the tables)
from webapp.domain.passwords import hash_password_sync as hash_password
from webapp.domain.passwords import verify_password_sync as verify_password
from webapp.migrate import upgrade_to_head
from webapp.settings import Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LUA = HERE / "wrk_report.lua"
DEFAULT_OUTPUT = REPO / "artifacts" / "benchmark.json"

BCRYPT_ROUNDS = 12
PASSWORD = "benchmark password 1234"
SMALL_USERS = 1_000
LARGE_USERS = 100_000
STORM_CLIENTS = 4
THROUGHPUT_CONNECTIONS = 16
PROBE_CONNECTIONS = 2
PROBE_DELAY_MS = 10
FORM_TYPE = "application/x-www-form-urlencoded"
# What a current browser advertises; the app may answer with any of them.
ACCEPT_ENCODING = "gzip, deflate, br"
# Above this share of the server's core taken by other processes, the run is called noisy.
NOISY = 0.05
DEFAULT_UVICORN_FLAGS = ["--no-proxy-headers", "--no-server-header"]
# Flags of the Procfile's uvicorn line that this tool sets itself or cannot use.
_DROPPED_FLAGS_WITH_VALUE = {"--host", "--port", "--workers", "--uds", "--fd", "--env-file"}
_DROPPED_FLAGS = {"--reload", "--factory"}
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")

TARGETS = {
    "get_home_ratio": 0.5,
    "email_change_bytes": 1200,
    "email_change_round_trips": 1,
    "first_visit_bytes": 47 * 1024,
    "storm_p99_ratio": 2.0,
    "signin_efficiency": 0.95,
    "scale_ratio": 0.95,
    # 80 MB until cryptography (8.4 MB) and ua-parser (2 MB) became run-time needs.
    "rss_bytes": 100_000_000,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def username(number: int) -> str:
    return f"bench{number:06d}"


# -- raw HTTP/1.1 over one socket, counting every byte ------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    raw_body: bytes
    head_bytes: int
    body_bytes: int

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def wire_bytes(self) -> int:
        return self.head_bytes + self.body_bytes

    def text(self) -> str:
        """The body decoded from its Content-Encoding (None if it cannot be decoded)."""
        encoding = (self.header("content-encoding") or "identity").strip().lower()
        body = self.raw_body
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-untyped]

            body = brotli.decompress(body)
        elif encoding not in ("identity", ""):
            raise ValueError(f"cannot decode Content-Encoding {encoding}")
        return body.decode("utf-8", errors="replace")


def _brotli_available() -> bool:
    return importlib.util.find_spec("brotli") is not None


class Connection:
    """One keep-alive connection that sends exactly the bytes it is given."""

    def __init__(self, port: int, *, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()

    def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> tuple[int, Reply]:
        """Send one request; return the bytes sent and the reply."""
        lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers)]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.sock.sendall(raw)
        return len(raw), self._read_reply(method)

    def _line(self) -> bytes:
        line = self.reader.readline(65537)
        if not line:
            raise ConnectionError("the server closed the connection")
        return line

    def _read_reply(self, method: str) -> Reply:
        status_line = self._line()
        head = len(status_line)
        status = int(status_line.split()[1])
        headers: list[tuple[str, str]] = []
        while True:
            line = self._line()
            head += len(line)
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        reply = Reply(status, headers, b"", head, 0)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return reply
        if (reply.header("transfer-encoding") or "").lower() == "chunked":
            chunks = bytearray()
            size = 0
            while True:
                line = self._line()
                size += len(line)
                length = int(line.split(b";")[0].strip(), 16)
                data = self.reader.read(length + 2)
                size += len(data)
                chunks += data[:length]
                if length == 0:
                    # Trailers end with an empty line; we send none, so usually just CRLF.
                    if data != b"\r\n":
                        size += len(self._line())
                    break
            reply.raw_body, reply.body_bytes = bytes(chunks), size
        elif (length_header := reply.header("content-length")) is not None:
            data = self.reader.read(int(length_header))
            reply.raw_body, reply.body_bytes = data, len(data)
        else:
            data = self.reader.read()
            reply.raw_body, reply.body_bytes = data, len(data)
        return reply


class Browser:
    """A cookie jar on one keep-alive connection; never follows anything by itself."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.origin = f"http://{self.host}"
        self.jar: dict[str, str] = {}
        self.conn = Connection(port)

    def close(self) -> None:
        self.conn.close()

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.jar.items())

    def send(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        accept_encoding: str | None = ACCEPT_ENCODING,
    ) -> tuple[int, Reply]:
        all_headers = [("Host", self.host)]
        if self.jar:
            all_headers.append(("Cookie", self.cookie_header()))
        if accept_encoding:
            all_headers.append(("Accept-Encoding", accept_encoding))
        all_headers += headers
        sent, reply = self.conn.request(method, target, all_headers, body)
        self.absorb(reply)
        return sent, reply

    def absorb(self, reply: Reply) -> None:
        for header in reply.all("set-cookie"):
            pair, *attributes = header.split(";")
            name, _, value = pair.strip().partition("=")
            expired = any(
                attribute.strip().lower() in ("max-age=0", 'max-age="0"')
                for attribute in attributes
            )
            if expired or not value:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value

    def get_page(self, target: str) -> tuple[Reply, str]:
        _sent, reply = self.send("GET", target, [("Accept", "text/html")])
        return reply, decoded_text(self, target, reply)

    def sign_in(self, name: str) -> None:
        """Sign in as a browser would, then load the home page once to use up the flash."""
        _reply, page = self.get_page("/login")
        token = csrf_of(page)
        body = urlencode({"csrf_token": token, "username": name, "password": PASSWORD})
        _sent, reply = self.send("POST", "/login", [("Content-Type", FORM_TYPE)], body.encode())
        if reply.status != 303 or "access_token" not in self.jar:
            raise RuntimeError(f"sign-in as {name} answered {reply.status}, not 303 with a cookie")
        home, _page = self.get_page("/")
        if home.status != 200:
            raise RuntimeError(f"signed-in GET / answered {home.status}")


def decoded_text(browser: Browser, target: str, reply: Reply) -> str:
    """The body as text; if it came brotli-compressed and brotli is missing, fetch it as gzip."""
    try:
        return reply.text()
    except (ImportError, ValueError):
        _sent, again = browser.send("GET", target, [("Accept", "*/*")], accept_encoding="gzip")
        return again.text()


def csrf_of(page: str) -> str:
    match = CSRF_META.search(page)
    if match is None:
        raise RuntimeError("no <meta name=csrf-token> on the page")
    return match.group(1)


@dataclass
class FormInput:
    name: str
    value: str
    kind: str


class PageParts(HTMLParser):
    """What a browser would fetch for a page, and the forms it would submit."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.resources: list[str] = []
        self.forms: dict[str, dict[str, str | None]] = {}
        self.inputs: dict[str, list[FormInput]] = {}
        self.tags_by_id: dict[str, str] = {}
        self._form: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        element_id = attributes.get("id")
        if element_id:
            self.tags_by_id[element_id] = tag
        rel = (attributes.get("rel") or "").lower().split()
        fetched_rel = {"stylesheet", "icon", "apple-touch-icon", "preload", "modulepreload"}
        if tag == "link" and fetched_rel & set(rel) and attributes.get("href"):
            self.resources.append(attributes["href"] or "")
        elif tag in ("script", "img") and attributes.get("src"):
            self.resources.append(attributes["src"] or "")
        elif tag == "use":
            href = attributes.get("href") or attributes.get("xlink:href")
            if href and not href.startswith("#"):
                self.resources.append(href)
        elif tag == "form":
            self._form = element_id or f"form{len(self.forms)}"
            self.forms[self._form] = attributes
            self.inputs[self._form] = []
        elif tag in ("input", "textarea", "select") and self._form and attributes.get("name"):
            kind = (attributes.get("type") or "text").lower()
            if kind not in ("submit", "button", "image", "reset", "file"):
                self.inputs[self._form].append(
                    FormInput(attributes["name"] or "", attributes.get("value") or "", kind)
                )

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def parse_page(page: str) -> PageParts:
    parts = PageParts()
    parts.feed(page)
    parts.close()
    return parts


# -- servers ------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def uvicorn_flags() -> tuple[list[str], str]:
    """The Procfile's uvicorn flags (less host, port and workers), or a default set."""
    procfile = REPO / "Procfile"
    web = ""
    if procfile.is_file():
        for line in procfile.read_text().splitlines():
            if line.startswith("web:"):
                web = line.removeprefix("web:").strip()
    words = shlex.split(web) if web else []
    if "uvicorn" not in words:
        return list(DEFAULT_UVICORN_FLAGS), "default"
    flags: list[str] = []
    # The word after "uvicorn" is the application; the rest are flags and their values.
    rest = iter(words[words.index("uvicorn") + 2 :])
    for word in rest:
        name = word.split("=", 1)[0]
        if name in _DROPPED_FLAGS_WITH_VALUE:
            if "=" not in word:
                next(rest, None)
        elif name in _DROPPED_FLAGS:
            continue  # a flag this tool decides
        else:
            flags.append(word)
    if "--no-proxy-headers" not in flags and "--proxy-headers" not in flags:
        flags.append("--no-proxy-headers")
    return flags, "Procfile"


def pinned(cpu: int | None) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu)] if cpu is not None and taskset else []


def start_server(
    name: str,
    app: str,
    *,
    env: Mapping[str, str],
    flags: Sequence[str],
    cpu: int | None,
    workdir: Path,
) -> Server:
    port = free_port()
    log_path = workdir / f"{name}.log"
    command = [
        *pinned(cpu),
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        *flags,
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, process, log_path)


def wait_ready(server: Server, *, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{tail}")
        try:
            conn = Connection(server.port, timeout=5)
        except OSError:
            time.sleep(0.1)
            continue
        try:
            conn.request("GET", "/", [("Host", f"127.0.0.1:{server.port}")])
            return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    raise RuntimeError(f"{server.name} did not answer in time")


def stop_servers(servers: Sequence[Server]) -> None:
    for server in servers:
        if server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, 15)
    for server in servers:
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, 9)
            server.process.wait(timeout=10)


def worker_pid(server: Server) -> int:
    """With one worker uvicorn serves in the process it starts; else in a supervisor's child."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    with contextlib.suppress(OSError):
        found = children.read_text().split()
        if found:
            return int(found[0])
    return server.process.pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_busy_seconds(cpu: int | None) -> float | None:
    """Busy time of one CPU, every process on it (and time the hypervisor stole)."""
    if cpu is None:
        return None
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(value) for value in line.split()[1:9]]
            user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return None


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# -- database -----------------------------------------------------------------


def seed_users(database_url: str, count: int, password_hash: str) -> None:
    """`count` users bench000001…, all with one precomputed hash, in one executemany."""
    upgrade_to_head(database_url)
    users = SQLModel.metadata.tables["users"]
    now = datetime.now(UTC)
    rows = []
    for number in range(1, count + 1):
        name = username(number)
        email = f"{name}@example.com"
        rows.append(
            {
                "username": name,
                "username_key": name,
                "email": email,
                "email_key": email,
                "password_hash": password_hash,
                "created_at": now,
                "updated_at": now,
            }
        )
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(users), rows)
    finally:
        engine.dispose()


# -- load ---------------------------------------------------------------------


def wrk_command(
    tool: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    *,
    connections: int,
    seconds: int,
    load_cpu: int | None,
) -> list[str]:
    """wrk with one thread on the load core, our Lua report, and these headers."""
    command = [
        *pinned(load_cpu),
        tool,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
    ]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    return command


@dataclass
class Bench:
    wrk: str
    server_cpu: int | None
    load_cpu: int | None
    scale: float

    # The share of the server's core that other processes took, one entry per measurement.
    foreign: list[float] = field(default_factory=list)

    def seconds(self, base: float) -> int:
        return max(1, round(base * self.scale))

    @contextlib.contextmanager
    def usage(self, pid: int) -> Iterator[dict[str, float]]:
        """CPU the server process spent while the block ran, and what others took of its core.

        Unlike req/s or latency, CPU per request barely moves when other processes
        compete for the core, so it tells the app's cost apart from the machine's noise.
        """
        found: dict[str, float] = {}
        wall, server = time.perf_counter(), cpu_seconds(pid)
        core = core_busy_seconds(self.server_cpu)
        yield found
        wall = time.perf_counter() - wall
        found["server_cpu_s"] = cpu_seconds(pid) - server
        found["server_cpu_share"] = found["server_cpu_s"] / wall
        if core is not None:
            after = core_busy_seconds(self.server_cpu) or 0.0
            other = max(0.0, after - core - found["server_cpu_s"])
            found["foreign_cpu_share"] = other / wall
            self.foreign.append(found["foreign_cpu_share"])

    def wrk_run(
        self,
        server: Server,
        *,
        seconds: int,
        connections: int,
        headers: Sequence[tuple[str, str]],
        delay_ms: int = 0,
    ) -> dict[str, Any]:
        command = wrk_command(
            self.wrk,
            server.url + "/",
            headers,
            connections=connections,
            seconds=seconds,
            load_cpu=self.load_cpu,
        )
        env = {**os.environ, "BENCH_DELAY_MS": str(delay_ms)}
        with self.usage(worker_pid(server)) as usage:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=seconds + 30, check=False
            )
        for line in done.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
                result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
                result |= usage
                bad = sum(result["errors"].values())
                if bad:
                    log(f"  wrk on {server.name}: {bad} errors {result['errors']}")
                return result
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


def home_headers(browser: Browser) -> list[tuple[str, str]]:
    """A signed-in browser's GET / (wrk adds Host)."""
    return [
        ("Cookie", browser.cookie_header()),
        ("Accept", "text/html"),
        ("Accept-Encoding", ACCEPT_ENCODING),
    ]


@dataclass
class Signin:
    client: int
    finished: float
    seconds: float
    status: int


def guest_login_pair(port: int) -> tuple[str, str]:
    """A guest browser's cookie header and CSRF token, reusable for any number of sign-ins."""
    browser = Browser(port)
    try:
        _reply, page = browser.get_page("/login")
        return browser.cookie_header(), csrf_of(page)
    finally:
        browser.close()


def one_signin(conn: Connection, port: int, cookie: str, token: str, name: str) -> Reply:
    body = urlencode({"csrf_token": token, "username": name, "password": PASSWORD}).encode()
    headers = [("Host", f"127.0.0.1:{port}"), ("Cookie", cookie), ("Content-Type", FORM_TYPE)]
    _sent, reply = conn.request("POST", "/login", headers, body)
    return reply


class Storm:
    """STORM_CLIENTS threads that sign in non-stop, each as the next of its own accounts,
    while resumed; `pause()` returns once no sign-in is in flight."""

    def __init__(self, port: int, names: Sequence[str]) -> None:
        self.port = port
        # One guest browser's cookie and token serve every sign-in: a success rotates the
        # browser cookie in its answer, which these clients (like wrk) simply ignore.
        self.pairs = [guest_login_pair(port) for _ in range(STORM_CLIENTS)]
        self.running = threading.Event()
        self.stop = threading.Event()
        self.busy = [False] * STORM_CLIENTS
        self.results: list[Signin] = []
        self.threads = [
            threading.Thread(
                target=self._client, args=(index, names[index::STORM_CLIENTS]), daemon=True
            )
            for index in range(STORM_CLIENTS)
        ]
        for thread in self.threads:
            thread.start()

    def resume(self) -> None:
        self.running.set()

    def pause(self, timeout: float = 30) -> None:
        self.running.clear()
        deadline = time.monotonic() + timeout
        while any(self.busy) and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.running.set()
        for thread in self.threads:
            thread.join(timeout=40)

    def _client(self, index: int, names: Sequence[str]) -> None:
        cookie, token = self.pairs[index]
        conn = Connection(self.port)
        try:
            turn = 0
            while not self.stop.is_set():
                self.busy[index] = True  # before looking at `running`: see pause()
                if not self.running.is_set():
                    self.busy[index] = False
                    self.running.wait(timeout=0.1)
                    # uvicorn closes keep-alive connections idle for 5 s: start afresh.
                    conn.close()
                    conn = Connection(self.port)
                    continue
                name = names[turn % len(names)]
                turn += 1
                started = time.perf_counter()
                try:
                    status = one_signin(conn, self.port, cookie, token, name).status
                except OSError:
                    status = 0
                    conn.close()
                    conn = Connection(self.port)
                finished = time.perf_counter()
                self.results.append(Signin(index, finished, finished - started, status))
                self.busy[index] = False
        finally:
            self.busy[index] = False
            conn.close()


def steady_rate(results: Sequence[Signin], start: float, end: float) -> float:
    """Successful sign-ins per second inside [start, end], free of edge effects:
    per client (completions - 1) / (last - first), summed."""
    rate = 0.0
    for client in sorted({result.client for result in results}):
        times = [
            r.finished
            for r in results
            if r.client == client and r.status == 303 and start <= r.finished <= end
        ]
        if len(times) >= 2 and times[-1] > times[0]:
            rate += (len(times) - 1) / (times[-1] - times[0])
    return rate


@contextlib.contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """Run this thread on `cpu` for a while (to time bcrypt where the server runs)."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def time_bcrypt(password_hash: str, *, cpu: int | None, repeats: int = 5) -> dict[str, float]:
    """One bcrypt check as the app does it (verify_password), wall time and CPU time."""
    with on_cpu(cpu):
        verify_password(PASSWORD, password_hash=password_hash)  # warm
        times, cpu_times = [], []
        for _ in range(repeats):
            started, cpu_started = time.perf_counter(), time.thread_time()
            if not verify_password(PASSWORD, password_hash=password_hash):
                raise RuntimeError("the seeded hash does not verify")
            times.append(time.perf_counter() - started)
            cpu_times.append(time.thread_time() - cpu_started)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_median_s": statistics.median(cpu_times),
    }


# -- the figures --------------------------------------------------------------


def measure_throughput(
    bench: Bench, servers: Mapping[str, Server], headers: list[tuple[str, str]]
) -> dict[str, Any]:
    """Signed-in GET / on hello, JWT and the app, in alternating rounds after a warm-up."""
    order = ["hello", "jwt", "app"]
    for name in order:
        bench.wrk_run(
            servers[name],
            seconds=bench.seconds(2),
            connections=THROUGHPUT_CONNECTIONS,
            headers=headers,
        )
    requests = dict.fromkeys(order, 0)
    seconds = dict.fromkeys(order, 0.0)
    cpu = dict.fromkeys(order, 0.0)
    bad = dict.fromkeys(order, 0)
    rounds = 2
    for _ in range(rounds):
        for name in order:
            result = bench.wrk_run(
                servers[name],
                seconds=bench.seconds(5),
                connections=THROUGHPUT_CONNECTIONS,
                headers=headers,
            )
            requests[name] += result["requests"]
            seconds[name] += result["duration_us"] / 1e6
            cpu[name] += result["server_cpu_s"]
            bad[name] += result["errors"]["status"]
    rps = {name: requests[name] / seconds[name] for name in order}
    cpu_us = {name: cpu[name] / requests[name] * 1e6 for name in order}
    return {
        "connections": THROUGHPUT_CONNECTIONS,
        "rounds": rounds,
        "rps": rps,
        "non_2xx_3xx": bad,
        "ratio_app_to_jwt": rps["app"] / rps["jwt"],
        "ratio_app_to_hello": rps["app"] / rps["hello"],
        "server_cpu_share": {name: cpu[name] / seconds[name] for name in order},
        "server_cpu_us_per_request": cpu_us,
        "cpu_ratio_jwt_to_app": cpu_us["jwt"] / cpu_us["app"],
    }


def measure_email_change(server: Server) -> dict[str, Any]:
    """One e-mail change exactly as the page's htmx form sends it."""
    browser = Browser(server.port)
    try:
        browser.sign_in(username(2))
        _reply, page = browser.get_page("/")
        parts = parse_page(page)
        if "partial-form" not in parts.forms:
            raise RuntimeError("the signed-in home has no #partial-form")
        form = parts.forms["partial-form"]
        action = form.get("hx-patch") or form.get("action") or f"/partial/{username(2)}"
        new_email = f"changed.{secrets.token_hex(4)}@example.com"
        fields = []
        for item in parts.inputs["partial-form"]:
            value = item.value
            if item.name == "email":
                value = new_email
            elif item.name == "current_password":
                value = PASSWORD
            fields.append((item.name, value))
        body = urlencode(fields).encode()
        target_selector = form.get("hx-target") or ""
        target_tag = parts.tags_by_id.get(target_selector.removeprefix("#"), "")
        headers = [
            ("Content-Type", FORM_TYPE),
            ("Origin", browser.origin),
            # What htmx 4 adds to every request, then the page's hx-headers.
            ("HX-Request", "true"),
            ("HX-Source", "form#partial-form"),
            ("HX-Current-URL", browser.origin + "/"),
            ("Accept", "text/html"),
            ("HX-Request-Type", "partial"),
            ("X-CSRF-Token", csrf_of(page)),
        ]
        if target_tag:
            headers.insert(5, ("HX-Target", f"{target_tag}{target_selector}"))
        exchanges: list[tuple[str, int, Reply]] = []
        sent, reply = browser.send("PATCH", action, headers, body)
        exchanges.append(("PATCH " + action, sent, reply))
        # Whatever the browser must fetch next before the new address shows.
        for _ in range(3):
            follow = None
            if 300 <= reply.status < 400:
                follow = reply.header("location")
            elif reply.header("hx-redirect") or reply.header("hx-location"):
                follow = reply.header("hx-redirect") or reply.header("hx-location")
            elif (reply.header("hx-refresh") or "").lower() == "true":
                follow = "/"
            if not follow:
                break
            follow = urlsplit(urljoin(browser.origin + "/", follow)).path or "/"
            sent, reply = browser.send("GET", follow, [("Accept", "text/html")])
            exchanges.append(("GET " + follow, sent, reply))
        shown = new_email in reply.text()
        if not shown:
            log(f"  e-mail change: the final reply ({reply.status}) does not show the new address")
        sent_total = sum(sent for _request, sent, _reply in exchanges)
        received_total = sum(reply.wire_bytes for _request, _sent, reply in exchanges)
        return {
            "round_trips": len(exchanges),
            "bytes": sent_total + received_total,
            "request_bytes": sent_total,
            "response_bytes": received_total,
            "new_email_shown": shown,
            "exchanges": [
                {
                    "request": request,
                    "request_bytes": sent,
                    "status": reply.status,
                    "response_head_bytes": reply.head_bytes,
                    "response_body_bytes": reply.body_bytes,
                    "content_encoding": reply.header("content-encoding"),
                    "response_header_bytes": {
                        name: len(f"{name}: {value}\r\n") for name, value in reply.headers
                    },
                }
                for request, sent, reply in exchanges
            ],
            "request_body_bytes": len(body),
            "request_cookie_bytes": len(browser.cookie_header()),
            "request_header_bytes": {name: len(f"{name}: {value}\r\n") for name, value in headers},
            "request_fields": [name for name, _value in fields],
        }
    finally:
        browser.close()


def measure_first_visit(server: Server) -> dict[str, Any]:
    """A guest's first GET / and everything it pulls in, each URL once."""
    browser = Browser(server.port)
    try:
        home, page = browser.get_page("/")
        items = [("/", home)]
        queue = [*parse_page(page).resources]
        seen = {"/"}
        while queue:
            reference = queue.pop(0)
            absolute = urlsplit(urljoin(browser.origin + "/", reference))
            if absolute.scheme not in ("http", "https") or absolute.netloc != browser.host:
                continue  # data: URLs cost nothing more; other origins are not ours
            target = absolute.path + (f"?{absolute.query}" if absolute.query else "")
            if target in seen:
                continue
            seen.add(target)
            _sent, reply = browser.send("GET", target, [("Accept", "*/*")])
            items.append((target, reply))
            content_type = reply.header("content-type") or ""
            if content_type.startswith("text/css") and reply.status == 200:
                css = decoded_text(browser, target, reply)
                for match in CSS_URL.finditer(css):
                    found = (match.group(1) or match.group(2) or "").strip()
                    if found and not found.startswith("data:"):
                        queue.append(urljoin(browser.origin + target, found))
        return {
            "body_bytes": sum(reply.body_bytes for _t, reply in items),
            "header_bytes": sum(reply.head_bytes for _t, reply in items),
            "requests": len(items),
            "resources": [
                {
                    "url": target,
                    "status": reply.status,
                    "body_bytes": reply.body_bytes,
                    "head_bytes": reply.head_bytes,
                    "content_encoding": reply.header("content-encoding"),
                }
                for target, reply in items
            ],
            "accept_encoding": ACCEPT_ENCODING,
        }
    finally:
        browser.close()


def measure_storm(
    bench: Bench, app: Server, headers: list[tuple[str, str]], password_hash: str
) -> dict[str, Any]:
    """p99 of a steady, light GET / load alone and during a sign-in storm, in alternating
    rounds (the median round counts, so one stall elsewhere on the machine does not decide);
    then, with the probe stopped, the storm's sign-ins/s against what bcrypt allows."""
    rounds = 3
    phase_seconds = bench.seconds(5)
    signin_seconds = bench.seconds(8)
    bcrypt_before = time_bcrypt(password_hash, cpu=bench.server_cpu)
    pid = worker_pid(app)
    # Accounts 11-900: distinct per client and used nowhere else in the run.
    storm = Storm(app.port, [username(number) for number in range(11, 901)])
    idle_runs: list[dict[str, Any]] = []
    busy_runs: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            idle_runs.append(
                bench.wrk_run(
                    app,
                    seconds=phase_seconds,
                    connections=PROBE_CONNECTIONS,
                    headers=headers,
                    delay_ms=PROBE_DELAY_MS,
                )
            )
            storm.resume()
            time.sleep(1.0)  # every client has a sign-in in flight
            busy_runs.append(
                bench.wrk_run(
                    app,
                    seconds=phase_seconds,
                    connections=PROBE_CONNECTIONS,
                    headers=headers,
                    delay_ms=PROBE_DELAY_MS,
                )
            )
            storm.pause()
        storm.resume()
        time.sleep(1.0)
        with bench.usage(pid) as usage:
            window_start = time.perf_counter()
            time.sleep(signin_seconds)
            window_end = time.perf_counter()
    finally:
        storm.close()
    bcrypt_after = time_bcrypt(password_hash, cpu=bench.server_cpu)
    bcrypt = {
        "median_s": statistics.median([bcrypt_before["median_s"], bcrypt_after["median_s"]]),
        "before_s": bcrypt_before["median_s"],
        "after_s": bcrypt_after["median_s"],
        "min_s": min(bcrypt_before["min_s"], bcrypt_after["min_s"]),
        "cpu_s": statistics.median([bcrypt_before["cpu_median_s"], bcrypt_after["cpu_median_s"]]),
    }
    results = storm.results
    statuses: dict[str, int] = {}
    for result in results:
        statuses[str(result.status)] = statuses.get(str(result.status), 0) + 1
    in_window = [r for r in results if window_start <= r.finished <= window_end and r.status == 303]
    rate = steady_rate(results, window_start, window_end)
    cores = len(os.sched_getaffinity(pid))
    # The CPU time of one check: its wall time on an idle core, and unlike wall time
    # not stretched when other processes take turns on the core while it runs.
    ideal = cores / bcrypt["cpu_s"]
    signins = rate * (window_end - window_start)
    cpu_per_signin = usage["server_cpu_s"] / signins if signins else None
    idle_p99 = statistics.median(run["latency_us"]["p99"] for run in idle_runs)
    busy_p99 = statistics.median(run["latency_us"]["p99"] for run in busy_runs)
    return {
        "probe": {
            "connections": PROBE_CONNECTIONS,
            "delay_ms": PROBE_DELAY_MS,
            "seconds_per_phase": phase_seconds,
            "rounds": rounds,
        },
        "idle_p99_us": idle_p99,
        "storm_p99_us": busy_p99,
        "p99_ratio": busy_p99 / max(1, idle_p99),
        "idle_rounds": [
            {"requests": run["requests"], "latency_us": run["latency_us"]} for run in idle_runs
        ],
        "storm_rounds": [
            {"requests": run["requests"], "latency_us": run["latency_us"]} for run in busy_runs
        ],
        "storm_clients": STORM_CLIENTS,
        "signin_statuses": statuses,
        "throttled_or_failed": sum(n for status, n in statuses.items() if status != "303"),
        "signin_window_seconds": window_end - window_start,
        "signins_in_window": len(in_window),
        "signins_per_s": rate,
        "signin_latency_median_s": (
            statistics.median(r.seconds for r in in_window) if in_window else None
        ),
        "server_cores": cores,
        # A server share well under `cores` with a high foreign share: other processes
        # took the core, and the sign-in figures are then pessimistic.
        "server_cpu_share": usage["server_cpu_share"],
        "foreign_cpu_share": usage.get("foreign_cpu_share"),
        "server_cpu_s_per_signin": cpu_per_signin,
        # Noise-free cross-check: the share of the server's CPU per sign-in that is bcrypt.
        "cpu_efficiency": bcrypt["cpu_s"] / cpu_per_signin if cpu_per_signin else None,
        "bcrypt_check": bcrypt,
        "ideal_signins_per_s": ideal,
        "signin_efficiency": rate / ideal,
    }


def measure_scale(
    bench: Bench, small: Server, large: Server, headers: Mapping[str, list[tuple[str, str]]]
) -> dict[str, Any]:
    """GET / rps and sign-in latency, 1,000 against 100,000 users, in alternating rounds."""
    servers = {"small": small, "large": large}
    bench.wrk_run(
        large,
        seconds=bench.seconds(2),
        connections=THROUGHPUT_CONNECTIONS,
        headers=headers["large"],
    )
    requests = dict.fromkeys(servers, 0)
    seconds = dict.fromkeys(servers, 0.0)
    cpu = dict.fromkeys(servers, 0.0)
    signins: dict[str, list[float]] = {key: [] for key in servers}
    pairs = {key: guest_login_pair(server.port) for key, server in servers.items()}
    bad: list[str] = []
    rounds, per_round = 3, 3
    for round_number in range(rounds):
        for key, server in servers.items():
            result = bench.wrk_run(
                server,
                seconds=bench.seconds(4),
                connections=THROUGHPUT_CONNECTIONS,
                headers=headers[key],
            )
            requests[key] += result["requests"]
            seconds[key] += result["duration_us"] / 1e6
            cpu[key] += result["server_cpu_s"]
        for key, server in servers.items():
            top = SMALL_USERS if key == "small" else LARGE_USERS
            conn = Connection(server.port)
            try:
                for attempt in range(per_round):
                    # The last accounts of the table, used nowhere else in the run.
                    name = username(top - per_round * round_number - attempt)
                    cookie, token = pairs[key]
                    started = time.perf_counter()
                    reply = one_signin(conn, server.port, cookie, token, name)
                    signins[key].append(time.perf_counter() - started)
                    if reply.status != 303:
                        bad.append(f"{key} {name}: {reply.status}")
            finally:
                conn.close()
    rps = {key: requests[key] / seconds[key] for key in servers}
    cpu_us = {key: cpu[key] / requests[key] * 1e6 for key in servers}
    medians = {key: statistics.median(times) for key, times in signins.items()}
    rps_ratio = rps["large"] / rps["small"]
    signin_ratio = medians["small"] / medians["large"]
    return {
        "users": {"small": SMALL_USERS, "large": LARGE_USERS},
        "rounds": rounds,
        "rps": rps,
        "server_cpu_us_per_request": cpu_us,
        "cpu_ratio_small_to_large": cpu_us["small"] / cpu_us["large"],
        "signin_median_s": medians,
        "signin_min_s": {key: min(times) for key, times in signins.items()},
        "signin_samples_s": signins,
        "signin_failures": bad,
        "rps_ratio": rps_ratio,
        "signin_ratio": signin_ratio,
        "ratio": min(rps_ratio, signin_ratio),
    }


# -- the table ----------------------------------------------------------------


def table_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    t = results["throughput"]
    e = results["email_change"]
    f = results["first_visit"]
    s = results["storm"]
    c = results["scale"]
    rss = results["memory"]["rss_bytes"]
    return [
        {
            "figure": "signed-in GET / req/s, ratio to the bare JWT app",
            "measured": f"{t['rps']['app']:,.0f}/s vs {t['rps']['jwt']:,.0f}/s "
            f"(CPU per request {t['server_cpu_us_per_request']['app']:.0f} vs "
            f"{t['server_cpu_us_per_request']['jwt']:.0f} µs)",
            "target": "≥ 0.5",
            "ratio": t["ratio_app_to_jwt"],
            "pass": t["ratio_app_to_jwt"] >= TARGETS["get_home_ratio"],
        },
        {
            "figure": "bytes and round trips for one e-mail change",
            "measured": f"{e['response_bytes']:,} B back, {e['round_trips']} round trip(s) "
            f"(request {e['request_bytes']:,} B)",
            "target": "≤ 1,200 B, 1 round trip",
            "ratio": e["response_bytes"] / TARGETS["email_change_bytes"],
            "pass": e["response_bytes"] <= TARGETS["email_change_bytes"]
            and e["round_trips"] <= TARGETS["email_change_round_trips"]
            and e["new_email_shown"],
        },
        {
            "figure": "first-visit weight, guest home + CSS, JS, icons (bodies)",
            "measured": f"{f['body_bytes'] / 1024:.1f} KiB in {f['requests']} requests",
            "target": "≤ 47 KiB",
            "ratio": f["body_bytes"] / TARGETS["first_visit_bytes"],
            "pass": f["body_bytes"] <= TARGETS["first_visit_bytes"],
        },
        {
            "figure": "p99 of signed-in GET / during 4 sign-in clients, ratio to idle",
            "measured": f"{s['storm_p99_us'] / 1000:.1f} ms vs {s['idle_p99_us'] / 1000:.1f} ms",
            "target": "≤ 2",
            "ratio": s["p99_ratio"],
            "pass": s["p99_ratio"] <= TARGETS["storm_p99_ratio"],
        },
        {
            "figure": "sign-ins/s ÷ (cores ÷ one bcrypt check)",
            "measured": f"{s['signins_per_s']:.2f}/s vs {s['server_cores']} ÷ "
            f"{s['bcrypt_check']['cpu_s'] * 1000:.0f} ms = {s['ideal_signins_per_s']:.2f}/s",
            "target": "≥ 0.95",
            "ratio": s["signin_efficiency"],
            "pass": s["signin_efficiency"] >= TARGETS["signin_efficiency"]
            and s["throttled_or_failed"] == 0,
        },
        {
            "figure": "GET / and sign-in with 100,000 users vs 1,000",
            "measured": f"{c['rps']['large']:,.0f} vs {c['rps']['small']:,.0f} req/s; "
            f"sign-in {c['signin_median_s']['large'] * 1000:.0f} vs "
            f"{c['signin_median_s']['small'] * 1000:.0f} ms",
            "target": "≥ 0.95",
            "ratio": c["ratio"],
            "pass": c["ratio"] >= TARGETS["scale_ratio"] and not c["signin_failures"],
        },
        {
            "figure": "one worker's resident memory after the run",
            "measured": f"{rss / 1e6:.1f} MB",
            "target": "≤ 100 MB",
            "ratio": rss / TARGETS["rss_bytes"],
            "pass": rss <= TARGETS["rss_bytes"],
        },
    ]


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| figure | measured | target | pass | ratio |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = "pass" if row["pass"] else "FAIL"
        lines.append(
            f"| {row['figure']} | {row['measured']} | {row['target']} | {verdict} "
            f"| {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


# -- orchestration --------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk is missing: install it (Debian: apt-get install -y wrk)")
    log("installing wrk with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(install, env=env, capture_output=True, timeout=300, check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


def choose_cpus() -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not shutil.which("taskset"):
        return None, None
    return cpus[0], cpus[1]


def loadavg() -> list[float]:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return []


def git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip() or None
    return None


def run(scale: float, output: Path) -> dict[str, Any]:
    started = time.monotonic()
    wrk = ensure_wrk()
    server_cpu, load_cpu = choose_cpus()
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})
    bench = Bench(wrk, server_cpu, load_cpu, scale)
    flags, flags_from = uvicorn_flags()
    log(
        f"uvicorn flags ({flags_from}): {' '.join(flags)}; server cpu {server_cpu}, load {load_cpu}"
    )
    results: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "python": platform.python_version(),
            "uvicorn_flags": flags,
            "uvicorn_flags_from": flags_from,
            "server_cpu": server_cpu,
            "load_cpu": load_cpu,
            "cpus": os.cpu_count(),
            "loadavg_before": loadavg(),
            "scale": scale,
            "bcrypt_rounds": BCRYPT_ROUNDS,
            "brotli_decoder": _brotli_available(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="webapp-bench-") as tmp:
        workdir = Path(tmp)
        secret = secrets.token_urlsafe(48)
        base_env = {
            **os.environ,
            "APP_ENV": "development",
            "SECRET_KEY": secret,
            "BCRYPT_ROUNDS": str(BCRYPT_ROUNDS),
            # As in production: the schema is migrated before the server starts
            # (seed_users), so the worker never imports Alembic.
            "AUTO_MIGRATE": "false",
            "PYTHONUNBUFFERED": "1",
        }
        small_url = f"sqlite:///{workdir / 'small.db'}"
        large_url = f"sqlite:///{workdir / 'large.db'}"
        settings = Settings.from_environment({**base_env, "DATABASE_URL": small_url})
        log("hashing one password at cost 12 and seeding 1,000 + 100,000 users")
        password_hash = hash_password(PASSWORD, rounds=BCRYPT_ROUNDS)
        seed_users(small_url, SMALL_USERS, password_hash)
        seed_users(large_url, LARGE_USERS, password_hash)
        bare_env = {
            **base_env,
            "BENCH_JWT_KEY_HEX": secret.encode().hex(),
            "JWT_ALGORITHM": settings.jwt_algorithm,
            "JWT_ISSUER": settings.jwt_issuer,
            "JWT_AUDIENCE": settings.jwt_audience,
        }
        servers: dict[str, Server] = {}
        try:
            launches = [
                ("app", "app", "webapp.app:app", {**base_env, "DATABASE_URL": small_url}),
                ("large", "app-100k", "webapp.app:app", {**base_env, "DATABASE_URL": large_url}),
                ("hello", "bare-hello", "bench.bare_hello:app", bare_env),
                ("jwt", "bare-jwt", "bench.bare_jwt:app", bare_env),
            ]
            for key, name, app, env in launches:
                servers[key] = start_server(
                    name, app, env=env, flags=flags, cpu=server_cpu, workdir=workdir
                )
            deadline = time.monotonic() + 90
            for server in servers.values():
                wait_ready(server, deadline=deadline)

            reader = Browser(servers["app"].port)
            reader.sign_in(username(1))
            large_reader = Browser(servers["large"].port)
            large_reader.sign_in(username(LARGE_USERS // 2))
            headers = home_headers(reader)
            large_headers = home_headers(large_reader)
            reader.close()
            large_reader.close()

            log("1/6 signed-in GET / on the app, bare JWT and bare hello")
            results["throughput"] = measure_throughput(bench, servers, headers)
            log("2/6 one e-mail change")
            results["email_change"] = measure_email_change(servers["app"])
            log("3/6 first visit as a guest")
            results["first_visit"] = measure_first_visit(servers["app"])
            log("4/6 p99 idle and during a sign-in storm; sign-ins/s; bcrypt on the server's core")
            results["storm"] = measure_storm(bench, servers["app"], headers, password_hash)
            log("5/6 1,000 against 100,000 users")
            results["scale"] = measure_scale(
                bench,
                servers["app"],
                servers["large"],
                {"small": headers, "large": large_headers},
            )
            log("6/6 resident memory")
            pid = worker_pid(servers["app"])
            results["memory"] = {
                "pid": pid,
                "rss_bytes": rss_bytes(pid),
                "rss_bytes_100k_copy": rss_bytes(worker_pid(servers["large"])),
                "rss_bytes_bare_jwt": rss_bytes(worker_pid(servers["jwt"])),
                "rss_bytes_bare_hello": rss_bytes(worker_pid(servers["hello"])),
            }
        finally:
            stop_servers(list(servers.values()))
    results["meta"]["loadavg_after"] = loadavg()
    if bench.foreign:
        results["meta"]["foreign_cpu_share_on_server_core"] = {
            "max": max(bench.foreign),
            "mean": statistics.fmean(bench.foreign),
            "measurements": len(bench.foreign),
        }
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["table"] = table_rows(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every measuring time (default 1)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON file")
    args = parser.parse_args(argv)
    results = run(args.scale, args.output)
    t = results["throughput"]["rps"]
    cpu = results["throughput"]["server_cpu_us_per_request"]
    print(
        f"\nsigned-in GET /, {THROUGHPUT_CONNECTIONS} connections: "
        f"bare hello {t['hello']:,.0f} req/s ({cpu['hello']:.0f} µs CPU each), "
        f"bare JWT {t['jwt']:,.0f} req/s ({cpu['jwt']:.0f} µs), "
        f"app {t['app']:,.0f} req/s ({cpu['app']:.0f} µs)"
    )
    meta = results["meta"]
    print(
        f"load average before {meta['loadavg_before']}, after {meta['loadavg_after']}; "
        f"{meta['seconds']} s\n"
    )
    print(render_table(results["table"]))
    foreign = meta.get("foreign_cpu_share_on_server_core")
    if foreign and foreign["max"] > NOISY:
        print(
            f"\nnoisy machine: other processes took up to {foreign['max']:.0%} "
            f"(mean {foreign['mean']:.0%}) of the server's core during the measurements, so "
            "req/s, latencies and sign-ins/s are pessimistic and vary between runs; the CPU "
            "per request (above, and in the JSON) is the steadier measure. Run again when "
            "the machine is quiet."
        )
    print(
        "\nratio: the measured ratio, or measured ÷ target for absolute budgets. "
        f"All numbers: {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
