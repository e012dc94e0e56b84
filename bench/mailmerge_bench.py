"""Benchmark: `mailer campaign send` against mailmerge, the simple Python tool (issue 17,
point 5), into the same Postfix smtp-sink on loopback, as whole processes.

mailmerge (https://github.com/awdeorio/mailmerge, from PyPI) is installed by this bench
into its own virtual environment under /tmp (never a dependency of the project). Both
send the same newsletter HTML to the same N people:

  mailer     `mailer campaign send SLUG --yes --json` in a fresh `mailer init` project of N
             confirmed members (bench/delivery_bench.py's project and template), with the
             project's own delivery settings except the pace (rate 0: no pacing) and the
             transport (the sink): 4 SMTP connections, a new one every 100 messages, no
             DKIM key (`--dkim ed25519` adds one; mailmerge signs nothing);
  mailmerge  `mailmerge --no-dry-run --no-limit --output-format raw` with a template whose
             body is the HTML part of mailer's own preview of that template, with the
             greeting's first name and the subject's as `{{first_name}}`, a CSV of the
             same people; its printout of every message goes to /dev/null.

What each does per message that the other does not:

  mailer     a text part beside the HTML (multipart/alternative, both rendered per
             person); per-person unsubscribe links and List-Unsubscribe(-Post), a
             Message-ID, List-Id, Feedback-ID, a VERP bounce address; every delivery's
             state written to SQLite (a durable "sending" mark before the message, the
             result after); and once per send: the audience snapshot (a delivery row per
             person), the template prepared (Jinja2, CSS inlined, the text made from the
             HTML), a helper process that renders while the sender talks SMTP.
  mailmerge  parses each rendered message back with the stdlib's email package, runs its
             Markdown/attachment transforms (no-ops here), flattens it with the stdlib
             generator, prints it to stdout, and opens a new SMTP connection per message
             (connect, EHLO, MAIL, RCPT, DATA, QUIT: about six round trips, against
             mailer's two pipelined ones on a reused connection).

Each size is sent `--rounds` times by each, alternating (mailer first in odd rounds,
mailmerge first in even ones), each mailer send a fresh campaign of the same project;
wall seconds (a monotonic clock from the start of the process to its reaping) and CPU
seconds (user + system of the process and its helpers, wait4) per send, peak RSS of the
process tree (sampled every 20 ms); medians, and per round the ratio mailmerge wall /
mailer wall.

    .venv/bin/python bench/mailmerge_bench.py                       # 2,000 and 20,000
    .venv/bin/python bench/mailmerge_bench.py --sizes 2000 --rounds 5
    .venv/bin/python bench/mailmerge_bench.py --dkim ed25519
    .venv/bin/python bench/mailmerge_bench.py --connections 16      # not the default

Needs /usr/sbin/smtp-sink (Debian package postfix) and network access to PyPI the first
time (the venv is kept in --venv for the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.delivery_bench import (  # noqa: E402 - after the path
    SINK,
    create_campaign,
    free_port,
    make_project,
    signing,
    start_sink,
    tree_rss,
)

MAILMERGE = "mailmerge==2.3.0"


def mailmerge_venv(where: Path) -> Path:
    """The mailmerge command, installed from PyPI into its own venv (made once)."""
    command = where / "bin" / "mailmerge"
    if not command.exists():
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        subprocess.run([str(where / "bin" / "pip"), "install", "-q", MAILMERGE], check=True)
    return command


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            keep_stdout: bool = True) -> dict[str, float | str]:
    """Run `cmd` as a whole process: wall seconds from its start to its reaping (wait4
    blocks; no polling delay), CPU seconds of it and its children, peak RSS of its
    process tree (sampled every 20 ms by a thread) and its stdout (or /dev/null)."""
    peak = [0]
    done = threading.Event()

    def sample(pid: int) -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], tree_rss(pid))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out if keep_stdout else subprocess.DEVNULL,
                                stderr=err)
        sampler = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed (exit {proc.returncode}):\n"
                         f"{stderr[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": max(peak[0], usage.ru_maxrss * 1024) / 2**20,
            "stdout": stdout.decode(errors="replace")}


GREETING = "Beste An,"  # the preview's sample subscriber, in the template's greeting


def mailmerge_files(folder: Path, n: int, port: int, html: str) -> list[str]:
    """mailmerge's template, database and server configuration for the project's n
    people; its arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    if html.count(GREETING) != 1:
        raise SystemExit(f"the preview's HTML does not greet {GREETING!r} once")
    # The HTML as mailer sends it (Jinja2 leaves a raw block alone), its greeting personal
    body = ("{% raw %}" + html.replace(GREETING, "{% endraw %}Beste {{first_name}},{% raw %}")
            + "{% endraw %}")
    (folder / "template.txt").write_text(
        "TO: {{email}}\nSUBJECT: {{first_name}}, ons nieuws\n"
        "FROM: Voorbeeld vzw <nieuws@example.be>\nCONTENT-TYPE: text/html\n\n" + body)
    with (folder / "people.csv").open("w") as fh:  # delivery_bench.add_people's people
        fh.write("email,first_name\n")
        for i in range(n):
            fh.write(f"person.{i}@example.be,Naam{i}\n")
    (folder / "server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nratelimit = 0\n")
    return ["--template", str(folder / "template.txt"), "--database",
            str(folder / "people.csv"), "--config", str(folder / "server.conf"),
            "--no-dry-run", "--no-limit", "--output-format", "raw"]


