"""
What a run shows: the progress line on stderr while it goes, then the
figures of every server side by side with their ratios to the baseline, as
a table or as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional


def percentile(ordered: list[int], q: float) -> Optional[float]:
    """The C{q} quantile of sorted nanoseconds, in milliseconds; None when there are none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


class Progress:
    """One line on stderr, rewritten each second, with the rate since the last."""

    def __init__(self, label: str, unit: str, quiet: bool) -> None:
        self.label, self.unit, self.quiet = label, unit, quiet
        self.started = self.last_time = time.monotonic()
        self.last = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        if self.quiet or now - self.last_time < 0.9:
            return
        rate = (count - self.last) / (now - self.last_time)
        self.last, self.last_time = count, now
        line = (f"{self.label:>10}  {now - self.started:5.1f} s  {count:>12,} {self.unit}"
                f"  {rate:>10,.0f}/s")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and not self.quiet and self.last:
            print(file=sys.stderr)


PAIR_ROWS = [
    ("msgs_per_s", "delivered msgs/s", "{:,.0f}"),
    ("p50_ms", "latency p50 ms", "{:.3f}"),
    ("p99_ms", "latency p99 ms", "{:.3f}"),
    ("p999_ms", "latency p99.9 ms", "{:.3f}"),
    ("max_ms", "latency max ms", "{:.2f}"),
    ("sent", "sent", "{:,}"),
    ("delivered", "delivered", "{:,}"),
    ("lost", "lost", "{:,}"),
    ("duplicated", "duplicated", "{:,}"),
    ("refused", "refused by server", "{:,}"),
    ("closed", "connections closed", "{:,}"),
    ("server_cpu_s", "server CPU s", "{:.2f}"),
    ("server_cpu_percent", "server CPU % of a core", "{:.1f}"),
    ("server_peak_rss_mb", "server peak RSS MB", "{:.1f}"),
    ("msgs_per_cpu_s", "msgs per server CPU s", "{:,.0f}"),
    ("bench_cpu_s", "load generator CPU s", "{:.2f}"),
    ("redis_cpu_s", "Redis CPU s", "{:.2f}"),
]
IDLE_ROWS = [
    ("connections", "connections", "{:,}"),
    ("connect_s", "connect + login s", "{:.1f}"),
    ("rss_before_mb", "server RSS before MB", "{:.1f}"),
    ("rss_after_mb", "server RSS after MB", "{:.1f}"),
    ("rss_per_conn_kb", "server RSS per conn KB", "{:.2f}"),
    ("idle_cpu_s", "server CPU s idle", "{:.2f}"),
    ("idle_cpu_percent", "server CPU % idle", "{:.2f}"),
    ("heartbeats", "heartbeats sent", "{:,}"),
    ("answered", "heartbeats answered", "{:,}"),
    ("closed", "connections closed", "{:,}"),
]
STORM_ROWS = [
    ("devices", "devices", "{:,}"),
    ("online", "online", "{:,}"),
    ("failures", "failures", "{:,}"),
    ("all_online_s", "all online after s", "{:.2f}"),
    ("logins_per_s", "logins/s", "{:,.0f}"),
    ("online_p50_ms", "online p50 ms", "{:.1f}"),
    ("online_p99_ms", "online p99 ms", "{:.1f}"),
    ("server_cpu_s", "server CPU s", "{:.2f}"),
    ("server_rss_mb", "server RSS after MB", "{:.1f}"),
    ("listen_overflows", "listen queue overflows", "{:,}"),
    ("bench_cpu_s", "load generator CPU s", "{:.2f}"),
]
# Rows shown only when some run has the figure.
OPTIONAL = ("redis_cpu_s",)
# Figures where a ratio to the baseline says something.
RATIOS = ("msgs_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms", "server_cpu_s",
          "server_cpu_percent", "server_peak_rss_mb", "msgs_per_cpu_s", "rss_per_conn_kb",
          "idle_cpu_s", "all_online_s", "logins_per_s", "online_p50_ms", "online_p99_ms",
          "server_rss_mb")


def cluster_summary(runs: dict[str, dict]) -> Optional[dict[str, Optional[float]]]:
    """
    What splitting pairs across nodes costs (C{--nodes}): cross-node msgs/s
    as a share of same-node, and the p50/p99 latency it adds.
    """
    same, cross = runs.get("same_node"), runs.get("cross_node")
    if same is None or cross is None:
        return None

    def added(key: str) -> Optional[float]:
        if cross.get(key) is None or same.get(key) is None:
            return None
        return cross[key] - same[key]

    return {"cross_to_same_msgs": cross["msgs_per_s"] / same["msgs_per_s"]
            if same.get("msgs_per_s") else None,
            "added_p50_ms": added("p50_ms"), "added_p99_ms": added("p99_ms")}


