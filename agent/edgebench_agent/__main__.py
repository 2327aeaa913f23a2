"""Command line of the board agent: `python3 -m edgebench_agent {info,run}` or `python3 agent.pyz ...`.
Argument parsing and dispatch only: the services are in service.py, detached runs in jobs.py.

stdout belongs to the protocol: it is saved at start and sys.stdout points at stderr, so a stray print
(ours or a library's) can never corrupt the one JSON document the host reads.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from . import __version__
from .protocol import (
    CHOICES,
    OPTION_METAVARS,
    PASS_DEFAULTS,
    PASS_OPTIONS,
    PASS_SWITCHES,
    RUN_OPTION,
    RUN_OPTIONS,
    SCENARIO_NAMES,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    GRAPH_OPTIMIZATION_LEVELS,
    PROTOCOL_VERSION,
    RUN_DEFAULTS,
    RUNTIMES,
    RequestError,
    normalize_run_request,
    failed_reply,
    parse_assignments,
    parse_option,
    pass_blocks,
    parse_scalar,
    scenario_from_flags,
)
from .service import info, run
from .shared.files import write_atomically
from .shared.quantiles import percentile


def _request_from_flags(args):
    raw = {"model": os.path.abspath(args.model)}
    if args.inputs:
        raw["inputs"] = os.path.abspath(args.inputs)
    if args.out:
        raw["out"] = args.out
    raw["values"] = parse_assignments(args.value, "--value", parse_scalar)
    raw["dims"] = parse_assignments(args.dim, "--dim", int)
    raw["provider_options"] = parse_assignments(args.provider_option, "--provider-option", str)
    fields = [option.field for option in RUN_OPTIONS if option.flag] + ["provider", "spin_wait", "runtime"]
    for field in fields:
        value = getattr(args, field)
        if value is not None:
            raw[field] = value
    if args.runtime is None:  # a bundle or a .tflite says which runtime it is for, as on the host
        from .runtimes import runtime_of_file

        found = runtime_of_file(raw["model"])
        if found:
            raw["runtime"] = found
    if args.cpus:
        try:
            raw["cpus"] = [int(c) for c in args.cpus.split(",") if c.strip()]
        except ValueError:
            raise RequestError("--cpus %r must be CPU numbers like 2,3" % args.cpus)
    passes = pass_blocks({"cooldown": args.cooldown, "profile": args.profile, "energy": args.energy},
                         dict((option.name, getattr(args, option.name)) for option in PASS_OPTIONS))
    raw.update(passes)
    if args.profile:
        raw["profile"]["dir"] = os.path.dirname(os.path.abspath(args.out or "x"))
    if args.dataset:
        raw["accuracy"] = {"dataset": os.path.abspath(args.dataset), "batch_size": args.batch_size}
    if args.verbose:
        raw["verbose"] = True
    scenario = _scenario_from_flags(args)
    if scenario is not None:
        raw["scenario"] = scenario
    if bool(args.pipeline) != bool(args.samples):
        raise RequestError("--pipeline and --samples go together: the pipeline's file and the folder of samples it reads")
    if args.pipeline:
        raw["pipeline"] = {"file": os.path.abspath(args.pipeline), "samples": os.path.abspath(args.samples)}
    return raw


def _scenario_from_flags(args):
    return scenario_from_flags(args.scenario, args.samples_per_query, args.concurrency, args.qps, args.latency_bound,
                               args.mlperf)


def _read_request(source):
    try:
        text = sys.stdin.read() if source == "-" else open(source).read()
    except OSError as exc:
        raise RequestError("cannot read request %s: %s" % (source, exc.strerror))
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RequestError("the request is not valid JSON: %s" % exc)


def _option_parser(option):
    """argparse's type= for a run option: protocol.parse_option, its message kept."""
    def parse(text):
        try:
            return parse_option(option, text)
        except RequestError as exc:
            raise argparse.ArgumentTypeError(str(exc))
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so even a usage error answers with one JSON document."""

    def error(self, message):
        raise RequestError(message)


def build_parser():
    d = RUN_DEFAULTS
    parser = _Parser(
        prog="edgebench-agent",
        description="edgebench board agent: measure an ONNX model with onnxruntime on this machine. "
        "Needs only python3 >= 3.8, numpy and onnxruntime.",
    )
    parser.add_argument("--version", action="version", version="edgebench-agent %s (protocol %d)" % (__version__, PROTOCOL_VERSION))
    commands = parser.add_subparsers(dest="command", metavar="{info,run,launch,attach,kill,runs,sha256,clean}")
    commands.required = True
    info_parser = commands.add_parser("info", help="print the versions, execution providers and machine facts as JSON")
    info_parser.add_argument("--cache", metavar="DIR", help="also report the free disk space of this folder")
    for name, text in (("launch", "start the run whose request is in the cache, detached, and follow it"),
                       ("attach", "follow a detached run until it ends, then print its reply"),
                       ("kill", "kill a detached run's process group and record the reason"),
                       ("_job", None), ("_warm", None), ("_launcher", None)):
        # _job is the detached process itself: internal, so it is left out of the help (no help= at all)
        job = commands.add_parser(name, help=text) if text else commands.add_parser(name)
        job.add_argument("--cache", required=True, metavar="DIR", help="the agent's cache folder on this board")
        if name in ("_warm", "_launcher"):  # the warm agent and a plan's launcher (forkserver.py): internal
            continue
        job.add_argument("--run", required=True, metavar="ID", help="run id (a folder under DIR/runs)")
        if name == "launch":
            job.add_argument("--warm", action="store_true",
                             help="fork the run from the board's warm agent (imports done once per plan)")
        if name in ("launch", "_job"):
            job.add_argument("--lock-timeout", type=float, default=600.0, metavar="S",
                             help="wait this long for another benchmark to finish (default 600)")
        if name in ("launch", "attach"):
            job.add_argument("--run-timeout", type=float, metavar="S",
                             help="kill the run (its whole process group) when it runs longer than this")
        if name == "kill":
            job.add_argument("--reason", default="killed on request", help="recorded as the run's error")
            job.add_argument("--kind", default="killed", choices=("killed", "timeout", "interrupted"),
                             help="the error kind recorded (default killed)")
    runs = commands.add_parser("runs", help="list the runs in the cache with their state (JSON)")
    runs.add_argument("--cache", required=True, metavar="DIR")
    sha = commands.add_parser("sha256", help="print the sha256 of files (JSON)")
    sha.add_argument("files", nargs="+")
    clean = commands.add_parser("clean", help="trim the cache to a size budget, least recently used first")
    clean.add_argument("--cache", required=True, metavar="DIR")
    clean.add_argument("--max-bytes", type=int, required=True)
    clean.add_argument("--keep", action="append", default=[], help="file names to keep (the current agent)")
    run = commands.add_parser(
        "run",
        help="benchmark a model",
        description="Benchmark MODEL.onnx, or the JSON request given with --request (what the host sends).",
    )
    run.add_argument("model", nargs="?", help="the .onnx model to run")
    run.add_argument("--request", metavar="FILE", help="read the whole run request as JSON from FILE ('-' = stdin)")
    run.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
    run.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")
    run.add_argument("--inputs", metavar="FILE.npz", help="input arrays by input name (.npz, no pickled objects)")
    run.add_argument("--value", action="append", metavar="NAME=VALUE",
                     help="fill input NAME with VALUE (sample_rate=16000), or give a rank-1 input's values (shape=1,3,4)")
    run.add_argument("--dim", action="append", metavar="NAME=N", help="size of a free dimension, by name (batch=4) or input:axis (x:0=4)")
    for option in RUN_OPTIONS:  # the run options every front shares (protocol.RUN_OPTIONS)
        if option.flag is None:
            continue
        default = d[option.field]
        run.add_argument(option.flag, dest=option.field, type=_option_parser(option),
                         choices=CHOICES.get(option.field), metavar=OPTION_METAVARS[option.kind],
                         help="%s%s" % (option.help, "" if default is None else "  [default: %s]" % (default,)))
    # The old spellings still work, hidden from the help.
    run.add_argument("--intra-op-threads", dest="intra_op_threads", type=_option_parser(RUN_OPTION["threads"]),
                     help=argparse.SUPPRESS)
    run.add_argument("--graph-optimization-level", dest="graph_optimization_level", choices=GRAPH_OPTIMIZATION_LEVELS,
                     help=argparse.SUPPRESS)
    run.add_argument("--runtime", choices=RUNTIMES, help="the runtime that measures the model (default onnxruntime); "
                     "openvino reads an .onnx, ncnn and litert a bundle from `bench convert` (litert also a .tflite)")
    run.add_argument("--provider", metavar="NAME", help="onnxruntime's execution provider (default %s)" % d["provider"])
    run.add_argument("--provider-option", action="append", metavar="KEY=VALUE", help="execution provider option")
    run.add_argument("--cpus", metavar="LIST", help="pin the run to these CPUs, e.g. 2,3")
    spin = run.add_mutually_exclusive_group()
    spin.add_argument("--spin-wait", dest="spin_wait", action="store_const", const=True, help="let onnxruntime threads spin")
    spin.add_argument("--no-spin-wait", dest="spin_wait", action="store_const", const=False, help="no spinning")
    run.add_argument("--cooldown", action="store_true", help="wait until the board is back near its idle temperature first")
    run.add_argument("--profile", action="store_true", help="a separate onnxruntime profiling pass; the trace is written beside --out")
    run.add_argument("--dataset", metavar="FILE.npz", help="labelled data (inputs by name + labels): top-1/top-5 accuracy on this board")
    run.add_argument("--batch-size", type=int, default=32, metavar="N", help="dataset batch when the batch dim is free (32)")
    run.add_argument("--verbose", action="store_true", help="let onnxruntime's own log lines through to stderr")
    run.add_argument("--scenario", choices=SCENARIO_NAMES, metavar="NAME",
                     help="load scenario: single-stream (default), multi-stream, server or offline")
    run.add_argument("--samples-per-query", metavar="N", help="multi-stream: samples per query (8)")
    run.add_argument("--qps", metavar="X|auto", help="server: Poisson arrival rate, or auto with --latency-bound")
    run.add_argument("--latency-bound", metavar="DURATION", help="server: p99 bound, e.g. 33ms (qps auto searches for it)")
    run.add_argument("--concurrency", metavar="K", help="server and offline: worker threads (1)")
    run.add_argument("--mlperf", action="store_true", help="MLPerf LoadGen's minimum durations and query counts (600 s)")
    run.add_argument("--pipeline", metavar="STAGES.py",
                     help="end to end: run this file's load/preprocess/postprocess around the model (runs its code)")
    run.add_argument("--samples", metavar="DIR", help="with --pipeline: the sample files (images, .npy, ...) fed to it")
    run.add_argument("--energy", action="store_true", help="an energy pass: idle baseline, then the model in a loop "
                                                           "while this board's power sensor is read")
    for option in PASS_OPTIONS:  # (after the switches: --energy-seconds goes with --energy)
        run.add_argument(option.flag, dest=option.name, type=_option_parser(option), metavar=option.metavar,
                         help="with %s: %s  [default: %g]" % (PASS_SWITCHES[option.block], option.help,
                                                              PASS_DEFAULTS[option.block][option.key]))
    return parser


def _summary(reply):
    lines = ["model     %s" % reply["request"]["model"]]
    if reply["status"] != "ok":
        lines.append("FAILED    [%s] %s" % (reply["error"]["kind"], reply["error"]["message"]))
        if request_out(reply):
            lines.append("(the full reply, with any traceback, is in %s)" % request_out(reply))
        return "\n".join(lines)
    runtime = reply.get("runtime") or {"name": "onnxruntime", "version": reply["info"]["onnxruntime_version"]}
    lines.append("runtime   %s %s, %s" % (runtime["name"], runtime["version"], ", ".join(reply["providers"])))
    for index, repeat in enumerate(reply["repeats"]):
        samples = sorted(repeat["samples_ns"])
        p50 = percentile(samples, 0.5) / 1e6
        p90 = percentile(samples, 0.9) / 1e6
        lines.append(
            "repeat %d  n=%d  p50 %.3f ms  p90 %.3f ms  first %.3f ms  session %.1f ms"
            % (index + 1, len(samples), p50, p90, repeat["first_inference_ns"] / 1e6, repeat["session_create_ns"] / 1e6)
        )
    for index, repeat in enumerate(reply["repeats"]):
        line = _scenario_line(repeat.get("scenario"))
        if line:
            lines.append("scenario  " + line)
    stages = _stage_line(reply["repeats"])
    if stages:
        lines.append("pipeline  %s over %d samples: %s" % (os.path.basename(reply["pipeline"]["file"]),
                                                            reply["pipeline"]["samples"], stages))
    if reply.get("energy"):
        lines.append("energy    " + _energy_line(reply["energy"]))
    lines.append("peak RSS  %.1f MiB" % (reply["memory"]["peak_rss_bytes"] / 2.0 ** 20))
    from .shared.validity import assess

    verdict = assess(reply.get("telemetry"), reply.get("repeats"))
    lines.append("board     " + ("VALID" if verdict["valid"] else "INVALID: " + "; ".join(verdict["reasons"])))
    for warning in verdict["warnings"]:
        lines.append("warning   " + warning)
    labels = ((reply.get("accuracy") or {}).get("labels") or {}).get("board")
    if labels:
        lines.append("accuracy  top-1 %.2f%% (%d/%d), top-5 %.2f%%" % (labels["top1_pct"], labels["top1_correct"],
                                                                        labels["count"], labels["top5_pct"]))
    top = (reply.get("profile") or {}).get("top_operators") or []
    if top:
        lines.append("profile   " + ", ".join("%s %.0f%%" % (op["op_type"], op["pct"]) for op in top[:5]))
    if request_out(reply):
        lines.append("(full statistics: copy %s home and run `bench import` there)" % request_out(reply))
    else:
        lines.append("(full statistics: run again with --out result.json, copy it home and run `bench import` there)")
    return "\n".join(lines)


def _energy_line(block):
    from .shared.energy import EnergyError, summarize

    if not block.get("available"):
        return "unavailable (%s)" % block.get("reason")
    try:
        figures = summarize(block["kind"], block["readings"], block["idle"], block["load"], block["inferences"],
                            block.get("wrap_uj"), block.get("requested_rate_hz"))
    except EnergyError as exc:
        return "unavailable (%s: %s)" % (block["source"], exc)
    return "%.3f mJ per inference (%.3f above idle), %.2f W average, %.2f W idle; %s, scope %s" % (
        figures["mj_per_inference"], figures["mj_per_inference_above_idle"] or 0.0, figures["average_power_w"],
        figures["idle_power_w"] or 0.0, block["source"], block["scope"])


def _stage_line(repeats):
    """Each pipeline stage's median and share of the end-to-end time, over every repeat."""
    from .shared.pipeline import stage_summary

    summary = stage_summary(repeats)
    if summary is None:
        return None
    return ", ".join("%s %.3f ms (%.0f%%)" % (stage, median / 1e6, share) for stage, (median, share) in summary.items())