def byte_compile(env: dict[str, str]) -> None:
    """Compile the mailer package the sends will import, as pip does at install (mailmerge's
    venv has its .pyc files): with PYTHONDONTWRITEBYTECODE set, as on this machine, a
    fresh checkout would otherwise compile ~80 modules from source at every start."""
    subprocess.run([sys.executable, "-c", "import compileall, os, mailer; compileall."
                    "compile_dir(os.path.dirname(mailer.__file__), quiet=1)"], env=env,
                   check=True)


def preview_html(folder: Path, env: dict[str, str]) -> str:
    """The HTML part of the bench template as mailer sends it (for mailmerge's body)."""
    shown = subprocess.run([sys.executable, "-m", "mailer", "preview", "--template",
                            "templates/bench.html.j2", "--out", "preview", "--json"],
                           cwd=folder, env=env, check=True, capture_output=True)
    return (folder / json.loads(shown.stdout)["files"]["html"]).read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,20000",
                        help="recipients per send, comma-separated (default 2000,20000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dkim", choices=["none", "ed25519", "rsa"], default="none")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/mailmerge-bench-venv"))
    parser.add_argument("--connections", type=int,
                        help="mailer's SMTP connections (default: the project's, 4)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not Path(SINK).exists():
        raise SystemExit("smtp-sink not found: apt-get install postfix (the daemon is not "
                         "needed; stop it if the install starts it)")
    mailmerge = mailmerge_venv(args.venv)
    port = free_port()
    sink = start_sink(port)
    tmp = Path(tempfile.mkdtemp(prefix="mailmerge-bench-"))
    try:
        print(f"smtp-sink on 127.0.0.1:{port}; sizes {', '.join(f'{n:,}' for n in sizes)};"
              f" {args.rounds} rounds; mailer DKIM {args.dkim}, connections "
              f"{args.connections or 'the default (4)'}; {MAILMERGE}; load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores",
              flush=True)
        start = time.perf_counter()
        setups = {}
        for n in sizes:
            folder = tmp / f"mailer-{n}"
            algorithms = [] if args.dkim == "none" else [args.dkim]
            env, keys, _ = make_project(folder, n, port, algorithms, None)
            # the project's own connections (4) and messages per connection (100), as
            # `mailer init` writes them: delivery_bench.py's 16 and 100,000 are not defaults
            env = {k: v for k, v in env.items() if k not in (
                "MAILER_DELIVERY__CONNECTIONS", "MAILER_DELIVERY__MESSAGES_PER_CONNECTION")}
            if args.connections:
                env["MAILER_DELIVERY__CONNECTIONS"] = str(args.connections)
            byte_compile(env)
            if args.dkim != "none":
                env = signing(env, keys, args.dkim)
            for r in range(args.rounds):
                create_campaign(folder, env, f"bench-{r + 1}")
            argv = mailmerge_files(tmp / f"mailmerge-{n}", n, port, preview_html(folder, env))
            setups[n] = (folder, env, argv)
        print(f"(setup: {time.perf_counter() - start:.0f} s)\n", flush=True)
        results: dict[tuple[int, str], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for n in sizes:
                folder, env, argv = setups[n]
                order = ["mailer", "mailmerge"] if r % 2 == 0 else ["mailmerge", "mailer"]
                for tool in order:
                    if tool == "mailer":
                        got = measure([sys.executable, "-m", "mailer", "campaign", "send",
                                       f"bench-{r + 1}", "--yes", "--json"], env=env,
                                      cwd=folder)
                        sent = json.loads(got["stdout"])["sent"]  # type: ignore[arg-type]
                        if sent != n:
                            raise SystemExit(f"mailer sent {sent:,} of {n:,}")
                    else:  # it exits with an error at the first message not accepted
                        got = measure([str(mailmerge), *argv], cwd=tmp, keep_stdout=False)
                    results.setdefault((n, tool), []).append(got)
                    print(f"round {r + 1} {n:>7,} {tool:<10} wall {got['wall']:7.2f} s  "
                          f"CPU {got['cpu']:7.2f} s  {n / got['wall']:7,.0f} msgs/s  "
                          f"peak {got['rss_mb']:4.0f} MB  (load "
                          f"{os.getloadavg()[0]:.1f})", flush=True)
        print()
        for n in sizes:
            ours, theirs = results[(n, "mailer")], results[(n, "mailmerge")]
            ratios = [b["wall"] / a["wall"] for a, b in zip(ours, theirs, strict=True)]
            for tool, runs in (("mailer", ours), ("mailmerge", theirs)):
                walls, cpus = [x["wall"] for x in runs], [x["cpu"] for x in runs]
                print(f"{n:>7,} {tool:<10} wall {statistics.median(walls):7.2f} s "
                      f"[{min(walls):.2f}-{max(walls):.2f}]  CPU "
                      f"{statistics.median(cpus):7.2f} s [{min(cpus):.2f}-{max(cpus):.2f}]"
                      f"  {n / statistics.median(walls):7,.0f} msgs/s")
            print(f"{n:>7,} mailer is {statistics.median(ratios):.2f}x as fast as mailmerge "
                  f"(wall, median of the rounds' ratios; each round "
                  f"{', '.join(f'{x:.2f}' for x in ratios)})")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
