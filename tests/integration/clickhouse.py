"""A real ClickHouse server (Debian's clickhouse-server 18.16) for one test, RowBinary
encoding of rows, and a replay of recorded inserts on the current ClickHouse engine (chdb,
in-process) so that the two can be compared.

What 18.16 (Debian 18.16.1+ds) needs and does, as found on this machine (the live checks are
in test_clickhouse_infra.py, test_facts_of_18_16 and the cluster test):
- It runs as root without complaint (no user switch, no refusal).  There is no watchdog
  process: the pid spawned is the server.
- The binary is /usr/sbin/clickhouse-server (not /usr/bin); both are searched below.
- Required config elements: the root is <yandex>; besides the ports and <path>, only
  <mark_cache_size> is required: without it the server exits at once with
  "Not found: mark_cache_size" (exit code 70).  <tmp_path>, <user_files_path> and
  <format_schema_path> have defaults under /var/lib/clickhouse and are set here so that
  nothing is written outside the workdir.  A profile and a quota named by a user in users.xml
  must exist (empty ones do).
- Start: /ping answers "Ok." 0.1-0.2 s after the spawn here; SIGTERM shuts it down in about
  0.8 s.  It keeps a `status` file in <path> and starts again on the same data after a
  SIGKILL.
- The server's timezone is set to UTC here, so toYYYYMMDD(arrival_time) and DateTime text
  are the same as on chdb (UTC on this machine; its queries here also say so).
- `insert_distributed_sync` exists (default 0), as does `insert_distributed_timeout` (0).
- `INSERT INTO t (...) SETTINGS k = v FORMAT RowBinary` is a syntax error (Code: 62) on 18.16:
  settings go in URL parameters.
- `ALTER TABLE t DROP PARTITION (7, 20261201)` works with the tuple key
  (retention_hours, toYYYYMMDD(arrival_time)); system.parts.partition reads "(7,20261201)"
  and partition_id "7-20261201".  `ALTER TABLE t DELETE WHERE ...` exists (a mutation, seen in
  system.mutations with is_done = 1 within a fraction of a second on a small table).
- FORMAT JSONEachRow quotes 64-bit integers unless output_format_json_quote_64bit_integers=0
  (rows() sets it, on both engines).  There is no currentUser().
- HTTP errors: the text "Code: N, e.displayText() = DB::Exception: ..., e.what() = DB::Exception"
  with status 500, or 400 (syntax error, 62), 401 (wrong password, 193), 404 (unknown
  database 81, unknown identifier 47); no X-ClickHouse-Exception-Code header.  Basic auth and
  user/password URL parameters both work.
- Pausing with SIGSTOP is not immediate: the thread that takes the signal stops the others
  when it next runs, and on a loaded machine the server answered a query sent after
  kill(SIGSTOP) had returned.  pause() waits until every thread is stopped.
"""

import atexit
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from xml.sax.saxutils import escape

# The DDL loggate uses: `[s.format(db=..., table=...) for s in LOGS_DDL]`.
LOGS_DDL = [
    "CREATE DATABASE IF NOT EXISTS {db}",
    """CREATE TABLE IF NOT EXISTS {db}.{table} (
    project String, logstore String, shard UInt32,
    event_time DateTime, event_time_ms Int64, arrival_time DateTime, arrival_time_ms Int64,
    retention_hours UInt32, node_id UInt16, insert_id UInt64, batch_id UInt64, position UInt32,
    producer_id Int64, producer_epoch Int16, producer_lane UInt32, sequence_first Int32, sequence_last Int32,
    client String, key Nullable(String), header_keys Array(String), header_values Array(Nullable(String)),
    field_names Array(String), field_values Array(String), content String
) ENGINE = MergeTree() PARTITION BY (retention_hours, toYYYYMMDD(arrival_time)) ORDER BY (project, logstore, event_time)""",
]


def logs_ddl(db, table):
    return [s.format(db=db, table=table) for s in LOGS_DDL]


def _split_top_level(text, sep=","):
    """Splits on `sep` outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def columns_of_create(sql):
    """[(name, type)] of a CREATE TABLE statement's column list (plain `name Type` columns)."""
    start = sql.index("(")
    depth = 0
    for i in range(start, len(sql)):
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                break
    cols = []
    for item in _split_top_level(sql[start + 1:i]):
        name, typ = item.split(None, 1)
        cols.append((name.strip("`"), typ.strip()))
    return cols


# [(name, type)] of the logs table, in DDL order.
LOGS_COLUMNS = columns_of_create(LOGS_DDL[1])


# ---------------------------------------------------------------- RowBinary