def _scenario_line(scenario):
    """The scenario's own figures in one line (the latencies are in the repeat line above)."""
    if not scenario:
        return None
    if scenario["name"] == "multi-stream":
        return "multi-stream: %d queries of %d samples" % (scenario["queries"], scenario["samples_per_query"])
    if scenario["name"] == "offline":
        return "offline: %.1f inferences/s with %d worker(s)" % (scenario["throughput_per_s"], scenario["concurrency"])
    if scenario["name"] == "server":
        delays = sorted(scenario["issue_delays_ns"])
        text = "server: %.4g QPS asked, %.4g achieved, issue delay p99 %.1f us" % (
            scenario["qps"], scenario["achieved_qps"], percentile(delays, 0.99) / 1e3 if delays else 0.0)
        if scenario.get("probes"):
            text += "; %d QPS probes for a p99 bound of %g ms" % (len(scenario["probes"]), scenario["latency_bound_s"] * 1e3)
        return text
    return scenario["name"] + (" (MLPerf minimums)" if scenario.get("mlperf") else "")


def request_out(reply):
    return (reply.get("request") or {}).get("out")


def _missing_dependency(runtime="onnxruntime"):
    """(module, pip name) of numpy or the run's runtime when this Python cannot import it, else None."""
    from .runtimes import IMPORT_NAMES, PIP_NAMES

    for name, pip_name in (("numpy", "numpy " + PIP_NAMES[runtime]), (IMPORT_NAMES[runtime], PIP_NAMES[runtime])):
        try:
            __import__(name)
        except ImportError:
            return name, pip_name
    return None