def ratios(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Every run's figures as ratios to the baseline's (the first peer run)."""
    names = list(runs)
    base = runs.get("mosquitto") or runs.get("same_node") or (
        runs[names[1]] if len(names) > 1 else None)
    if base is None:
        return {}
    out = {}
    for name, figures in runs.items():
        if figures is base:
            continue
        out[name] = {k: figures[k] / base[k] for k in RATIOS
                     if figures.get(k) is not None and base.get(k)}
    return out


def table(runs: dict[str, dict], rows: list, brokers: dict[str, str]) -> str:
    """The figures of every run side by side, and each against the baseline."""
    names = list(runs)
    rel = ratios(runs)
    header = ["", *[brokers[n] for n in names]]
    rel_names = [n for n in names if n in rel]
    base_name = next((brokers[n] for n in names if n not in rel and rel), "")
    header += [f"{brokers[n]}/{base_name}" for n in rel_names]
    lines = [header]
    for key, label, fmt in rows:
        row = [label]
        for name in names:
            value = runs[name].get(key)
            row.append("-" if value is None else fmt.format(value))
        for name in rel_names:
            value = rel[name].get(key)
            row.append("" if value is None else f"{value:.2f}x")
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(r)).rstrip() for r in lines)


def mode(args: argparse.Namespace) -> str:
    """Which kind of run the options ask for: "idle", "storm" or "pairs"."""
    if args.idle is not None:
        return "idle"
    return "storm" if args.storm is not None else "pairs"


def show(args: argparse.Namespace, runs: dict[str, dict], brokers: dict[str, str]) -> None:
    """Print the scenario and every run's figures: a table, or JSON with C{--json}."""
    kind = mode(args)
    over = "TLS" if args.tls else "plain TCP"
    if kind == "idle":
        scenario = {"idle": args.idle, "idle_time": args.idle_time,
                    "heartbeat": args.heartbeat, "procs": args.procs}
        title = (f"idle fleet: {args.idle:,} logged-in connections over {over}, a heartbeat "
                 f"every {args.heartbeat:g} s, measured over {args.idle_time:g} s")
        rows = IDLE_ROWS
    elif kind == "storm":
        scenario = {"storm": args.storm, "storm_timeout": args.storm_timeout,
                    "procs": args.procs}
        title = (f"reconnect storm: {args.storm:,} devices connect and log in at once over "
                 f"{over}, {args.procs} load process(es)")
        rows = STORM_ROWS
    else:
        scenario = {"pairs": args.pairs, "payload": args.payload, "rate": args.rate,
                    "window": args.window, "ack": args.ack, "duration": args.duration,
                    "warmup": args.warmup, "procs": args.procs}
        rate = f"{args.rate:,.0f} msgs/s in total" if args.rate else \
            "one message in flight per sender (request/response)" if args.window == 1 else \
            f"as fast as possible, window {args.window} per sender"
        title = (f"{args.pairs:,} pairs over {over}, {args.payload}-byte payload, {rate}, "
                 f"receivers {'ack' if args.ack else 'do not ack'}, {args.duration:g} s "
                 f"after {args.warmup:g} s warm-up, {args.procs} load process(es)")
        if "mosquitto" in args.peer:
            scenario["mqtt_qos"] = args.mqtt_qos
            title += f"; Mosquitto at QoS {args.mqtt_qos}"
        if getattr(args, "nodes", None):
            scenario["nodes"] = args.nodes
            title += (f"; through {args.nodes} cluster nodes on one Redis, each pair on one "
                      "node (same-node) or split across two (cross-node)")
        rows = PAIR_ROWS
    scenario["tls"] = args.tls
    summary = cluster_summary(runs)
    if args.json:
        found = {"scenario": scenario, "runs": runs, "ratios": ratios(runs)}
        if summary is not None:
            found["cluster"] = summary
        print(json.dumps(found, indent=2))
        return
    print(title)
    print(table(runs, [row for row in rows if any(row[0] in f for f in runs.values())
                       or row[0] not in OPTIONAL], brokers))
    if summary is not None:
        share, p50, p99 = (summary["cross_to_same_msgs"], summary["added_p50_ms"],
                           summary["added_p99_ms"])
        print(f"cross-node / same-node: {share:.2f}x msgs/s (target >= 0.5x); "
              f"latency added p50 {p50:+.3f} ms, p99 {p99:+.3f} ms (target p99 < 2 ms "
              "at 5,000 msgs/s)" if share is not None and p50 is not None and p99 is not None
              else "cross-node / same-node: no figures")
    for name, figures in runs.items():
        for why, times in (figures.get("failure_reasons") or {}).items():
            print(f"{brokers[name]}: {times:,} failed: {why}")
