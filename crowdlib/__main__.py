"""Command-line entry: ``python -m crowdlib ledger [--json] [--chapter NAME]``."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from . import ledger


def _ledger(args: argparse.Namespace) -> int:
    directory = args.dir
    rows = ledger.load_all(directory)
    if args.chapter:
        rows = [r for r in rows if r.chapter == args.chapter]
        if not rows:
            known = sorted({r.chapter for r in ledger.load_all(directory)})
            print(f"no ledger for chapter {args.chapter!r}; chapters: {', '.join(known)}",
                  file=sys.stderr)
            return 2
    if args.json:
        json.dump([r.public() for r in rows], sys.stdout, indent=1, ensure_ascii=False)
        print()
        return 0
    widths = (12, max(len(r.label) for r in rows), 17, 12)
    head = ("chapter", "item", "status", "kind")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  what is checked")
    for r in rows:
        cells = (r.chapter, r.label, r.status, r.kind)
        print("  ".join(c[:w].ljust(w) for c, w in zip(cells, widths)) + "  " + r.statement)
    print()
    table = ledger.counts(rows)
    print("chapter".ljust(12) + "".join(s.rjust(18) for s in ledger.STATUSES) + "rows".rjust(7))
    for c, n in table.items():
        print(c.ljust(12) + "".join(str(n[s]).rjust(18) for s in ledger.STATUSES)
              + str(sum(n.values())).rjust(7))
    total = {s: sum(n[s] for n in table.values()) for s in ledger.STATUSES}
    print("all".ljust(12) + "".join(str(total[s]).rjust(18) for s in ledger.STATUSES)
          + str(sum(total.values())).rjust(7))
    return 0


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `python -m crowdlib ledger | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="python -m crowdlib",
                                     description="crowdlib's command-line entry")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ledger", help="print the reproduction ledger of the book")
    p.add_argument("--json", action="store_true",
                   help="a JSON list of rows with keys " + ", ".join(ledger.JSON_KEYS))
    p.add_argument("--chapter", help="only this chapter (its file stem, e.g. contests)")
    p.add_argument("--dir", default=None, help="the ledger folder (default: the book's ledger/)")
    p.set_defaults(run=_ledger)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
