"""What a build says it is: `paymentd --version` (release, commit, store
schemas, the libraries it runs with) and the paymentd_build_info gauge of
/metrics, which must say the same."""

import os
import re
import subprocess

from harness import check, eq, metrics_text, run_binary, test

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
LIBRARIES = ["libmicrohttpd", "jansson", "sqlite", "libpq", "libmongoc", "nats", "libcurl",
             "openssl"]


def _release():
    with open(os.path.join(ROOT, "VERSION")) as f:
        return f.read().strip()


def _version_fields(binary, flag):
    rc, out, err = run_binary(binary, [flag])
    eq(rc, 0, "paymentd %s: exit status" % flag)
    eq(err, "", "paymentd %s: stderr" % flag)
    lines = out.splitlines()
    check(lines, "paymentd %s printed nothing" % flag)
    fields = []
    for line in lines:
        m = re.fullmatch(r"([a-z_]+) (\S+)", line)
        check(m, "paymentd %s: line %r is not 'name value'" % (flag, line))
        fields.append((m.group(1), m.group(2)))
    return fields


@test
def version_flag_names_release_commit_schemas_and_libraries(ctx):
    fields = _version_fields(ctx.binary, "--version")
    eq(fields[0], ("paymentd", _release()), "first line (the VERSION file's release)")
    got = dict(fields)
    eq(_version_fields(ctx.binary, "-V"), fields, "paymentd -V")
    # The commit is the tree's when it was built in a git clone of it.
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0 and os.path.exists(os.path.join(ROOT, ".git")):
        check(re.fullmatch(r"[0-9a-f]{12}", got["commit"]),
              "commit %r: expected 12 hex digits" % got["commit"])
    for name in ("sqlite_store_schema", "postgresql_store_schema", "mongodb_store_schema"):
        check(re.fullmatch(r"[1-9][0-9]*", got.get(name, "")),
              "%s: %r, expected a schema version" % (name, got.get(name)))
    for lib in LIBRARIES:
        check(re.fullmatch(r"[0-9][0-9A-Za-z.+~-]*", got.get(lib, "")),
              "%s: %r, expected its version" % (lib, got.get(lib)))
    # --version wins over a subcommand and over other flags, and needs no store.
    eq(_version_fields(ctx.binary, "--version"), fields, "a second run")
    rc, out, err = run_binary(ctx.binary, ["worker", "--version"])
    eq((rc, out.splitlines()[:1]), (0, ["paymentd " + _release()]), "paymentd worker --version")


@test
def build_info_metric_says_what_version_says(ctx):
    fields = dict(_version_fields(ctx.binary, "--version"))
    body = metrics_text(ctx.srv.port)
    check("# TYPE paymentd_build_info gauge" in body, "no TYPE line for paymentd_build_info")
    lines = [l for l in body.splitlines() if l.startswith("paymentd_build_info{")]
    eq(len(lines), 1, "paymentd_build_info series")
    m = re.fullmatch(r"paymentd_build_info\{(.*)\} 1", lines[0])
    check(m, "paymentd_build_info line %r" % lines[0])
    labels = dict(re.findall(r'([a-z_]+)="([^"\\]*)"', m.group(1)))
    want = dict(fields)
    want["version"] = want.pop("paymentd")
    eq(labels, want, "paymentd_build_info's labels against --version")