class _ProtocolStdout(object):
    """Keep the real stdout for the one JSON document; point fd 1 (and sys.stdout) at stderr meanwhile.

    Redirecting the file descriptor, not only sys.stdout, also catches what C and C++ code (onnxruntime,
    numpy's BLAS) writes with printf, which would otherwise corrupt the reply."""

    def __enter__(self):
        self.stream = sys.stdout
        self.saved_fd = None
        try:
            self.stream.flush()
            self.saved_fd = os.dup(1)
            os.dup2(2, 1)
        except (OSError, ValueError, AttributeError):
            self.saved_fd = None  # no real fd 1 (an embedding host): sys.stdout alone is redirected
        sys.stdout = sys.stderr
        return self.stream

    def real_stdout(self):
        """A stream on the real stdout, for a command that answers as it goes (the launcher): fd 1 is stderr
        inside this context."""
        if self.saved_fd is None:
            return self.stream
        return os.fdopen(os.dup(self.saved_fd), "w")

    def __exit__(self, *exc):
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        if self.saved_fd is not None:
            os.dup2(self.saved_fd, 1)
            os.close(self.saved_fd)
        sys.stdout = self.stream
        return False


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    protocol_out = sys.stdout
    machine_readable = True
    try:
        args = build_parser().parse_args(argv)  # --help and --version print to the real stdout
    except RequestError as exc:
        return _usage_error(protocol_out, exc, machine_readable)
    # A JSON document unless a person runs `run MODEL.onnx` at a terminal without --json.
    machine_readable = args.command != "run" or bool(args.request or args.json)
    if args.command in ("run", "_job"):
        from .jobs import interrupt

        signal.signal(signal.SIGTERM, interrupt)  # a polite kill still ends in a reply saying so
    usage = text = reply = None
    code = EXIT_USAGE
    guard = _ProtocolStdout()
    with guard as protocol_out:  # inside: fd 1 is stderr; the answer is written after, to the real one
        try:
            if args.command == "info":
                code, reply = EXIT_OK, info(args.cache)
            elif args.command == "_launcher":  # answers go out as they come, not as one document at the end
                from . import forkserver

                code = forkserver.serve_launches(args.cache, sys.stdin, guard.real_stdout())
            elif args.command in ("launch", "attach", "kill", "_job", "_warm", "runs", "sha256", "clean"):
                code, text = _job_command(args)
            else:
                if args.request:
                    raw = _read_request(args.request)
                elif args.model:
                    raw = _request_from_flags(args)
                else:
                    raise RequestError("run needs MODEL.onnx or --request FILE")
                request = normalize_run_request(raw)
                missing = _missing_dependency(request["runtime"])  # numpy and the one runtime this run uses
                if missing:
                    raise RequestError("%s is not installed for %s: install it with `%s -m pip install %s`"
                                       % (missing[0], sys.executable, os.path.basename(sys.executable), missing[1]))
                if not os.path.exists(request["model"]):
                    raise RequestError("model file not found: %s" % request["model"])
                if not os.path.isfile(request["model"]):  # a folder or a FIFO: reading one would fail or block
                    raise RequestError("model is not a regular file: %s" % request["model"])
                code, reply = run(request, machine_readable)
                if request["out"]:
                    write_atomically(request["out"], json.dumps(reply))
        except RequestError as exc:
            usage = exc
        except (IOError, OSError) as exc:  # e.g. --out in a folder that does not exist, a full disk
            usage = "%s: %s" % (getattr(exc, "filename", None) or "I/O error", exc.strerror or exc)
    if usage is not None:
        return _usage_error(protocol_out, usage, machine_readable)
    if reply is None:  # a job command: its text is the answer (none for the detached job itself)
        if text is not None:
            protocol_out.write(text + "\n")
            protocol_out.flush()
        return code
    protocol_out.write((json.dumps(reply) if machine_readable else _summary(reply)) + "\n")
    protocol_out.flush()
    return code


