"""A real OpenLDAP slapd for tests and benchmarks: own slapd.conf in a temporary directory, foreground,
127.0.0.1 on free ports, optional TLS with a throwaway CA (test-peers.md "OpenLDAP slapd", ldap.md §5).

    with Slapd(tmp_path, tls=make_tls(tmp_path / "tls")) as server:
        server.slapadd(ldif_text)        # offline, before start: fast
        server.start()
        server.ldapadd(more_ldif)        # online, as the root DN
        server.kill(); server.start()    # an outage, then the same ports again

Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import attrs

REPO = Path(__file__).resolve().parent.parent
SCHEMA_DIR = Path(os.environ.get("SCHEMA", "/etc/ldap/schema"))
VIPSENSE_SCHEMA = REPO / "plugins" / "stores" / "ldap" / "vipsense.schema"
SUFFIX = "dc=bank,dc=example"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret"
SERVICE_DN = f"cn=vipsense,ou=services,{SUFFIX}"
SERVICE_PW = "s3rvice-Pa55-不要泄露"  #: non-ASCII on purpose: it must survive the bind
CUSTOMERS = f"ou=customers,{SUFFIX}"
CARDS = f"ou=cards,{SUFFIX}"
INDEXES = (
    "objectClass eq",
    "employeeNumber eq",
    "displayName eq,sub",
    "vipsenseEpc eq",
    "vipsenseCustomerNo eq",
    "vipsenseIdNumber eq",
    "vipsenseCardStatus eq,pres",
)
#: the suffix, the two bases and the service account the store binds as
BASE_LDIF = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: bank
o: Example Bank

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: vipsense
userPassword: {SERVICE_PW}

dn: {CUSTOMERS}
objectClass: organizationalUnit
ou: customers

dn: {CARDS}
objectClass: organizationalUnit
ou: cards

"""
#: the service account reads everything and writes cards; customers are read-only master data
DEFAULT_ACL = f"""\
access to attrs=userPassword
    by anonymous auth
    by * none
access to dn.subtree="{CARDS}"
    by dn.exact="{SERVICE_DN}" write
    by * read
access to *
    by * read
"""


def missing_tools() -> list[str]:
    """The OpenLDAP programs that are not installed (empty when slapd tests can run)."""
    tools = ("slapd", "slapadd", "slaptest", "ldapadd", "ldapsearch", "openssl")
    return [t for t in tools if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin") is None]


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin")
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (apt-get install slapd ldap-utils)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:3])} failed ({result.returncode}): {result.stderr or result.stdout}"
        )
    return result


# -- certificates ------------------------------------------------------------------------------------


