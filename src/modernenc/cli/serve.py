"""Serving commands: the prediction service, and checks and exports of its audit trail."""

from __future__ import annotations

import argparse
from pathlib import Path

from modernenc.cli.command import Command
from modernenc.serve.settings import BATCH_WAITS  # plain data: loads no server
from modernenc.utils.precision import PRECISIONS

DEFAULTS = {  # mirrors ServeSettings (not imported here: `modernenc --help` must not load the server)
    "max_wait_ms": 5.0,
    "batch_wait": "adaptive",
    "max_queue_texts": 4096,
    "max_texts_per_request": 256,
    "max_request_bytes": 2_000_000,
    "keep_alive_s": 75,
}


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, help="fine-tuned Hugging Face folder (with tokenizer.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: %(default)s)")
    p.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default="fp32",
        help="precision the model runs in; bf16 and int8 (CPU only) use the thresholds `modernenc "
        "calibrate` recorded for them (default: %(default)s)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="real tokens per packed batch, texts of concurrent requests together (default: 2048 on the "
        "CPU, where bigger batches cost more per text, 8192 on a GPU; at least the model's max_length)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=DEFAULTS["max_wait_ms"],
        help="how long a batch waits for more texts (default: %(default)s)",
    )
    p.add_argument(
        "--batch-wait",
        choices=list(BATCH_WAITS),
        default=DEFAULTS["batch_wait"],
        help="adaptive: a batch waits --max-wait-ms for company only while other requests are in the "
        "server or the last batch held several, so a lone client is not delayed; always: every batch not "
        "yet full waits (default: %(default)s)",
    )
    p.add_argument(
        "--max-queue-texts",
        type=int,
        default=DEFAULTS["max_queue_texts"],
        help="texts waiting for the model; more get 429 with Retry-After (default: %(default)s)",
    )
    p.add_argument(
        "--max-texts-per-request",
        type=int,
        default=DEFAULTS["max_texts_per_request"],
        help="more get 413 (default: %(default)s)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULTS["max_request_bytes"],
        help="larger bodies get 413 (default: %(default)s)",
    )
    p.add_argument(
        "--keep-alive-s",
        type=int,
        default=DEFAULTS["keep_alive_s"],
        help="seconds an idle keep-alive connection stays open; keep it above your clients' and load "
        "balancer's idle timeouts, so they close first (default: %(default)s)",
    )
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="one request per batch, for comparison with batching across requests",
    )
    p.add_argument(
        "--api-keys",
        type=Path,
        default=None,
        help="file of keys, one per line, optionally name:key; requests then need Authorization: Bearer KEY",
    )
    p.add_argument(
        "--audit-db",
        type=Path,
        default=Path("audit.sqlite"),
        help="SQLite audit trail, created if missing (default: %(default)s in the working folder)",
    )
    p.add_argument(
        "--audit-store-text",
        action="store_true",
        help="store each raw text in the audit trail (default: only its SHA-256)",
    )
    p.add_argument("--access-log", action="store_true", help="log every request (method, path, status)")
    p.epilog = (
        "Example: modernenc serve checkpoints/quickstart-finetune-ade/best-hf --api-keys keys.txt\n"
        "  then: curl -H 'Authorization: Bearer KEY' -d '{\"texts\": [\"Rash after amoxicillin.\"]}' "
        "http://127.0.0.1:8000/v1/classify"
    )


def _serve(args: argparse.Namespace) -> None:
    from modernenc.serve.server import run_server
    from modernenc.serve.settings import ServeSettings

    settings = ServeSettings(
        host=args.host,
        port=args.port,
        max_batch_tokens=args.max_batch_tokens,
        max_wait_ms=args.max_wait_ms,
        batch_wait=args.batch_wait,
        max_queue_texts=args.max_queue_texts,
        max_texts_per_request=args.max_texts_per_request,
        max_request_bytes=args.max_request_bytes,
        keep_alive_s=args.keep_alive_s,
        audit_db=args.audit_db,
        audit_store_text=args.audit_store_text,
        batching=not args.no_batching,
        access_log=args.access_log,
    )
    run_server(args.model_dir, settings, dtype=args.dtype, device=args.device, api_keys=args.api_keys)


# ---------------------------------------------------------------------------------------------------------
# modernenc audit verify | export


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", type=Path, help="the audit database (--audit-db of modernenc serve)")


def _verify(args: argparse.Namespace) -> None:
    from modernenc.serve.audit import verify_audit_db

    report = verify_audit_db(args.db)
    print(
        f"{args.db}: ok: integrity check passed; {report.decisions} decisions, {report.reviews} reviews and "
        f"{report.extractions} extractions, every hash chain intact. Chain heads (record them elsewhere to "
        f"pin the trail's length): decisions {report.decisions_head}, reviews {report.reviews_head}, "
        f"extractions {report.extractions_head}"
    )


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", type=Path, help="the audit database (--audit-db of modernenc serve)")
    p.add_argument("--out", type=Path, required=True, help="output file: .csv or .jsonl")
    p.add_argument("--since", default=None, help="only rows from this UTC date or date-time on (ISO 8601)")
    p.add_argument(
        "--table",
        choices=("decisions", "extractions"),
        default="decisions",
        help="decisions (/v1/classify, each with its latest review) or extractions (/v1/extract's spans) "
        "(default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")


def _export(args: argparse.Namespace) -> None:
    from modernenc.serve.audit import export_audit_db

    count = export_audit_db(args.db, args.out, since=args.since, force=args.force, table=args.table)
    what = "decisions with their latest review" if args.table == "decisions" else "extractions"
    print(f"wrote {count} {what} to {args.out}")


AUDIT_ACTIONS = {
    "verify": Command(
        "check SQLite's integrity and every hash chain; name the first broken row", _verify_args, _verify
    ),
    "export": Command(
        "write decisions with their latest review (or extractions) to .csv or .jsonl", _export_args, _export
    ),
}


def _audit_args(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    for name, action in AUDIT_ACTIONS.items():
        action.add_to(actions, name)
    p.epilog = (
        "Example: modernenc audit verify audit.sqlite\n"
        "         modernenc audit export audit.sqlite --out decisions.csv --since 2026-01-01"
    )


def _audit(args: argparse.Namespace) -> None:
    AUDIT_ACTIONS[args.audit_action].run(args)


COMMANDS = {
    "serve": Command(
        "serve a fine-tuned classifier or span tagger over HTTP: batching, limits, API keys, an audit trail",
        _serve_args,
        _serve,
    ),
    "audit": Command("verify or export the audit trail of modernenc serve", _audit_args, _audit),
}