def _job_command(args):
    """Commands around detached runs and the cache. Each prints one JSON document (the reply, or a listing)."""
    from . import jobs

    if args.command == "_job":
        return jobs.job(args.cache, args.run, args.lock_timeout), None
    if args.command == "_warm":
        from . import forkserver

        return forkserver.serve(args.cache), None
    if args.command == "launch" and args.warm:
        from . import forkserver

        code, text = forkserver.launch_warm(args.cache, args.run, args.lock_timeout, args.run_timeout)
    elif args.command == "launch":
        code, text = jobs.launch(args.cache, args.run, args.lock_timeout, args.run_timeout)
    elif args.command == "attach":
        code, text = jobs.attach(args.cache, args.run, args.run_timeout)
    elif args.command == "kill":
        code, text = jobs.kill(args.cache, args.run, args.reason, args.kind)
    elif args.command == "runs":
        code, text = EXIT_OK, json.dumps(jobs.list_runs(args.cache))
    elif args.command == "sha256":
        from .shared.files import sha256_file

        hashes = {}
        for path in args.files:
            try:
                hashes[path] = sha256_file(path)
            except (IOError, OSError) as exc:
                hashes[path] = None
                sys.stderr.write("cannot read %s: %s\n" % (path, exc))
        code, text = (EXIT_OK if all(hashes.values()) else EXIT_RUN_FAILED), json.dumps(hashes)
    else:
        from .cache import clean

        summary = clean(args.cache, args.max_bytes, keep=tuple(args.keep))
        code, text = (EXIT_OK if "error" not in summary else EXIT_RUN_FAILED), json.dumps(summary)
    return code, text


def _usage_error(protocol_out, exc, machine_readable):
    sys.stderr.write("edgebench-agent: error: %s\n" % exc)
    if machine_readable:
        reply = failed_reply("usage", str(exc), command="usage")
        protocol_out.write(json.dumps(reply) + "\n")
        protocol_out.flush()
    return EXIT_USAGE


def run_as_program():
    """The agent as a process (the command line, the .pyz, a detached job): its answer written, it ends, even if a
    user's pipeline left a thread running that would keep the interpreter alive."""
    import threading

    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run_as_program()