@attrs.frozen
class TlsFiles:
    ca: Path  #: the CA that signed the server and client certificates
    cert: Path  #: server certificate for 127.0.0.1 / localhost
    key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path  #: an unrelated CA: trusting only it must fail the handshake


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _run([
        _tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ])  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _run([
        _tool("openssl"), "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr),
    ])  # fmt: skip
    _run([
        _tool("openssl"), "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext),
    ])  # fmt: skip
    return cert, key


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1, a client certificate and a wrong CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "vipsense-test-ca")
    server = _leaf(
        directory,
        "server",
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    client = _leaf(
        directory,
        "client",
        ca,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    wrong, _ = _ca(directory, "some-other-ca")
    return TlsFiles(ca[0], server[0], server[1], client[0], client[1], wrong)


# -- the server --------------------------------------------------------------------------------------


class Slapd:
    """One slapd with its own config, database and ports under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        tls: TlsFiles | None = None,
        verify_client: str | None = None,  #: slapd TLSVerifyClient: "demand" needs a client cert
        acl: str = DEFAULT_ACL,
        db_extra: str = "",  #: more database directives, e.g. ``limits``
        maxsize: int = 1 << 30,
    ) -> None:
        self.root = root
        self.tls = tls
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = root / "db"
        self.db.mkdir(exist_ok=True)
        self.conf = root / "slapd.conf"
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen | None = None
        self.env = {**os.environ, "TMPDIR": str(root), "TMP": str(root)}  # ldap.md §5 gotcha 1
        self._write_conf(tls, verify_client, acl + db_extra, maxsize)

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def _write_conf(self, tls: TlsFiles | None, verify_client: str | None, acl: str, maxsize: int) -> None:
        schemas = [SCHEMA_DIR / f"{n}.schema" for n in ("core", "cosine", "nis", "inetorgperson")]
        lines = [f"include {s}" for s in [*schemas, VIPSENSE_SCHEMA]]
        lines += [
            f"pidfile {self.root / 'slapd.pid'}",
            f"argsfile {self.root / 'slapd.args'}",
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
            "sizelimit unlimited",  # ldap.md §5 gotcha 7: the default 500 also caps paged searches
            "loglevel 0",
        ]
        if tls:
            lines += [
                f"TLSCACertificateFile {tls.ca}",
                f"TLSCertificateFile {tls.cert}",
                f"TLSCertificateKeyFile {tls.key}",
            ]
            if verify_client:
                lines.append(f"TLSVerifyClient {verify_client}")
        lines += [
            "database mdb",
            f"maxsize {maxsize}",  # ldap.md §5 gotcha 8: the 10 MB default is too small
            f'suffix "{SUFFIX}"',
            f'rootdn "{ROOT_DN}"',
            f"rootpw {ROOT_PW}",
            f"directory {self.db}",
            *(f"index {i}" for i in INDEXES),
            acl,
        ]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        _run([_tool("slaptest"), "-f", str(self.conf), "-u", "-Q"], env=self.env)

    def slapadd(self, ldif: str | Path) -> float:
        """Load LDIF offline (slapd must be stopped); returns the seconds it took."""
        assert self.proc is None, "slapadd needs slapd stopped"
        path = Path(ldif) if isinstance(ldif, Path) else self.root / "load.ldif"
        if not isinstance(ldif, Path):
            path.write_text(ldif, encoding="utf-8")
        t0 = time.perf_counter()
        _run([_tool("slapadd"), "-f", str(self.conf), "-l", str(path), "-q"], env=self.env)
        return time.perf_counter() - t0

    def start(self, timeout: float = 10.0) -> None:
        urls = self.uri + "/" + (f" {self.ldaps_uri}/" if self.tls else "")
        log = (self.root / "slapd.log").open("ab")
        self.proc = subprocess.Popen(
            [_tool("slapd"), "-f", str(self.conf), "-h", urls, "-d", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: {(self.root / 'slapd.log').read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.01)
                continue
            probe = subprocess.run(
                [_tool("ldapsearch"), "-x", "-H", self.uri, "-b", "", "-s", "base", "-LLL", "1.1"],
                capture_output=True,
                env=self.env,
                timeout=5,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"slapd did not answer on {self.uri} within {timeout} s")

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen slapd cannot act on SIGTERM
            proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)  # ldap.md §5 gotcha 9: the PID must be gone before the port is reused

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """An outage: SIGKILL, and wait until the process is gone."""
        self._end(signal.SIGKILL)

    def freeze(self) -> None:
        """A hung server: the kernel still accepts connections, nothing answers.  Returns once every
        thread is stopped (SIGSTOP is delivered asynchronously)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
            except FileNotFoundError:  # a thread ended while we looked
                continue
            if all(state in "Tt" for state in states):
                return
            time.sleep(0.001)
        raise RuntimeError("slapd did not stop")

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def _client(self, tool: str, ldif: str, *args: str) -> str:
        cmd = [_tool(tool), "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PW, *args]
        return _run(cmd, input=ldif, env=self.env).stdout

    def ldapadd(self, ldif: str | Path) -> float:
        """Add entries online as the root DN; returns the seconds it took."""
        text = ldif.read_text(encoding="utf-8") if isinstance(ldif, Path) else ldif
        t0 = time.perf_counter()
        self._client("ldapadd", text)
        return time.perf_counter() - t0

    def ldapmodify(self, ldif: str) -> None:
        self._client("ldapmodify", ldif)

    def ldapdelete(self, *dns: str) -> None:
        self._client("ldapdelete", "", *dns)

    def __enter__(self) -> Slapd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a fictional directory ---------------------------------------------------------------------------

SURNAMES = ("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "Wong", "Lee", "Chan", "O'Brien")
GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "洋", "Ada", "Bo", "Mei-Ling", "Zoë")
COMPANIES = (None, "华兴贸易有限公司", "Acme Holdings", "东方精密制造", "Harbour, Lane & Co")
TIERS = ("standard", "gold", "platinum", "diamond")
BRANCHES = ((), (), ("SZ001",), ("SZ001", "SZ002"), ("GZ010",))


def customer_no(i: int) -> str:
    return f"V{i:07d}"


def card_epc(i: int) -> str:
    return f"E2801170{i:016X}"


def fake_jpeg(i: int) -> bytes:
    """Bytes that start and end like a JPEG (the directory stores them as they are)."""
    return b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big") * 8 + b"\xff\xd9"


def fictional_customers(n: int):
    """``n`` deterministic customers; many Chinese names, every 10th with a photo."""
    import datetime as dt

    from vipsense.model import Customer, Photo

    for i in range(n):
        yield Customer(
            customer_no=customer_no(i),
            name=SURNAMES[i % len(SURNAMES)] + GIVEN[(i // len(SURNAMES)) % len(GIVEN)],
            tier=TIERS[i % len(TIERS)],
            company=COMPANIES[i % len(COMPANIES)],
            id_number=f"3101151980{i:07d}" + "0123456789X"[i % 11],
            mobile=f"139{i:08d}",
            usual_business="对公结算" if i % 3 == 0 else None,
            client_manager=f"cm-{i % 40}",
            photo=Photo(fake_jpeg(i)) if i % 10 == 0 else None,
            consent=i % 2 == 0,
            consent_date=dt.date(2024, 1, 1) + dt.timedelta(days=i % 365) if i % 2 == 0 else None,
        )


def fictional_cards(n: int):
    """One card per customer; every 97th lost; some dated, some bound to branches or a TID."""
    import datetime as dt

    from vipsense.model import Card, CardStatus

    for i in range(n):
        yield Card(
            epc=card_epc(i),
            customer_no=customer_no(i),
            status=CardStatus.LOST if i % 97 == 0 else CardStatus.ACTIVE,
            tier=TIERS[i % len(TIERS)] if i % 5 == 0 else None,
            valid_from=dt.date(2024, 1, 1) if i % 7 == 0 else None,
            valid_until=dt.date(2030, 12, 31) if i % 7 == 0 else None,
            allowed_branches=BRANCHES[i % len(BRANCHES)],
            tid=f"E2003412{i:016X}" if i % 11 == 0 else None,
        )


def population_ldif(path: Path, n: int, customers=(), cards=()) -> int:
    """BASE_LDIF, ``n`` fictional customers and their cards, then ``customers`` and ``cards``, as LDIF
    through the project's converter (python-ldap's LDIF writer); returns the entries written."""
    import itertools

    from vipsense.plugins.stores.ldap.ldif import card_record, customer_record, write_ldif
    from vipsense.plugins.stores.ldap.settings import CardSettings, CustomerSettings

    cs, ks = CustomerSettings(base=CUSTOMERS), CardSettings(base=CARDS)
    records = itertools.chain(
        (customer_record(c, cs) for c in itertools.chain(fictional_customers(n), customers)),
        (card_record(c, ks) for c in itertools.chain(fictional_cards(n), cards)),
    )
    with path.open("w", encoding="utf-8") as out:
        out.write(BASE_LDIF)
        return write_ldif(records, out) + BASE_LDIF.count("dn: ")