def _leb128(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_INTS = {
    "UInt8": "<B", "UInt16": "<H", "UInt32": "<I", "UInt64": "<Q",
    "Int8": "<b", "Int16": "<h", "Int32": "<i", "Int64": "<q",
}


def encode_value(typ, value):
    """RowBinary bytes of one value of ClickHouse type `typ` (String, [U]IntN, DateTime,
    Nullable(T), Array(T))."""
    typ = typ.strip()
    if typ.startswith("Nullable(") and typ.endswith(")"):
        if value is None:
            return b"\x01"
        return b"\x00" + encode_value(typ[9:-1], value)
    if typ.startswith("Array(") and typ.endswith(")"):
        inner = typ[6:-1]
        return _leb128(len(value)) + b"".join(encode_value(inner, v) for v in value)
    if typ == "String":
        if isinstance(value, str):
            value = value.encode()
        return _leb128(len(value)) + bytes(value)
    if typ == "DateTime":
        return struct.pack("<I", int(value))
    if typ in _INTS:
        return struct.pack(_INTS[typ], value)
    raise ValueError("no RowBinary encoder for type %s" % typ)


def encode_rowbinary(columns, rows):
    """RowBinary of `rows` (dicts by column name, or sequences in column order) for
    `columns` [(name, type)]."""
    out = bytearray()
    for row in rows:
        for i, (name, typ) in enumerate(columns):
            out += encode_value(typ, row[name] if isinstance(row, dict) else row[i])
    return bytes(out)


def insert_sql(table, columns, settings=None):
    """`INSERT INTO table (c1, ...) [SETTINGS ...] FORMAT RowBinary` for `columns` [(name, type)]."""
    sql = "INSERT INTO %s (%s)" % (table, ", ".join("`%s`" % n for n, _ in columns))
    if settings:
        sql += " SETTINGS " + ", ".join("%s = %s" % (k, v) for k, v in settings.items())
    return sql + " FORMAT RowBinary"


# ---------------------------------------------------------------- the server

def _server_binary():
    for cand in (shutil.which("clickhouse-server"), "/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"):
        if cand and os.path.exists(cand):
            return cand
    raise RuntimeError("clickhouse-server not found (tests/install-deps.sh installs it)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """`n` distinct free loopback ports (the probe sockets are held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ClickHouseError(Exception):
    def __init__(self, status, text):
        super().__init__("ClickHouse HTTP %d: %s" % (status, text.strip()))
        self.status = status
        self.text = text


def _tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


class ClickHouse:
    """A clickhouse-server on 127.0.0.1 with all its files under `workdir`/`name`.

    `cluster`: optional [(host, tcp_port)] shards of a `logs_cluster` in <remote_servers>
    (one replica per shard).  Users: `default` (no password) and `loggate` / `loggate-pw`,
    both only from 127.0.0.1 and ::1."""

    USERS = {"default": "", "loggate": "loggate-pw"}

    def __init__(self, workdir, name="ch", cluster=None):
        self.name = name
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.tcp_port, self.interserver_http_port = free_ports(3)
        self.cluster = list(cluster or [])
        self.config_path = self.dir / "config.xml"
        self.users_path = self.dir / "users.xml"
        self.log_path = self.dir / "server.log"
        self.err_log_path = self.dir / "server.err.log"
        self.stdout_path = self.dir / "server.stdout"
        self.proc = None
        self.paused = False
        self.start_seconds = None  # how long the last start() took until /ping answered
        self._write_config()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.http_port

    def set_cluster(self, cluster):
        """Rewrites <remote_servers> (before start(), or applied at the next start)."""
        self.cluster = list(cluster)
        self._write_config()

    def _write_config(self):
        d = self.dir
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (d / sub).mkdir(exist_ok=True)
        remote = ""
        if self.cluster:
            shards = "".join(
                "<shard><replica><host>%s</host><port>%d</port></replica></shard>" % (escape(h), p)
                for h, p in self.cluster
            )
            remote = "<remote_servers><logs_cluster>%s</logs_cluster></remote_servers>" % shards
        config = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{log}</log>
        <errorlog>{errlog}</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <interserver_http_port>{inter}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <path>{data}/</path>
    <tmp_path>{tmp}/</tmp_path>
    <user_files_path>{user_files}/</user_files_path>
    <format_schema_path>{schemas}/</format_schema_path>
    <users_config>{users}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>50</max_concurrent_queries>
    <keep_alive_timeout>10</keep_alive_timeout>
    {remote}
</yandex>
""".format(
            log=escape(str(self.log_path)), errlog=escape(str(self.err_log_path)),
            http=self.http_port, tcp=self.tcp_port, inter=self.interserver_http_port,
            data=escape(str(d / "data")), tmp=escape(str(d / "tmp")),
            user_files=escape(str(d / "user_files")), schemas=escape(str(d / "format_schemas")),
            users=escape(str(self.users_path)), remote=remote,
        )
        users = "".join(
            """
        <{u}>
            <password>{p}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </{u}>""".format(u=u, p=escape(p))
            for u, p in self.USERS.items()
        )
        users_xml = """<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>{users}
    </users>
    <quotas><default></default></quotas>
</yandex>
""".format(users=users)
        self.users_path.write_text(users_xml)
        self.config_path.write_text(config)

    # ---- process control

    def start(self, timeout=30):
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("%s is already running" % self.name)
        t0 = time.monotonic()
        with open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(
                [_server_binary(), "--config-file=%s" % self.config_path],
                cwd=str(self.dir), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        self.paused = False
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError("clickhouse-server %s exited with %s while starting:\n%s\n%s" % (
                    self.name, rc, _tail(self.stdout_path), _tail(self.err_log_path)))
            if self.ping(timeout=1):
                self.start_seconds = time.monotonic() - t0
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("clickhouse-server %s did not answer /ping within %s s:\n%s" % (
                    self.name, timeout, _tail(self.log_path)))
            time.sleep(0.05)

    def ping(self, timeout=2):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
            try:
                conn.request("GET", "/ping")
                resp = conn.getresponse()
                return resp.status == 200 and resp.read().strip() == b"Ok."
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.paused = False

    def kill(self):
        """SIGKILL: a crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.paused = False

    def pause(self, timeout=10):
        """SIGSTOP: the server hangs (connections are accepted by the kernel, never answered).
        Returns once every thread is stopped: a group stop is not immediate (the thread that
        takes the signal stops the others when it next runs, and on a loaded machine the
        server was seen answering a query sent after kill(SIGSTOP) had returned)."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + timeout
        while not self._all_threads_stopped():
            if time.monotonic() > deadline:
                raise RuntimeError("clickhouse-server %s did not stop within %s s" % (self.name, timeout))
            time.sleep(0.005)

    def _all_threads_stopped(self):
        task = "/proc/%d/task" % self.proc.pid
        try:
            tids = os.listdir(task)
        except OSError:
            return True  # gone
        for tid in tids:
            try:
                with open("%s/%s/stat" % (task, tid)) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue  # a thread that just ended
            if state not in ("T", "t", "Z", "X"):
                return False
        return True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- HTTP

    def http(self, sql, data=None, user="default", password="", settings=None, timeout=30):
        """(status, body bytes, headers) of one query.  Without `data` the SQL is the POST
        body; with `data` the SQL goes in the `query` URL parameter and `data` is the body."""
        params = dict(settings or {})
        body = sql.encode() if data is None else data
        if data is not None:
            params["query"] = sql
        path = "/"
        if params:
            path += "?" + urllib.parse.urlencode(params)
        headers = {"Content-Length": str(len(body))}
        if user != "default" or password:
            token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
            headers["Authorization"] = "Basic " + token
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def query(self, sql, user="default", password="", data=None, settings=None, timeout=30):
        """The answer's text; raises ClickHouseError with ClickHouse's text on non-200."""
        status, body, _ = self.http(sql, data=data, user=user, password=password, settings=settings, timeout=timeout)
        text = body.decode(errors="replace")
        if status != 200:
            raise ClickHouseError(status, text)
        return text

    def rows(self, sql, user="default", password="", settings=None):
        """[dict] of a SELECT, via FORMAT JSONEachRow (64-bit integers as JSON numbers)."""
        s = {"output_format_json_quote_64bit_integers": 0}
        s.update(settings or {})
        text = self.query(sql.rstrip().rstrip(";") + " FORMAT JSONEachRow", user=user, password=password, settings=s)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def count(self, table):
        return int(self.query("SELECT count() FROM %s" % table).strip())


# ---------------------------------------------------------------- chdb replay

_INSERT_RE = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<table>(?:`[^`]+`|[\w]+)(?:\.(?:`[^`]+`|[\w]+))?)\s*"
    r"(?:\((?P<cols>[^)]*)\))?\s*"
    r"(?:SETTINGS\s+(?P<settings>.*?))?\s*"
    r"FORMAT\s+RowBinary\s*$",
    re.IGNORECASE | re.DOTALL,
)


def split_insert(path_and_query, body):
    """(sql, RowBinary bytes) of a recorded HTTP insert.  The SQL is the `query` URL parameter
    if there is one (ClickHouse then reads the whole body as data), else it is the body up to
    the first newline after `FORMAT RowBinary` (where ClickHouse starts reading data)."""
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(path_and_query).query, keep_blank_values=True)
    if "query" in params:
        return params["query"][0], body
    m = re.search(rb"FORMAT\s+RowBinary[ \t]*\r?\n", body, re.IGNORECASE)
    if not m:
        raise ValueError("no `FORMAT RowBinary` line in the body")
    return body[:m.start()].decode() + "FORMAT RowBinary", body[m.end():]


def _unquote(name):
    name = name.strip()
    return name[1:-1] if name.startswith("`") and name.endswith("`") else name


class ChdbCheck(dict):
    """Row counts per table (`{"db.t": n}`) of a replay on chdb; `.query(sql)` runs more SQL
    on the same chdb session and returns [dict]; `.close()` drops it."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="chdb-check-")
        from chdb import session  # imported here: chdb is large and only these checks need it
        self.session = session.Session(os.path.join(self.dir, "db"))
        self.version = self.query("SELECT version() AS v")[0]["v"]

    def execute(self, sql):
        try:
            return self.session.query(sql)
        except Exception as e:  # chdb raises ChdbError with ClickHouse's text
            raise RuntimeError("chdb: %s\nSQL: %s" % (e, sql)) from e

    def query(self, sql, settings=None):
        s = {"output_format_json_quote_64bit_integers": 0, "session_timezone": "'UTC'"}
        s.update(settings or {})
        sql = sql.rstrip().rstrip(";")
        sql += " SETTINGS " + ", ".join("%s = %s" % kv for kv in s.items())
        text = str(self.session.query(sql, "JSONEachRow"))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def columns(self, table):
        """[(name, type)] of the table's insertable columns (MATERIALIZED/ALIAS left out)."""
        return [(r["name"], r["type"]) for r in self.query("DESCRIBE TABLE %s" % table)
                if r.get("default_type", "") not in ("MATERIALIZED", "ALIAS", "EPHEMERAL")]

    def replay(self, sql, body):
        """Runs one recorded `INSERT INTO t (cols) [SETTINGS ...] FORMAT RowBinary` with its
        RowBinary `body` as `INSERT INTO t (cols) SELECT * FROM file(tmp, 'RowBinary', structure)`."""
        m = _INSERT_RE.match(sql)
        if not m:
            raise ValueError("not an INSERT ... FORMAT RowBinary: %r" % sql)
        table = m.group("table")
        types = dict(self.columns(table))
        if m.group("cols") is not None:
            names = [_unquote(c) for c in _split_top_level(m.group("cols"))]
        else:
            names = [n for n, _ in self.columns(table)]
        missing = [n for n in names if n not in types]
        if missing:
            raise ValueError("columns %s not in %s" % (missing, table))
        fd, path = tempfile.mkstemp(dir=self.dir, suffix=".rowbinary")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        structure = ", ".join("`%s` %s" % (n, types[n]) for n in names)
        stmt = "INSERT INTO %s (%s) SELECT * FROM file('%s', 'RowBinary', '%s')" % (
            table, ", ".join("`%s`" % n for n in names), path, structure.replace("'", "\\'"))
        if m.group("settings"):
            stmt += " SETTINGS " + m.group("settings")
        try:
            self.execute(stmt)
        finally:
            os.unlink(path)
        return table

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None
        shutil.rmtree(self.dir, ignore_errors=True)


_last_check = None
_check_lock = threading.Lock()


def check_on_current_engine(ddl, inserts):
    """Runs `ddl` (statements as given) on a fresh chdb session, then replays `inserts`
    [(sql, RowBinary body)], and returns {table: row count} for every table inserted into
    (a ChdbCheck: its `.query(sql)` and the module's `chdb_query(sql)` run more SQL there).
    A previous check's session is closed."""
    global _last_check
    with _check_lock:
        if _last_check is not None:
            _last_check.close()
            _last_check = None
        check = ChdbCheck()
        try:
            for stmt in ddl:
                check.execute(stmt)
            tables = []
            for sql, body in inserts:
                t = check.replay(sql, body)
                if t not in tables:
                    tables.append(t)
            for t in tables:
                check[t] = int(check.query("SELECT count() AS n FROM %s" % t)[0]["n"])
        except BaseException:
            check.close()
            raise
        _last_check = check
        return check


def close_chdb_check():
    """Closes the last check's chdb session and removes its files (also done at exit)."""
    global _last_check
    with _check_lock:
        if _last_check is not None:
            _last_check.close()
            _last_check = None


atexit.register(close_chdb_check)


def chdb_query(sql):
    """[dict] of `sql` on the session of the last check_on_current_engine."""
    if _last_check is None:
        raise RuntimeError("no check_on_current_engine has run")
    return _last_check.query(sql)
