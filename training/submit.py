"""CLI: `python -m training.submit --deadline 8h --threshold 200 -- python -m training.fl_job ...`.

Also `list`, `cancel ID` and `run` (resume every pending job after a restart).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from datetime import datetime, timezone

from training.clock import SystemClock
from training.errors import ConfigError, TrainingError
from training.job_store import FileJobStore, JobStore, RedisJobStore
from training.settings import (
    CarbonSettings,
    StoreSettings,
    parse_deadline_s,
    parse_duration_s,
    validated,
)

_COMMANDS = {"submit", "list", "cancel", "run"}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", help="Ray dashboard address (default: RAY_ADDRESS)")
    common.add_argument("--state-file", help="pending-job state file (AEGIS_SUBMITTER_STATE_FILE)")
    common.add_argument("--redis-url", help="keep pending jobs in Redis instead of a file")
    common.add_argument("--carbon-source", choices=["uk", "electricity_maps", "csv"])
    common.add_argument("--carbon-api-url", help="base URL of the carbon API")
    common.add_argument("--carbon-zone", help="Electricity Maps zone, e.g. GB")
    common.add_argument("--carbon-csv", help="trace CSV (Time, Carbon Intensity) for --carbon-source csv")
    common.add_argument("--replay-start", help="trace time that maps to now, ISO 8601")
    common.add_argument("--recheck", default="30m", help="longest wait between re-plans")
    common.add_argument("-v", "--verbose", action="store_true")

    parser = argparse.ArgumentParser(prog="python -m training.submit", parents=[common],
                                     description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", parents=[common], help="queue a job and wait for a green slot")
    s.add_argument("--deadline", required=True, help="finish by: 8h from now, or ISO 8601")
    s.add_argument("--duration", default="1h", help="expected run time, e.g. 45m (default 1h)")
    s.add_argument("--threshold", type=float, help="start at once at or below this g/kWh")
    s.add_argument("--interruptible", action="store_true",
                   help="rounds-based job that pauses itself while carbon is high")
    s.add_argument("--working-dir", help="runtime_env working_dir, as in ray job submit")
    s.add_argument("--runtime-env-json", help="runtime_env as JSON")
    s.add_argument("--entrypoint-num-cpus", type=float)
    s.add_argument("--entrypoint-resources", help='JSON, e.g. {"accel": 1}')
    s.add_argument("--metadata-json", help="job metadata as a JSON object of strings")
    s.add_argument("--submission-id", help="stable id; a retry with the same id never submits twice")
    s.add_argument("--no-wait", action="store_true", help="queue only; `run` submits it later")
    s.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- then the job command")
    sub.add_parser("list", parents=[common], help="show queued and submitted jobs")
    c = sub.add_parser("cancel", parents=[common], help="cancel a queued (or stop a submitted) job")
    c.add_argument("submission_id")
    sub.add_parser("run", parents=[common], help="submit every pending job when its slot comes")
    return parser


def _store(args: argparse.Namespace) -> JobStore:
    settings = validated(StoreSettings, state_file=args.state_file, redis_url=args.redis_url)
    if settings.redis_url:
        return RedisJobStore(settings.redis_url)
    return FileJobStore(settings.state_file)


def _json_arg(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object")
    return value


def _submitter(args: argparse.Namespace):
    from training.ray_jobs import RayJobs
    from training.submitter import CarbonAwareSubmitter

    clock = SystemClock()
    carbon = validated(
        CarbonSettings, source=args.carbon_source, api_url=args.carbon_api_url,
        zone=args.carbon_zone, csv_path=args.carbon_csv, replay_start=args.replay_start,
    )
    recheck_s = parse_duration_s(args.recheck, "recheck")
    provider, store = carbon.build(clock), _store(args)
    return CarbonAwareSubmitter(store, RayJobs(args.address), provider, clock=clock,
                                recheck_s=recheck_s)


def _fmt_time(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _cmd_list(args: argparse.Namespace) -> int:
    jobs = _store(args).all()
    print(f"{'SUBMISSION ID':<26} {'STATE':<10} {'DEADLINE':<21} {'PLANNED START':<21} "
          f"{'g/kWh@START':>11}  ENTRYPOINT")
    for j in jobs:
        g = "-" if j.intensity_at_start_g_per_kwh is None else f"{j.intensity_at_start_g_per_kwh:.1f}"
        print(f"{j.submission_id:<26} {j.state:<10} {_fmt_time(j.deadline_s):<21} "
              f"{_fmt_time(j.planned_start_s):<21} {g:>11}  {j.entrypoint}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    entry = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    if not entry:
        raise ConfigError("entrypoint is missing: put the job command after --")
    duration_s = parse_duration_s(args.duration, "duration")
    runtime_env = _json_arg(args.runtime_env_json, "--runtime-env-json") or {}
    if args.working_dir:
        runtime_env["working_dir"] = args.working_dir
    # Everything the user typed is checked before the Ray cluster is contacted.
    deadline_s = parse_deadline_s(args.deadline, SystemClock().now_s())
    resources = _json_arg(args.entrypoint_resources, "--entrypoint-resources")
    metadata = _json_arg(args.metadata_json, "--metadata-json")
    submitter = _submitter(args)
    job = submitter.enqueue(
        shlex.join(entry),
        deadline_s=deadline_s,
        duration_s=duration_s,
        threshold_g_per_kwh=args.threshold,
        submission_id=args.submission_id,
        runtime_env=runtime_env,
        entrypoint_num_cpus=args.entrypoint_num_cpus,
        entrypoint_resources=resources,
        metadata=metadata,
        interruptible=args.interruptible,
    )
    print(job.submission_id)
    if not args.no_wait:
        submitter.run(only={job.submission_id})
        done = submitter.store.get(job.submission_id)
        print(f"{done.submission_id} {done.state} at {_fmt_time(done.submitted_s)} "
              f"({done.intensity_at_start_g_per_kwh} g/kWh)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command may follow global options (`--redis-url URL list`); `submit` is the default,
    # so the short form in the README works. Only words before `--` can be the command.
    head = argv[:argv.index("--")] if "--" in argv else argv
    command = next((a for a in head if a in _COMMANDS), None)
    if command is not None:
        argv.remove(command)
        argv = [command, *argv]
    elif not (head[:1] and head[0] in {"-h", "--help"}):
        argv = ["submit", *argv]
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "list":
            return _cmd_list(args)
        if args.command == "cancel":
            job = _submitter(args).cancel(args.submission_id)
            print(f"{job.submission_id} cancelled")
            return 0
        if args.command == "run":
            _submitter(args).run()
            return 0
        return _cmd_submit(args)
    except (ConfigError, TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; pending jobs stay queued (resume with `run`)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
