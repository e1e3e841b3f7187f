# The builder's stdlib smoke script: every module here loads a shared object or a data file
# that ELF scanning alone would miss. Run inside the rootfs (chroot or sandbox); exit 0 = ok.
import bz2, ctypes, ctypes.util, decimal, hashlib, json, lzma, sqlite3, ssl, threading, time
import os, uuid, zlib, zoneinfo, datetime

ctx = ssl.create_default_context()  # loads the CA bundle
assert ctx.cert_store_stats()["x509_ca"] > 0, "no CA certificates loaded"
assert hashlib.sha256(b"x").hexdigest().startswith("2d711642")
assert hashlib.new("md5", b"x").hexdigest()
db = sqlite3.connect(":memory:")
assert db.execute("select 1+1").fetchone() == (2,)
if os.environ.get("SMOKE_UNDER_SECCOMP") == "1":
    # find_library runs `ldconfig -p` in a subprocess, and the sandbox policy refuses new
    # processes by design (fork/vfork EPERM): check that dlopen finds libc by soname instead,
    # which is what find_library's answer would be used for.
    assert ctypes.CDLL("libc.so.6").getpid() == os.getpid()
else:
    libc_name = ctypes.util.find_library("c")
    assert libc_name is not None, "ctypes.util.find_library('c') is None"
    ctypes.CDLL(libc_name).getpid()
assert lzma.decompress(lzma.compress(b"x" * 100)) == b"x" * 100
assert bz2.decompress(bz2.compress(b"y" * 100)) == b"y" * 100
assert zlib.decompress(zlib.compress(b"z")) == b"z"
assert str(decimal.Decimal("1.10") + decimal.Decimal("2.20")) == "3.30"
assert uuid.uuid4().version == 4
assert json.loads(json.dumps({"a": [1, 2]})) == {"a": [1, 2]}
tz = zoneinfo.ZoneInfo("Asia/Shanghai")
assert datetime.datetime(2024, 1, 1, tzinfo=tz).utcoffset() == datetime.timedelta(hours=8)

# A daemon thread still running at exit: glibc dlopen()s libgcc_s.so.1 to unwind it.
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("smoke ok")
